//! The query API over the wire: `run` on librdkafka's mock cluster with `query.listen` on port
//! 0, asked with plain HTTP/1.1. Every answer is validated against `docs/openapi.json`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use streamrec::catalog::CatalogItem;
use streamrec::config::Config;
use streamrec::kafka::produce_messages;
use streamrec::query::partitioner::Partitioner;
use streamrec::query::server::ROUTES;

use common::http::{encode, Answer};
use common::instance::{both_hold_partitions, Instance};
use common::{fresh_config, read_topic, unique};

const PARTITIONS: i32 = 3;
const ITEMS: usize = 40;

/// The OpenAPI document, with a validator per component schema.
struct Contract {
    doc: serde_json::Value,
}

impl Contract {
    fn load() -> Contract {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let doc = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        Contract { doc }
    }

    /// The schema an operation documents for a status, checked against the answer's body.
    fn check(&self, method: &str, route: &str, answer: &Answer) {
        let operation = &self.doc["paths"][route][method];
        let status = answer.status.to_string();
        let content = &operation["responses"][&status]["content"]["application/json"];
        assert!(
            content.is_object(),
            "{method} {route} documents no {status} answer; got {}",
            answer.body
        );
        let mut root = self.doc.clone();
        root["$ref"] = content["schema"]["$ref"].clone();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap();
        let body = answer.json();
        if let Err(err) = validator.validate(&body) {
            panic!("{method} {route} {status}: {err}\n{body}");
        }
    }
}

/// A listing per item: category `c{i % 4}`, price `10 × i`.
fn catalog() -> Vec<(String, Vec<u8>)> {
    (0..ITEMS)
        .map(|i| {
            let item = CatalogItem {
                item_id: format!("i{i}"),
                category: format!("c{}", i % 4),
                price: 10.0 * i as f64,
                in_stock: true,
                brand: None,
                tags: Vec::new(),
                updated_at_ms: 1,
            };
            (item.item_id.clone(), item.to_json().into_bytes())
        })
        .collect()
}

