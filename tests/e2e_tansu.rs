//! End to end against a real broker process (Tansu) and real `streamrec` processes: MovieLens is
//! loaded with `streamrec produce`, `streamrec run` consumes it, a SIGTERM stops it; and the
//! Taobao sample survives six SIGKILLs with a state identical to a crash-free run's.
//!
//! These tests are `#[ignore]`d, so a plain `cargo test` reports them as ignored where no broker
//! exists. `.ci/run` installs Tansu, sets `STREAMREC_TANSU` and runs them with `--include-ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::schemas::Output;
use common::tansu::{
    produce_file, run_to_end, run_until_committed, state_config, state_digest, stored_offsets,
    streamrec, taobao_topic, terminate, Broker, PARTITIONS,
};
use common::{committed, dataset, ends_by_reading, read_topic, unique};

struct Setup {
    broker: Broker,
    config_path: PathBuf,
    group: String,
    input: String,
    recommendations: String,
    similar: String,
    dead_letter: String,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, recommendations, similar, dead_letter) = (
        unique("events"),
        unique("recs"),
        unique("similar"),
        unique("dead"),
    );
    for topic in [&input, &recommendations, &similar, &dead_letter] {
        broker.create_topic(topic);
    }
    let group = unique("group");
    let config = format!(
        r#"
[engine.clean]
min_ts_ms = 0  # MovieLens starts in 1996
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{input}"]
recommendations_topic = "{recommendations}"
similar_items_topic = "{similar}"
dead_letter_topic = "{dead_letter}"
session_timeout_ms = 6000
[pipeline]
min_update_interval_ms = 500
"#,
        broker.address
    );
    let config_path = dir.path().join("streamrec.toml");
    std::fs::write(&config_path, config).unwrap();
    Setup {
        broker,
        config_path,
        group,
        input,
        recommendations,
        similar,
        dead_letter,
        _dir: dir,
    }
}

