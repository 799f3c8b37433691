//! Helpers for tests that talk to a real Kafka-protocol broker (the in-process mock cluster or a
//! Tansu process): unique names, loading messages, reading topics back.

#![allow(dead_code)]

pub mod http;
pub mod instance;
pub mod moving;
pub mod outage;
pub mod proxy;
pub mod python;
pub mod schemas;
pub mod tansu;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// A file under `../shared/data`, or None after saying the test skips (the data is not in the
/// repository: licences).
pub fn dataset(relative: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (see ../shared/README.md)",
            path.display()
        );
        None
    }
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// One message read back.
#[derive(Clone, Debug)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl Read {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("a JSON payload")
    }
}

fn reader(brokers: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a reader");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// Reads every partition of `topic` from the beginning until `expected` messages arrived or the
/// topic stays quiet for `quiet`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    quiet: Duration,
) -> Vec<Read> {
    let consumer = reader(brokers, topic, partitions);
    let mut read = Vec::new();
    let mut last = Instant::now();
    while read.len() < expected && last.elapsed() < quiet {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last = Instant::now();
                let mut headers = BTreeMap::new();
                if let Some(h) = message.headers() {
                    for header in h.iter() {
                        let value = header
                            .value
                            .map(|v| String::from_utf8_lossy(v).into_owned());
                        headers.insert(header.key.to_owned(), value.unwrap_or_default());
                    }
                }
                read.push(Read {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    payload: message.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(err)) => panic!("reading {topic}: {err}"),
            None => {}
        }
    }
    read
}

/// Everything on an item records topic (item-owned scale-out), as one publication in the
/// order read: a later record of an item comes after its earlier ones.
pub fn read_records(brokers: &str, topic: &str, partitions: i32) -> streamrec::engine::Publication {
    // Until quiet, not to the listed ends: Tansu can list them behind what it serves.
    let quiet = Duration::from_secs(5);
    let mut publication = streamrec::engine::Publication::default();
    for record in read_topic(brokers, topic, partitions, usize::MAX, quiet) {
        // The kind is the key's first byte (ASCII: kept by the lossy text of the key).
        (publication.add_keyed(record.key.as_bytes(), &record.payload)).expect("records decode");
    }
    publication
}

/// The group's committed offsets per partition (-1001 when none).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer of the group");
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let list = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    let offsets = (0..partitions)
        .map(
            |p| match list.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1001,
            },
        )
        .collect();
    drop(list); // before the consumer: keeping it alive can hang the drop
    offsets
}

/// The offset after the last message of each partition, found by reading the topic: Tansu's
/// ListOffsets answer lags behind what it serves, so watermarks cannot be trusted there.
pub fn ends_by_reading(brokers: &str, topic: &str, partitions: i32, expected: usize) -> Vec<i64> {
    let read = read_topic(
        brokers,
        topic,
        partitions,
        expected,
        Duration::from_secs(10),
    );
    assert_eq!(read.len(), expected, "all of {topic} read back");
    (0..partitions)
        .map(|p| {
            read.iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset + 1)
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Runs one `run` instance until `consumed` inputs are consumed (0: none expected) and a further
/// `linger` has passed; returns its report.
pub async fn run_for(
    config: &streamrec::config::Config,
    consumed: u64,
    linger: Duration,
) -> streamrec::kafka::RunReport {
    use streamrec::kafka::Observers;
    use streamrec::runtime::run;
    log_if_asked();
    let (progress_tx, progress) =
        tokio::sync::watch::channel(streamrec::pipeline::Stats::default());
    let mut watched = progress.clone();
    let until = async move {
        while watched.borrow_and_update().consumed < consumed {
            watched.changed().await.unwrap();
        }
        tokio::time::sleep(linger).await;
    };
    let observers = Observers {
        progress: Some(progress_tx),
        ..Observers::default()
    };
    let health = observers.health.clone();
    let ran = tokio::time::timeout(Duration::from_secs(60), run(config, until, observers)).await;
    // Where a run that never ended stood: the group, the restores, the inputs.
    let Ok(ran) = ran else {
        panic!(
            "the run did not end in 60 s: {} of {consumed} inputs consumed; {} partitions \
             assigned ({} assignments), restoring {:?}, brokers down: {}",
            progress.borrow().consumed,
            health.assigned_partitions(),
            health.assignments(),
            health.restoring(),
            health.brokers_down()
        );
    };
    ran.expect("the run succeeds")
}

/// Sends the runs' logs to the test's output when `STREAMREC_TEST_LOG` holds a filter (e.g.
/// `info`): how a flaky run is diagnosed.
pub fn log_if_asked() {
    if let Ok(filter) = std::env::var("STREAMREC_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A config on `brokers` with a fresh group, input and output topics (created by the caller).
pub fn fresh_config(brokers: String) -> streamrec::config::Config {
    let mut config = streamrec::config::Config::default();
    let kafka = &mut config.kafka;
    kafka.brokers = brokers;
    kafka.group_id = unique("group");
    kafka.session_timeout_ms = 6_000;
    kafka.input_topics = vec![unique("events")];
    kafka.recommendations_topic = unique("recs");
    kafka.similar_items_topic = unique("similar");
    kafka.dead_letter_topic = unique("dead");
    kafka.triggers_topic = unique("triggers");
    config
}

/// The item ids of a `streamrec.recommendations.v1` message, best first.
pub fn recommended_items(recommendation: &serde_json::Value) -> Vec<String> {
    recommendation["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `done`, checking every 100 ms; fails naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
