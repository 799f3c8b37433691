//! The catalog and campaign triggers end to end on a real broker (Tansu) with a real `streamrec
//! run`: listings loaded with `streamrec catalog load`, an item going out of stock (a listing
//! in the shop's own field names) disappears from the next update of every user who had it,
//! and triggers arrive once per trigger_id.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::schemas::Output;
use common::tansu::{streamrec, terminate, Broker, PARTITIONS};
use common::{committed, read_topic, unique, Read};

const T0: i64 = 1_700_000_000_000;
const USERS: usize = 6;

fn send(brokers: &str, topic: &str, messages: &[(String, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, payload) in messages {
        producer
            .send(BaseRecord::to(topic).key(key).payload(payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn event(kind: &str, user: &str, item: &str, ts: i64) -> (String, String) {
    let json = format!(r#"{{"type":"{kind}","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#);
    (user.to_owned(), json)
}

fn listing(item: &str, in_stock: bool, updated_at: i64) -> String {
    format!(
        r#"{{"schema":"streamrec.item.v1","item_id":"{item}","category":"c","price":10,"in_stock":{in_stock},"updated_at":{updated_at}}}"#
    )
}

fn by_user(records: &[Read]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut sorted = records.to_vec();
    sorted.sort_by_key(|r| (r.partition, r.offset));
    let mut users: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for record in sorted {
        users
            .entry(record.key.clone())
            .or_default()
            .push(record.json());
    }
    users
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn catalog_updates_reach_recommendations_and_triggers_arrive_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let names = ["events", "catalog", "recs", "similar", "dead", "triggers"].map(unique);
    let [input, catalog, recs, similar, dead, triggers] = &names;
    for topic in &names {
        broker.create_topic(topic);
    }
    let rules = dir.path().join("triggers.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"cart\"\nkind = \"cart_abandonment\"\nwindow_ms = 60000\ncooldown_ms = 3600000\n",
    )
    .unwrap();
    let group = unique("group");
    let config = dir.path().join("streamrec.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{input}"]
catalog_topic = "{catalog}"
recommendations_topic = "{recs}"
similar_items_topic = "{similar}"
dead_letter_topic = "{dead}"
triggers_topic = "{triggers}"
session_timeout_ms = 6000
[pipeline]
min_update_interval_ms = 0
[triggers]
file = "{}"
# The shop's own names, for the listing that takes x out of stock (ours are still read).
[engine.clean.catalog_field_names]
item_id = "sku"
in_stock = "stock.available"
updated_at = "modified"
"#,
            broker.address,
            rules.display()
        ),
    )
    .unwrap();

    // The catalog, from a file, through the CLI.
    let file = dir.path().join("catalog.jsonl");
    let lines: Vec<String> = ["a", "b", "x"]
        .iter()
        .map(|i| listing(i, true, 1))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = streamrec()
        .args(["catalog", "load", "--input", file.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("published 3 listings"));

    // Every user views a then x (x becomes a's neighbour); u0 carts b and never buys it, u1
    // carts b and buys it.
    let users: Vec<String> = (0..USERS).map(|n| format!("u{n}")).collect();
    let mut first: Vec<(String, String)> = Vec::new();
    for (n, user) in users.iter().enumerate() {
        let t = T0 + n as i64 * 1000;
        first.push(event("view", user, "a", t));
        first.push(event("view", user, "x", t + 1));
    }
    first.push(event("add_to_cart", "u0", "b", T0 + 10_000));
    first.push(event("add_to_cart", "u1", "b", T0 + 10_000));
    first.push(event("purchase", "u1", "b", T0 + 20_000));
    send(&broker.address, input, &first);

    let run = streamrec()
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let phase_one = read_topic(
        &broker.address,
        recs,
        PARTITIONS,
        first.len(),
        Duration::from_secs(60),
    );
    assert_eq!(phase_one.len(), first.len(), "one update per event");
    let had_x: Vec<String> = by_user(&phase_one)
        .into_iter()
        .filter(|(_, updates)| {
            updates
                .iter()
                .any(|u| common::recommended_items(u).contains(&"x".to_owned()))
        })
        .map(|(user, _)| user)
        .collect();
    assert!(
        had_x.len() >= USERS - 1,
        "x was recommended to most users: {had_x:?}"
    );

    // x goes out of stock, in the shop's own names; once the run has consumed that, every
    // user acts once more, two minutes later (past u0's cart window).
    let shops_listing =
        r#"{"sku":"x","category":"c","price":10,"stock":{"available":false},"modified":2}"#;
    send(
        &broker.address,
        catalog,
        &[("x".into(), shops_listing.into())],
    );
    let catalog_ends = common::ends_by_reading(&broker.address, catalog, PARTITIONS, 4);
    let started = Instant::now();
    loop {
        // Partitions nothing was written to have no commit.
        let commits = committed(&broker.address, &group, catalog, PARTITIONS);
        let consumed = commits
            .iter()
            .zip(&catalog_ends)
            .all(|(c, e)| c == e || *e == 0);
        if consumed {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the catalog update was not consumed: commits {commits:?}, ends {catalog_ends:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let second: Vec<(String, String)> = users
        .iter()
        .map(|user| event("view", user, "b", T0 + 120_000))
        .collect();
    send(&broker.address, input, &second);
    let all = read_topic(
        &broker.address,
        recs,
        PARTITIONS,
        first.len() + second.len(),
        Duration::from_secs(60),
    );
    let printed = terminate(run);
    assert_eq!(all.len(), first.len() + second.len(), "{printed}");
    for (user, updates) in by_user(&all) {
        let next = common::recommended_items(updates.last().unwrap());
        assert!(
            !next.contains(&"x".to_owned()),
            "{user}'s next update still has x: {next:?}"
        );
        if had_x.contains(&user) {
            assert!(!next.is_empty(), "{user} still gets recommendations");
        }
    }

    let fired = read_topic(
        &broker.address,
        triggers,
        PARTITIONS,
        10,
        Duration::from_secs(5),
    );
    let ids: Vec<String> = fired
        .iter()
        .map(|t| t.json()["trigger_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fired.len(), 1, "u0's abandoned cart, once: {ids:?}");
    let trigger = fired[0].json();
    assert_eq!(trigger["schema"], "streamrec.trigger.v1");
    assert_eq!(
        (trigger["user_id"].as_str(), trigger["rule"].as_str()),
        (Some("u0"), Some("cart"))
    );
    assert_eq!(trigger["items"], serde_json::json!(["b"]));
    assert_eq!(fired[0].key, "u0");
    let checked = common::schemas::validate_topics(
        &broker.address,
        &[
            (recs, Output::Recommendations),
            (similar, Output::SimilarItems),
            (dead, Output::DeadLetters),
            (triggers, Output::Triggers),
        ],
    );
    assert!(checked > all.len(), "every output validated: {checked}");
}