/// Sends raw payloads keyed by user, as a shop's producer would.
fn produce_raw(brokers: &str, topic: &str, messages: &[(&str, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, payload) in messages {
        let mut record = BaseRecord::to(topic).key(*key).payload(payload);
        // A full queue is backpressure: serve acknowledgements, then try again.
        while let Err((err, returned)) = producer.send(record) {
            assert!(
                matches!(
                    err,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "{err}"
            );
            producer.poll(Duration::from_millis(10));
            record = returned;
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn wait_for_commits(setup: &Setup, ends: &[i64], limit: Duration) {
    let started = Instant::now();
    loop {
        let commits = committed(
            &setup.broker.address,
            &setup.group,
            &setup.input,
            PARTITIONS,
        );
        if commits == ends {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "commits {commits:?} did not reach the ends {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn movielens_through_a_real_broker() {
    let Some(ratings) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let setup = setup();
    let report = produce_file(
        &setup.broker.address,
        &setup.input,
        &ratings,
        "movielens-csv",
    );
    assert!(report.starts_with("produced 100836 events"));
    // After the history: purchases by two users, then bad inputs of four kinds.
    let late = 1_537_799_250_000i64; // MovieLens's last rating
    let purchase = |user: &str, item: &str, ts: i64| {
        format!(r#"{{"type":"purchase","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#)
            .into_bytes()
    };
    let bad: BTreeMap<Vec<u8>, &str> = [
        (b"{\"type\":".to_vec(), "not_json"),
        (
            format!(r#"{{"type":"view","item_id":"1","ts":{late}}}"#).into_bytes(),
            "missing_field:user_id",
        ),
        (
            format!(r#"{{"type":"rent","user_id":"1","item_id":"1","ts":{late}}}"#).into_bytes(),
            "bad_type",
        ),
        (
            format!(r#"{{"type":"view","user_id":"","item_id":"1","ts":{late}}}"#).into_bytes(),
            "empty_id:user_id",
        ),
    ]
    .into_iter()
    .collect();
    let mut extra: Vec<(&str, Vec<u8>)> = vec![
        ("1", purchase("1", "356", late)),
        ("2", purchase("2", "318", late)),
    ];
    extra.extend(bad.keys().map(|payload| ("1", payload.clone())));
    produce_raw(&setup.broker.address, &setup.input, &extra);
    let ends = ends_by_reading(
        &setup.broker.address,
        &setup.input,
        PARTITIONS,
        100_836 + extra.len(),
    );

    let run = streamrec()
        .args(["run", "--config", setup.config_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_commits(&setup, &ends, Duration::from_secs(240));
    let _ = terminate(run);
    let commits = committed(
        &setup.broker.address,
        &setup.group,
        &setup.input,
        PARTITIONS,
    );
    assert_eq!(
        commits, ends,
        "SIGTERM leaves commits at the end of the input"
    );

    let quiet = Duration::from_secs(5);
    let dead = read_topic(
        &setup.broker.address,
        &setup.dead_letter,
        PARTITIONS,
        bad.len() + 1,
        quiet,
    );
    let reasons: BTreeSet<(&str, &str)> = dead
        .iter()
        .map(|d| (bad[&d.payload], d.headers["streamrec-reason"].as_str()))
        .collect();
    assert_eq!(dead.len(), bad.len(), "exactly the injected bad inputs");
    assert!(
        reasons.iter().all(|(expected, got)| expected == got),
        "{reasons:?}"
    );

    let recs = read_topic(
        &setup.broker.address,
        &setup.recommendations,
        PARTITIONS,
        usize::MAX,
        quiet,
    );
    let similar = setup.similar.clone();
    let checked = common::schemas::validate_topics(
        &setup.broker.address,
        &[
            (&setup.recommendations, Output::Recommendations),
            (&similar, Output::SimilarItems),
            (&setup.dead_letter, Output::DeadLetters),
        ],
    );
    assert!(checked > recs.len(), "every output validated: {checked}");
    let users: BTreeSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        users.len(),
        610,
        "every MovieLens user (all have 20+ ratings) got an update"
    );
    let last: BTreeMap<&str, serde_json::Value> =
        recs.iter().map(|r| (r.key.as_str(), r.json())).collect();
    for (user, bought) in [("1", "356"), ("2", "318")] {
        let items: Vec<&str> = last[user]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(items.len(), 10);
        assert!(
            !items.contains(&bought),
            "user {user} bought {bought}: {items:?}"
        );
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn sigkill_at_any_point_loses_nothing_and_applies_nothing_twice() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, end) = taobao_topic(&broker, &path);

    let (crashy_group, calm_group) = (unique("crashy"), unique("calm"));
    let crashy = state_config(dir.path(), &broker, "crashy", &input, &crashy_group);
    for topic in [
        "crashy-recs",
        "crashy-similar",
        "crashy-dead",
        "calm-recs",
        "calm-similar",
        "calm-dead",
    ] {
        broker.create_topic_with(topic, 1);
    }
    // Early (before the group even formed), mid-stream at several points (checkpoints run every
    // 200 ms, so the extra delays land kills in or next to one), and during shutdown (SIGTERM,
    // then SIGKILL before the drain ends). Progress is read from the group's commits, which
    // follow checkpoints; a killed member holds its partition until its session times out.
    let mut kills = 0;
    for (fraction, extra_ms) in [
        (0.0, 300u64),
        (0.1, 0),
        (0.3, 70),
        (0.5, 140),
        (0.7, 30),
        (0.85, 0),
    ] {
        let target = (end as f64 * fraction) as i64;
        let at = (crashy_group.as_str(), input.as_str());
        let mut child = run_until_committed(&broker, &crashy, at, target);
        std::thread::sleep(Duration::from_millis(extra_ms));
        if fraction >= 0.85 {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        eprintln!("after kill {kills}: {}", stored_offsets(&crashy));
    }
    assert_eq!(kills, 6);
    run_to_end(&broker, &crashy, &crashy_group, &input, end);

    let calm = state_config(dir.path(), &broker, "calm", &input, &calm_group);
    run_to_end(&broker, &calm, &calm_group, &input, end);

    assert_eq!(
        state_digest(&crashy),
        state_digest(&calm),
        "crashes changed the state"
    );
    for name in ["crashy", "calm"] {
        assert!(common::schemas::validate_named(&broker.address, name) > 0);
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_flood_of_bad_input_leaves_a_short_log() {
    let setup = setup();
    let flood: Vec<(&str, Vec<u8>)> = (0..100_000)
        .map(|i| {
            let payload = if i % 10 == 0 {
                format!(
                    r#"{{"type":"teleport","user_id":"u{i}","item_id":"i1","ts":1700000000000}}"#
                )
            } else {
                format!("garbage {i}")
            };
            ("flood", payload.into_bytes())
        })
        .collect();
    produce_raw(&setup.broker.address, &setup.input, &flood);
    let log = setup._dir.path().join("run.log");
    let run = streamrec()
        .args(["--log-format", "json", "run", "--config"])
        .arg(&setup.config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while committed(
        &setup.broker.address,
        &setup.group,
        &setup.input,
        PARTITIONS,
    )
    .iter()
    .map(|c| (*c).max(0))
    .sum::<i64>()
        < flood.len() as i64
    {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the flood was not consumed"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = terminate(run);

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        lines.len() < 100,
        "{} log lines for the flood:\n{text}",
        lines.len()
    );
    let mut counted = BTreeMap::new();
    for line in &lines {
        if line["message"] == "input rejected to the dead letters" {
            *counted
                .entry(line["reason"].as_str().unwrap().to_owned())
                .or_insert(0) += line["count"].as_u64().unwrap();
        }
    }
    assert_eq!(
        counted,
        BTreeMap::from([
            ("bad_type".to_owned(), 10_000),
            ("not_json".to_owned(), 90_000)
        ]),
        "every rejection counted once, by reason"
    );
}