fn events(step_from: i64, steps: i64) -> Vec<(String, Vec<u8>)> {
    let base = 1_700_000_000_000i64;
    let mut messages = Vec::new();
    for step in step_from..step_from + steps {
        for u in 0..20i64 {
            let item = format!("i{}", (u * 7 + step * 3) % ITEMS as i64);
            let kind = if step % 9 == 8 { "purchase" } else { "view" };
            let ts = base + step * 60_000 + u;
            let json =
                format!(r#"{{"type":"{kind}","user_id":"u{u}","item_id":"{item}","ts":{ts}}}"#);
            messages.push((format!("u{u}"), json.into_bytes()));
        }
    }
    messages
}

fn setup(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> Config {
    setup_on(cluster.bootstrap_servers(), |topic, partitions| {
        cluster.create_topic(topic, partitions, 1).unwrap()
    })
}

/// A config on `brokers` with fresh topics, made by `create(name, partitions)`.
fn setup_on(brokers: String, create: impl Fn(&str, i32)) -> Config {
    let mut config = fresh_config(brokers);
    config.kafka.catalog_topic = unique("catalog");
    config.pipeline.min_update_interval_ms = 0;
    config.query.listen = "127.0.0.1:0".into();
    let kafka = &config.kafka;
    for topic in [
        &kafka.input_topics[0],
        &kafka.catalog_topic,
        &kafka.recommendations_topic,
        &kafka.similar_items_topic,
        &kafka.dead_letter_topic,
        &kafka.triggers_topic,
    ] {
        create(topic, PARTITIONS);
    }
    config
}

const TOKEN: &str = "s3cret-token";
const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-token");

/// The last update the recommendations topic holds for each user (read until quiet).
fn published(config: &Config) -> BTreeMap<String, serde_json::Value> {
    let brokers = &config.kafka.brokers;
    let topic = &config.kafka.recommendations_topic;
    let records = read_topic(
        brokers,
        topic,
        PARTITIONS,
        usize::MAX,
        Duration::from_secs(3),
    );
    records
        .into_iter()
        .map(|r| (r.key.clone(), r.json()))
        .collect()
}

fn item_ids(items: &serde_json::Value) -> Vec<String> {
    let items = items.as_array().unwrap();
    items
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

fn index(item: &str) -> usize {
    item.trim_start_matches('i').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_from_live_state_with_filters_and_refuse_bad_requests_by_name() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = setup(&cluster);
    config.query.token = TOKEN.into();
    let contract = Contract::load();
    let (user_route, session_route, similar_route) = (ROUTES[0].1, ROUTES[1].1, ROUTES[2].1);
    let mut instance = Instance::start(&config).await;
    // The catalog first: listings arriving after a user's last event would change its ranking
    // after its last update was published.
    let listings = catalog();
    produce_messages(
        &config.kafka,
        &config.kafka.catalog_topic,
        &listings,
        false,
        None,
    )
    .await
    .unwrap();
    instance.consumed(listings.len() as u64).await;
    let first = events(0, 10);
    produce_messages(
        &config.kafka,
        &config.kafka.input_topics[0],
        &first,
        false,
        None,
    )
    .await
    .unwrap();
    instance
        .consumed((listings.len() + first.len()) as u64)
        .await;

    // Every user is known here.
    let updates = published(&config);
    assert_eq!(updates.len(), 20);
    for user in updates.keys() {
        let answer = instance
            .get(&format!("/v1/users/{user}/recommendations"), &[AUTH])
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        contract.check("get", user_route, &answer);
        let json = answer.json();
        assert_eq!(json["known_user"], true);
        assert_eq!(
            answer.header("streamrec-degraded"),
            None,
            "one instance holds every partition"
        );
    }

    // Filters and exclusions hold.
    let user = "/v1/users/u3/recommendations";
    let filtered = [
        (
            "?category=c1&n=20",
            Box::new(|i: usize| i % 4 == 1) as Box<dyn Fn(usize) -> bool>,
        ),
        (
            "?min_price=50&max_price=150&n=20",
            Box::new(|i| (5..=15).contains(&i)),
        ),
    ];
    for (query, holds) in filtered {
        let answer = instance.get(&format!("{user}{query}"), &[AUTH]).await;
        contract.check("get", user_route, &answer);
        let items = item_ids(&answer.json()["items"]);
        assert!(!items.is_empty(), "{query}");
        assert!(items.iter().all(|i| holds(index(i))), "{query}: {items:?}");
    }
    let plain = item_ids(&instance.get(user, &[AUTH]).await.json()["items"]);
    let excluded = format!("{user}?exclude={},{}&n=3", plain[0], plain[1]);
    let items = item_ids(&instance.get(&excluded, &[AUTH]).await.json()["items"]);
    assert_eq!(items.len(), 3);
    assert!(
        !items.contains(&plain[0]) && !items.contains(&plain[1]),
        "{items:?}"
    );
    let context = format!("{user}?context_item=i39");
    let items = item_ids(&instance.get(&context, &[AUTH]).await.json()["items"]);
    assert!(
        !items.contains(&"i39".to_string()),
        "the page's item is not offered"
    );
    let nothing = instance
        .get(&format!("{user}?category=garden"), &[AUTH])
        .await;
    assert_eq!(
        (nothing.status, nothing.json()["items"].clone()),
        (200, serde_json::json!([]))
    );

    // A stranger gets trending items; a session without an id its items' neighbours.
    let stranger = instance
        .get("/v1/users/nobody/recommendations", &[AUTH])
        .await;
    contract.check("get", user_route, &stranger);
    assert_eq!(stranger.json()["known_user"], false);
    assert!(!item_ids(&stranger.json()["items"]).is_empty());
    let body = br#"{"items":["i1","i8","unknown"],"n":5}"#.to_vec();
    let session = instance.call("POST", session_route, &[AUTH], body).await;
    assert_eq!(session.status, 200, "{}", session.body);
    contract.check("post", session_route, &session);
    let items = item_ids(&session.json()["items"]);
    assert!(
        !items.is_empty() && !items.contains(&"i1".to_string()),
        "{items:?}"
    );
    assert_eq!(session.json()["unknown_items"], 1);
    let similar = instance.get("/v1/items/i1/similar?n=5", &[AUTH]).await;
    contract.check("get", similar_route, &similar);
    assert!(!similar.json()["neighbors"].as_array().unwrap().is_empty());
    let unknown = instance.get("/v1/items/nope/similar", &[AUTH]).await;
    assert_eq!(
        (unknown.status, unknown.json()["error"].as_str()),
        (404, Some("unknown_item"))
    );
    contract.check("get", similar_route, &unknown);

    // Bad requests: a 4xx with a reason each, and ingestion goes on.
    let bad = [
        (format!("{user}?n=abc"), Some("n"), 400),
        (format!("{user}?n=100000"), Some("n"), 400),
        (format!("{user}?colour=red"), Some("colour"), 400),
        (
            format!("{user}?min_price=9&max_price=1"),
            Some("max_price"),
            400,
        ),
        (
            format!("/v1/users/{}/recommendations", encode(&"x".repeat(200))),
            Some("user_id"),
            400,
        ),
        ("/v1/users/%FF/recommendations".to_string(), None, 400),
    ];
    for (path, parameter, status) in bad {
        let answer = instance.get(&path, &[AUTH]).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert_eq!(answer.json()["parameter"].as_str(), parameter, "{path}");
        contract.check("get", user_route, &answer);
    }
    let huge = format!(r#"{{"items":["{}"]}}"#, "i".repeat(20_000)).into_bytes();
    let too_large = instance.call("POST", session_route, &[AUTH], huge).await;
    assert_eq!(too_large.status, 413, "{}", too_large.body);
    contract.check("post", session_route, &too_large);
    let malformed = instance
        .call("POST", session_route, &[AUTH], b"{\"items\":".to_vec())
        .await;
    assert_eq!(
        (malformed.status, malformed.json()["parameter"].as_str()),
        (400, Some("body"))
    );
    let nowhere = instance.get("/v1/users", &[AUTH]).await;
    assert_eq!(
        (nowhere.status, nowhere.json()["error"].as_str()),
        (404, Some("not_found"))
    );
    let wrong_method = instance.call("DELETE", user, &[AUTH], Vec::new()).await;
    assert_eq!(wrong_method.status, 405);
    let no_token = instance.get(user, &[]).await;
    assert_eq!(no_token.status, 401);
    contract.check("get", user_route, &no_token);
    let wrong_token = instance
        .get(user, &[("Authorization", "Bearer guess")])
        .await;
    assert_eq!(wrong_token.status, 401);

    // Read your writes: after u19's next events (and no other), its answer is the update
    // they published, from the same state.
    let more: Vec<_> = events(10, 2)
        .into_iter()
        .filter(|(user, _)| user == "u19")
        .collect();
    let before = instance
        .get("/v1/users/u19/recommendations", &[AUTH])
        .await
        .json();
    produce_messages(
        &config.kafka,
        &config.kafka.input_topics[0],
        &more,
        false,
        None,
    )
    .await
    .unwrap();
    let total = listings.len() + first.len() + more.len();
    instance.consumed(total as u64).await;
    let updates = published(&config);
    let last = instance
        .get("/v1/users/u19/recommendations", &[AUTH])
        .await
        .json();
    assert_eq!(last["items"], updates["u19"]["items"]);
    assert_ne!(
        last["items"], before["items"],
        "the new events changed the list"
    );
    instance.stop().await;
    drop(cluster);
}

/// With two instances in a group, each answers for every user and says so when another
/// instance holds the user's partition. Our CRC-32 partitioner agrees with librdkafka's,
/// which placed every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_for_a_user_another_instance_holds_is_marked_degraded() {
    let cluster = MockCluster::new(1).unwrap();
    let config = setup(&cluster);
    let messages = events(0, 3);
    let topic = &config.kafka.input_topics[0];
    produce_messages(&config.kafka, topic, &messages, false, None)
        .await
        .unwrap();
    let placed = read_topic(
        &config.kafka.brokers,
        topic,
        PARTITIONS,
        messages.len(),
        Duration::from_secs(3),
    );
    for record in &placed {
        let ours = Partitioner::Crc32.partition(record.key.as_bytes(), PARTITIONS);
        assert_eq!(ours, record.partition, "key {}", record.key);
    }
    let mut second = config.clone();
    second.query.listen = "127.0.0.1:0".into();
    let first = Instance::start(&config).await;
    let other = Instance::start(&second).await;
    both_hold_partitions(&first, &other, topic, PARTITIONS).await;
    for u in 0..20 {
        let user = format!("u{u}");
        let partition = Partitioner::Crc32.partition(user.as_bytes(), PARTITIONS);
        let held = first.health.holds(topic, partition);
        let answer = first
            .get(&format!("/v1/users/{user}/recommendations"), &[])
            .await;
        assert_eq!(answer.status, 200);
        let degraded = answer.header("streamrec-degraded");
        assert_eq!(
            degraded,
            (!held).then_some("not-owner"),
            "{user} on partition {partition}"
        );
    }
    first.stop().await;
    other.stop().await;
    drop(cluster);
}

/// One view by each of `users` users `v0…`, for a changelog long enough to take a while to
/// restore.
fn views_by_many(users: usize) -> Vec<(String, Vec<u8>)> {
    (0..users)
        .map(|u| {
            let (user, ts) = (format!("v{u}"), 1_700_000_000_000i64 + u as i64);
            let item = format!("i{}", u % ITEMS);
            let json =
                format!(r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#);
            (user, json.into_bytes())
        })
        .collect()
}

/// A partition that moves to an instance with an empty state dir is restored from the
/// changelog before its events flow; a user's query meanwhile is answered (200) and marked
/// `restoring`, and once restored it is answered unmarked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_during_a_partition_restore_is_marked_degraded() {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let mut config = setup(&cluster);
    config.kafka.changelog_topic = unique("changelog");
    cluster
        .create_topic(&config.kafka.changelog_topic, PARTITIONS, 1)
        .unwrap();
    config.state.dir = dirs.path().join("a").display().to_string();
    let messages = views_by_many(20_000);
    let topic = &config.kafka.input_topics[0];
    produce_messages(&config.kafka, topic, &messages, false, None)
        .await
        .unwrap();
    let mut first = Instance::start(&config).await;
    first.consumed(messages.len() as u64).await;
    first.stop().await;

    let mut fresh = config.clone();
    fresh.state.dir = dirs.path().join("b").display().to_string();
    let second = Instance::start(&fresh).await;
    let mut marks = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let answer = second.get("/v1/users/v1/recommendations", &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let degraded = answer.header("streamrec-degraded").map(str::to_owned);
        if marks.last() != Some(&degraded) {
            marks.push(degraded.clone());
        }
        if degraded.is_none() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "restored in time; marks {marks:?}"
        );
    }
    assert!(
        marks.contains(&Some("restoring".to_owned())),
        "answers during the restore are marked: {marks:?}"
    );
    second.stop().await;
    drop(cluster);
}

/// With `query.members_topic`, each instance announces the partitions it holds, and a user's
/// query reaching the instance that does not hold the user is redirected to the one that does,
/// which knows the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_of_another_instance_is_redirected_to_it() {
    let cluster = MockCluster::new(1).unwrap();
    let config = setup(&cluster);
    let members = unique("members");
    cluster.create_topic(&members, 1, 1).unwrap();
    redirect_scenario(config, members).await;
    drop(cluster);
}

/// The same on the Tansu broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
async fn a_user_of_another_instance_is_redirected_to_it_on_tansu() {
    let broker = common::tansu::Broker::start();
    let config = setup_on(broker.address.clone(), |topic, partitions| {
        broker.create_topic_with(topic, partitions)
    });
    let members = unique("members");
    broker.create_topic_with(&members, 1);
    redirect_scenario(config, members).await;
    drop(broker);
}

async fn redirect_scenario(mut config: Config, members: String) {
    config.query.members_topic = members;
    config.kafka.instance_id = "a".into();
    let mut second = config.clone();
    second.kafka.instance_id = "b".into();
    let topic = config.kafka.input_topics[0].clone();
    let first = Instance::start(&config).await;
    let mut other = Instance::start(&second).await;
    both_hold_partitions(&first, &other, &topic, PARTITIONS).await;
    let messages = events(0, 3);
    produce_messages(&config.kafka, &topic, &messages, false, None)
        .await
        .unwrap();
    let b_users = (0..20).filter(|u| {
        let partition = Partitioner::Crc32.partition(format!("u{u}").as_bytes(), PARTITIONS);
        other.health.holds(&topic, partition)
    });
    let b_events = 3 * b_users.count() as u64;
    other.consumed(b_events).await;
    let contract = Contract::load();
    // The announcements travel through the topic: wait until a's routing knows b's partitions.
    let mut redirected = 0;
    for u in 0..20 {
        let user = format!("u{u}");
        let path = format!("/v1/users/{user}/recommendations?n=3");
        let partition = Partitioner::Crc32.partition(user.as_bytes(), PARTITIONS);
        let mut answer = first.get(&path, &[]).await;
        if first.health.holds(&topic, partition) {
            assert_eq!(answer.status, 200, "{user}: {}", answer.body);
            continue;
        }
        let started = std::time::Instant::now();
        while answer.status != 307 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = first.get(&path, &[]).await;
        }
        let location = answer
            .header("location")
            .expect("a 307 names the owner")
            .to_owned();
        assert_eq!(
            location,
            format!("http://{}{path}", other.address),
            "{user}"
        );
        let owned = other.get(&path, &[]).await;
        assert_eq!(owned.status, 200);
        contract.check("get", ROUTES[0].1, &owned);
        assert_eq!(
            owned.json()["known_user"],
            true,
            "{user} is known where it is held"
        );
        assert_eq!(owned.header("streamrec-degraded"), None);
        redirected += 1;
    }
    assert!(redirected > 0, "b holds some users");
    first.stop().await;
    other.stop().await;
}
