//! The real `run` loop against librdkafka's in-process mock cluster (a Kafka-protocol broker on
//! 127.0.0.1): what goes in, what comes out, and what is committed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use streamrec::config::Config;
use streamrec::kafka::{produce_messages, Observers, RunReport};
use streamrec::pipeline::Stats;
use streamrec::runtime::run;
use tokio::sync::watch;

use common::{committed, ends_by_reading, read_topic, unique};

const PARTITIONS: i32 = 3;

fn view(user: &str, item: &str, ts: i64, kind: &str) -> (String, Vec<u8>) {
    let json = format!(r#"{{"type":"{kind}","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#);
    (user.to_owned(), json.into_bytes())
}

/// Good events for 20 users, three kinds of bad input, and exact duplicates.
/// Messages as (key, payload).
type Messages = Vec<(String, Vec<u8>)>;
/// Bad payloads and the reason each must be rejected for.
type Expected = BTreeMap<Vec<u8>, &'static str>;

fn inputs() -> (Messages, Expected) {
    let mut messages = Vec::new();
    let base = 1_700_000_000_000i64;
    for step in 0..10i64 {
        for u in 0..20 {
            let item = format!("i{}", (u * 7 + step * 3) % 40);
            let kind = if step == 9 && u % 2 == 0 {
                "purchase"
            } else {
                "view"
            };
            messages.push(view(
                &format!("u{u}"),
                &item,
                base + step * 60_000 + u,
                kind,
            ));
        }
    }
    let duplicates: Vec<_> = messages.iter().step_by(25).cloned().collect();
    messages.extend(duplicates);
    let bad: Expected = [
        (b"not json at all".to_vec(), "not_json"),
        (
            br#"{"type":"view","item_id":"i1","ts":1700000000000}"#.to_vec(),
            "missing_field:user_id",
        ),
        (
            br#"{"type":"teleport","user_id":"u1","item_id":"i1","ts":1700000000000}"#.to_vec(),
            "bad_type",
        ),
        (
            br#"{"type":"view","user_id":"u1","item_id":"i1","ts":1700000000000,"price":-3}"#
                .to_vec(),
            "bad_price",
        ),
    ]
    .into_iter()
    .collect();
    for payload in bad.keys() {
        messages.insert(messages.len() / 2, ("u1".to_owned(), payload.clone()));
    }
    (messages, bad)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_recommendations_and_dead_letters_out_offsets_committed() {
    scenario(1).await;
}

/// The same promises with a worker per partition sharing the item model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_holds_with_several_workers() {
    scenario(3).await;
}

/// A config on the cluster with fresh topics (3 partitions each); returns it and the input topic.
fn fresh_setup(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> (Config, String) {
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.group_id = unique("group");
    config.kafka.session_timeout_ms = 6_000;
    config.kafka.input_topics = vec![unique("events")];
    config.kafka.recommendations_topic = unique("recs");
    config.kafka.similar_items_topic = unique("similar");
    config.kafka.dead_letter_topic = unique("dead");
    let input = config.kafka.input_topics[0].clone();
    for topic in [
        &input,
        &config.kafka.recommendations_topic,
        &config.kafka.similar_items_topic,
        &config.kafka.dead_letter_topic,
    ] {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    (config, input)
}

/// Runs the pipeline until it has consumed `total` inputs (within a minute).
async fn run_until_consumed(config: &Config, total: u64) -> RunReport {
    let (progress_tx, mut progress) = watch::channel(Stats::default());
    let until_consumed = async move {
        while progress.borrow_and_update().consumed < total {
            progress.changed().await.unwrap();
        }
    };
    let observers = Observers {
        progress: Some(progress_tx),
        ..Observers::default()
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        run(config, until_consumed, observers),
    )
    .await
    .expect("the pipeline finishes")
    .expect("the pipeline succeeds")
}

async fn scenario(workers: usize) {
    let cluster = MockCluster::new(1).unwrap();
    let (mut config, input) = fresh_setup(&cluster);
    config.pipeline.workers = workers;
    config.pipeline.min_update_interval_ms = 200;
    let (messages, bad) = inputs();
    produce_messages(&config.kafka, &input, &messages, false, None)
        .await
        .unwrap();

    let total = messages.len() as u64;
    let report = run_until_consumed(&config, total).await;
    let stats = report.stats();
    assert_eq!(stats.consumed, total);
    assert_eq!(stats.duplicates, 8);
    assert_eq!(stats.applied, 200);
    assert_eq!(stats.rejected_total(), 4);
    assert_eq!(
        stats.not_keyed_by_user, 0,
        "every input is keyed by its user"
    );

    let brokers = config.kafka.brokers.clone();
    let quiet = Duration::from_secs(3);
    let dead = read_topic(
        &brokers,
        &config.kafka.dead_letter_topic,
        PARTITIONS,
        bad.len(),
        quiet,
    );
    assert_eq!(dead.len(), bad.len(), "exactly the injected bad inputs");
    for letter in &dead {
        let expected = bad.get(&letter.payload).expect("original bytes unchanged");
        assert_eq!(letter.headers["streamrec-reason"], *expected);
        let detail = &letter.headers["streamrec-detail"];
        assert!(!detail.is_empty() && detail.len() <= 512, "{detail:?}");
        assert_eq!(letter.headers["source-topic"], input);
        assert!(letter.headers["source-offset"].parse::<i64>().is_ok());
    }

    let recs = read_topic(
        &brokers,
        &config.kafka.recommendations_topic,
        PARTITIONS,
        usize::MAX,
        quiet,
    );
    let users: BTreeSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(users.len(), 20, "every user got an update");
    let purchases: BTreeSet<(String, String)> = (0..20)
        .filter(|u| u % 2 == 0)
        .map(|u| (format!("u{u}"), format!("i{}", (u * 7 + 27) % 40)))
        .collect();
    let last_update: BTreeMap<&str, serde_json::Value> =
        recs.iter().map(|r| (r.key.as_str(), r.json())).collect();
    for (user, update) in &last_update {
        assert_eq!(update["schema"], "streamrec.recommendations.v1");
        assert_eq!(update["user_id"], *user);
        for item in update["items"].as_array().unwrap() {
            let pair = (
                user.to_string(),
                item["item_id"].as_str().unwrap().to_owned(),
            );
            assert!(
                !purchases.contains(&pair),
                "{user} already bought {}",
                pair.1
            );
            assert!(!item["sources"].as_array().unwrap().is_empty());
        }
    }

    let ends = ends_by_reading(&brokers, &input, PARTITIONS, messages.len());
    let commits = committed(&brokers, &config.kafka.group_id, &input, PARTITIONS);
    assert_eq!(
        commits, ends,
        "committed offsets reach the end of the input"
    );
    drop(cluster);
}

/// A shop's own field and type names, set in the config, are read on the input topics (one of
/// them inside a nested object); a dead letter about a renamed field names the shop's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_a_shops_own_names_are_learned() {
    let cluster = MockCluster::new(1).unwrap();
    let (mut config, input) = fresh_setup(&cluster);
    config.pipeline.min_update_interval_ms = 0;
    let clean = &mut config.engine.clean;
    for (field, name) in [
        ("type", "eventType"),
        ("user_id", "userId"),
        ("item_id", "properties.sku"),
    ] {
        clean.field_names.insert(field.into(), name.into());
    }
    clean
        .event_types
        .insert("product_viewed".into(), "view".into());
    let mut messages: Messages = (0..6)
        .map(|i| {
            let (user, item, ts) = (i % 2, i % 3, 1_700_000_000_000i64 + i);
            let json = format!(
                r#"{{"eventType":"product_viewed","userId":"u{user}","properties":{{"sku":"i{item}"}},"ts":{ts}}}"#
            );
            (format!("u{user}"), json.into_bytes())
        })
        .collect();
    let nameless =
        br#"{"eventType":"product_viewed","properties":{"sku":"i1"},"ts":1700000000009}"#;
    messages.push(("u0".to_owned(), nameless.to_vec()));
    produce_messages(&config.kafka, &input, &messages, false, None)
        .await
        .unwrap();
    let report = run_until_consumed(&config, messages.len() as u64).await;
    assert_eq!(report.stats().applied, 6, "every named event is learned");
    assert_eq!(report.stats().rejected_total(), 1);
    let brokers = &config.kafka.brokers;
    let quiet = Duration::from_secs(3);
    let dead = read_topic(
        brokers,
        &config.kafka.dead_letter_topic,
        PARTITIONS,
        1,
        quiet,
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["streamrec-reason"], "missing_field:user_id");
    assert!(dead[0].headers["streamrec-detail"].contains("\"userId\""));
    let recs = read_topic(
        brokers,
        &config.kafka.recommendations_topic,
        PARTITIONS,
        usize::MAX,
        quiet,
    );
    let users: BTreeSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(users, BTreeSet::from(["u0", "u1"]));
    drop(cluster);
}

/// A delivery the broker refuses for good stops the run with the error, and no offset is
/// committed past the message whose output was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_delivery_stops_the_run_without_committing_past_it() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let (config, input) = fresh_setup(&cluster);
    let (messages, _) = inputs();
    produce_messages(&config.kafka, &input, &messages, false, None)
        .await
        .unwrap();
    // From now on every produce request is refused as not authorised: not retriable.
    let refusals = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 10_000];
    cluster.request_errors(RDKafkaApiKey::Produce, &refusals);

    let never = std::future::pending::<()>();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        run(&config, never, Observers::default()),
    )
    .await
    .expect("the run stops by itself");
    let err = outcome.err().expect("the run fails");
    eprintln!("run failed as expected: {err}");
    assert!(err.to_string().contains("delivery to"), "{err}");
    assert!(
        err.to_string()
            .contains("stopping without committing past it"),
        "{err}"
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let commits = committed(
        &config.kafka.brokers,
        &config.kafka.group_id,
        &input,
        PARTITIONS,
    );
    assert!(
        commits.iter().all(|&c| c < 0),
        "nothing committed: {commits:?}"
    );
}

