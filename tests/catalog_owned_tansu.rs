//! The catalog with item-owned scale-out, on a real broker (Tansu) with two `run` processes:
//! every instance follows the whole catalog into its read model, so an item going out of stock
//! leaves the next update of every user, whichever instance holds the user; and a price drop
//! fires one trigger for each user who viewed the item, from the instance holding that user
//! (each keeps its own users' views). `#[ignore]`d without a broker; `.ci/run` runs it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use streamrec::config::Config;
use streamrec::kafka::produce_messages;

use common::http::metric;
use common::schemas::Output;
use common::tansu::{free_port, logs_end, start_logged, terminate, Broker};
use common::{fresh_config, read_topic, unique, wait_until, Read};

const T0: i64 = 1_700_000_000_000;
const USERS: usize = 12;
const PARTITIONS: i32 = 3;
const ITEM_PARTITIONS: i32 = 4;
const WAIT: Duration = Duration::from_secs(90);

const PRICE_DROP: &str = "[[rule]]\nname = \"drop\"\nkind = \"price_drop\"\nmin_drop_pct = 10.0\nwatch_ms = 3600000\ncooldown_ms = 1000\n";

fn owned_config(broker: &Broker, rules: &Path) -> Config {
    let mut config = fresh_config(broker.address.clone());
    config.kafka.catalog_topic = unique("catalog");
    config.items.work_topic = unique("work");
    config.items.records_topic = unique("records");
    config.items.work_interval_ms = 50;
    config.items.publish_interval_ms = 200;
    config.pipeline.min_update_interval_ms = 0;
    config.triggers.file = rules.display().to_string();
    config
}

fn create_topics(broker: &Broker, config: &Config) {
    let kafka = &config.kafka;
    for topic in [&kafka.input_topics[0], &kafka.catalog_topic] {
        broker.create_topic_with(topic, PARTITIONS);
    }
    for topic in kafka.output_topics() {
        broker.create_topic_with(topic, 1);
    }
    for topic in [&config.items.work_topic, &config.items.records_topic] {
        broker.create_topic_with(topic, ITEM_PARTITIONS);
    }
}

fn listing(item: &str, price: f64, in_stock: bool, updated_at: i64) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"schema":"streamrec.item.v1","item_id":"{item}","category":"c","price":{price},"in_stock":{in_stock},"updated_at":{updated_at}}}"#
    );
    (item.to_owned(), json.into_bytes())
}

fn views(item: &str, ts: i64) -> Vec<(String, Vec<u8>)> {
    (0..USERS)
        .map(|n| {
            let user = format!("u{n}");
            let json = format!(
                r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":{}}}"#,
                ts + n as i64
            );
            (user, json.into_bytes())
        })
        .collect()
}

fn produce(config: &Config, topic: &str, messages: &[(String, Vec<u8>)]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = produce_messages(&config.kafka, topic, messages, false, None);
    runtime.block_on(produced).unwrap();
}

/// Waits until every member's catalog follower has applied `listings`.
fn wait_followed(admins: &[String], listings: u64) {
    wait_until(
        &format!("{listings} listings followed by each member"),
        WAIT,
        || {
            admins.iter().all(|admin| {
                metric(admin, "streamrec_catalog_listings_followed_total") >= Some(listings)
            })
        },
    );
}

/// Each user's last recommendation (the output topic has one partition: offsets are order).
fn last_by_user(records: &[Read]) -> BTreeMap<String, serde_json::Value> {
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| r.offset);
    (sorted.into_iter())
        .map(|r| (r.key.clone(), r.json()))
        .collect()
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn every_instance_follows_the_catalog_and_fires_for_its_own_users() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("triggers.toml");
    std::fs::write(&rules, PRICE_DROP).unwrap();
    let config = owned_config(&broker, &rules);
    create_topics(&broker, &config);
    let catalog = config.kafka.catalog_topic.clone();
    produce(
        &config,
        &catalog,
        &["a", "x", "b"].map(|item| listing(item, 10.0, true, 1)),
    );

    let mut members: Vec<Child> = Vec::new();
    let (mut admins, mut logs) = (Vec::new(), Vec::new());
    for index in 0..2 {
        let mut member = config.clone();
        member.kafka.instance_id = format!("member-{index}");
        member.admin.listen = format!("127.0.0.1:{}", free_port());
        let path = dir.path().join(format!("member-{index}.toml"));
        std::fs::write(&path, toml::to_string(&member).unwrap()).unwrap();
        let log = dir.path().join(format!("member-{index}.log"));
        members.push(start_logged(&path, &log));
        admins.push(member.admin.listen);
        logs.push(log);
    }
    wait_until("both members holding input partitions", WAIT, || {
        admins
            .iter()
            .all(|a| metric(a, "streamrec_assigned_partitions").unwrap_or(0) > 0)
    });
    wait_followed(&admins, 3);

    // Every user views a, then x: both instances hold users who watch x.
    let first: Vec<(String, Vec<u8>)> = [views("a", T0), views("x", T0 + 1_000)].concat();
    let input = config.kafka.input_topics[0].clone();
    produce(&config, &input, &first);
    let recs = &config.kafka.recommendations_topic;
    let phase_one = read_topic(
        &config.kafka.brokers,
        recs,
        1,
        first.len(),
        Duration::from_secs(60),
    );
    assert_eq!(
        phase_one.len(),
        first.len(),
        "one update per event; the members' logs end:\n{}",
        logs_end(&logs)
    );

    // x's price halves: one trigger per user, whichever instance holds the user and whichever
    // consumes x's catalog partition.
    produce(&config, &catalog, &[listing("x", 5.0, true, 2)]);
    let triggers = &config.kafka.triggers_topic;
    let fired = read_topic(
        &config.kafka.brokers,
        triggers,
        1,
        USERS,
        Duration::from_secs(30),
    );
    let users: BTreeSet<String> = fired.iter().map(|t| t.key.clone()).collect();
    let expected: BTreeSet<String> = (0..USERS).map(|n| format!("u{n}")).collect();
    assert_eq!(
        users, expected,
        "a price drop trigger for every watcher of x"
    );
    assert_eq!(fired.len(), USERS, "one each");
    for trigger in &fired {
        let json = trigger.json();
        assert_eq!(
            (json["rule"].as_str(), json["items"][0].as_str()),
            (Some("drop"), Some("x"))
        );
    }

    // x goes out of stock; once both members hold that, every user acts again.
    produce(&config, &catalog, &[listing("x", 5.0, false, 3)]);
    wait_followed(&admins, 5);
    let second = views("b", T0 + 120_000);
    produce(&config, &input, &second);
    let total = first.len() + second.len();
    let all = read_topic(
        &config.kafka.brokers,
        recs,
        1,
        total,
        Duration::from_secs(60),
    );
    let printed: Vec<String> = members.into_iter().map(terminate).collect();
    assert_eq!(all.len(), total, "{printed:?}");
    for (user, last) in last_by_user(&all) {
        let items = common::recommended_items(&last);
        assert!(
            !items.contains(&"x".to_owned()),
            "{user}'s next update still has x: {items:?}"
        );
    }
    let checked = common::schemas::validate_topics(
        &config.kafka.brokers,
        &[
            (recs, Output::Recommendations),
            (triggers, Output::Triggers),
        ],
    );
    assert!(
        checked >= total + USERS,
        "every output validated: {checked}"
    );
}