/// `GET path` on the admin listener: (status code, body), or None while nothing listens.
async fn get(address: &str, path: &str) -> Option<(u16, String)> {
    let (address, path) = (address.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || common::http::get(&address, &path, None))
        .await
        .unwrap()
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_readiness_follows_the_assignment() {
    let cluster = MockCluster::new(1).unwrap();
    let (mut config, input) = fresh_setup(&cluster);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    config.admin.listen = address.clone();
    config
        .kafka
        .librdkafka
        .insert("statistics.interval.ms".into(), "300".into());
    config.engine.max_items = 1_000;
    let (mut messages, bad) = inputs();
    // Three events keyed by a session rather than by their user.
    for n in 0..3 {
        let (_, payload) = view(&format!("u{n}"), "i1", 1_700_003_600_000 + n, "view");
        messages.push((format!("session-{n}"), payload));
    }
    produce_messages(&config.kafka, &input, &messages, false, None)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let config = config.clone();
        tokio::spawn(async move {
            run(
                &config,
                async { stopped.await.unwrap_or(()) },
                Observers::default(),
            )
            .await
        })
    };

    // Not ready until the group assigns partitions (the mock cluster waits ~3 s), then ready.
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    while statuses.last() != Some(&200) {
        assert!(started.elapsed() < Duration::from_secs(30), "{statuses:?}");
        if let Some((status, _)) = get(&address, "/readyz").await {
            if statuses.last() != Some(&status) {
                statuses.push(status);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(statuses, [503, 200], "not ready, then ready");
    assert_eq!(get(&address, "/healthz").await.unwrap().0, 200);

    // The counters reach exactly what was produced.
    let total = messages.len() as f64;
    let text = loop {
        let (_, text) = get(&address, "/metrics").await.unwrap();
        if sample(&text, "streamrec_events_consumed_total") == Some(total) {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&text, "streamrec_events_applied_total"), Some(203.0));
    assert_eq!(sample(&text, "streamrec_events_duplicate_total"), Some(8.0));
    assert_eq!(
        sample(&text, "streamrec_inputs_not_keyed_by_user_total"),
        Some(3.0)
    );
    // Ten users bought an item once each: purchases, and no re-buy.
    assert_eq!(
        sample(&text, "streamrec_purchases_learned_total"),
        Some(10.0)
    );
    assert_eq!(sample(&text, "streamrec_rebuys_learned_total"), Some(0.0));
    for reason in bad.values() {
        let series = format!("streamrec_events_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in\n{text}");
    }
    let dead = format!(
        "streamrec_outputs_published_total{{topic=\"{}\"}}",
        config.kafka.dead_letter_topic
    );
    assert_eq!(sample(&text, &dead), Some(bad.len() as f64));
    assert_eq!(sample(&text, "streamrec_assigned_partitions"), Some(3.0));
    assert_eq!(sample(&text, "streamrec_max_items"), Some(1_000.0));
    assert!(text.contains("# TYPE streamrec_event_to_output_seconds histogram"));

    // Lag per partition comes from librdkafka's statistics: zero once everything is consumed;
    // the producer's queue empties once every output is acknowledged.
    let lag = |text: &str, partition: i32| {
        sample(
            text,
            &format!("streamrec_consumer_lag{{topic=\"{input}\",partition=\"{partition}\"}}"),
        )
    };
    loop {
        let (_, text) = get(&address, "/metrics").await.unwrap();
        let queued = sample(&text, "streamrec_producer_queue_messages");
        if (0..PARTITIONS).all(|p| lag(&text, p) == Some(0.0)) && queued == Some(0.0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    drop(cluster);
}
