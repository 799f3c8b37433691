//! The user-state changelog on librdkafka's mock cluster: a partition that moves to an instance
//! with no local state takes its users' state along, and a changelog cut short by a crash (users
//! written past the last position) still counts every event once per user.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamrec::config::Config;
use streamrec::engine::Engine;
use streamrec::event::EventType;
use streamrec::store::StateStore;

use common::moving::{self, from_start, USERS_PER_PARTITION, VIEWS};
use common::{fresh_config, run_for, unique};

const PARTITIONS: i32 = 3;

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

fn config_for(cluster: &Cluster, state: &Path) -> Config {
    let mut config = fresh_config(cluster.bootstrap_servers());
    config.kafka.changelog_topic = unique("changelog");
    config.state.dir = state.display().to_string();
    for topic in config.kafka.all_topics() {
        cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    config
}

/// `VIEWS` views by every user, partitions interleaved; `round` makes the items and times new.
fn produce_views(config: &Config, round: usize) -> u64 {
    produce_views_from(config, round, T0 + round as i64 * 1000)
}

const T0: i64 = 1_700_000_000_000;
/// The latest event time of a round, in every partition.
const ROUND_SPAN: i64 = (VIEWS as i64 - 1) * 10 + USERS_PER_PARTITION as i64 - 1;

fn produce_views_from(config: &Config, round: usize, start: i64) -> u64 {
    let all: Vec<i32> = (0..PARTITIONS).collect();
    moving::produce_views(config, round, start, &all)
}

/// Views per user as the instance's state dir holds them.
fn stored_views(config: &Config) -> BTreeMap<String, u64> {
    let store = StateStore::open(Path::new(&config.state.dir), false).unwrap();
    let stored = store.read().unwrap().expect("a checkpoint was written");
    let mut engine = Engine::from_records(config.engine.clone(), &stored.records).unwrap();
    let mut views = BTreeMap::new();
    for p in 0..PARTITIONS {
        for u in 0..USERS_PER_PARTITION {
            let user = format!("p{p}-u{u}");
            if let Some(record) = store.user(&user).unwrap() {
                engine.insert_user(&user, &record).unwrap();
            }
            let count = engine
                .user(&user)
                .map_or(0, |s| s.profile.counts[EventType::View.index()]);
            views.insert(user, count);
        }
    }
    views
}

fn every_user_has(views: &BTreeMap<String, u64>, expected: u64) {
    assert_eq!(views.len(), PARTITIONS as usize * USERS_PER_PARTITION);
    for (user, &count) in views {
        assert_eq!(count, expected, "views applied to {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_moves_to_a_fresh_instance_with_its_users_state() {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let a = config_for(&cluster, &dirs.path().join("a"));
    let first = produce_views(&a, 0);
    run_for(&a, first, Duration::from_secs(1)).await;
    every_user_has(&stored_views(&a), VIEWS as u64);

    // Instance a is gone for good; b starts in the same group with an empty state dir.
    let mut b = a.clone();
    b.state.dir = dirs.path().join("b").display().to_string();
    let second = produce_views(&a, 1);
    let report = run_for(&b, second, Duration::from_secs(1)).await;
    assert_eq!(
        report.stats().applied,
        second,
        "b applies only the new events"
    );
    every_user_has(&stored_views(&b), 2 * VIEWS as u64);
}

/// A partition continues at the stream time it had on its previous owner, even when the new
/// owner's first events are older (a late batch): the stream time travels in the changelog's
/// position records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_partition_continues_at_its_stream_time() {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let a = config_for(&cluster, &dirs.path().join("a"));
    let first = produce_views(&a, 0);
    run_for(&a, first, Duration::from_secs(1)).await;
    let mut b = a.clone();
    b.state.dir = dirs.path().join("b").display().to_string();
    let late = produce_views_from(&a, 1, T0 - 60_000);
    run_for(&b, late, Duration::from_secs(1)).await;
    let store = StateStore::open(Path::new(&b.state.dir), false).unwrap();
    let stored = store.read().unwrap().expect("b checkpointed");
    let engine = Engine::from_records(b.engine.clone(), &stored.records).unwrap();
    for partition in 0..PARTITIONS {
        let source = streamrec::offsets::Waiter {
            topic: 0,
            partition,
            offset: 0,
        };
        let stream = streamrec::pipeline::position_of(source).stream;
        assert_eq!(
            engine.stream_time(stream),
            Some(T0 + ROUND_SPAN),
            "partition {partition} keeps a's time, not its late events' time"
        );
    }
}

/// Reads every record of `from` and writes it to `to` (same partition, key, value, headers),
/// leaving out each partition's last position record: a checkpoint whose users reached the
/// changelog and whose position did not (a crash in between).
fn copy_without_last_positions(brokers: &str, from: &str, to: &str) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut dropped = 0;
    for partition in 0..PARTITIONS {
        let consumer = from_start(brokers, from, partition);
        let mut records = Vec::new();
        loop {
            let message = match consumer.poll(Duration::from_secs(5)) {
                Some(Ok(message)) if message.partition() == partition => message,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) if p == partition => break,
                None => break,
                _ => continue,
            };
            let kind = message
                .headers()
                .and_then(|h| h.iter().next().and_then(|h| h.value.map(<[u8]>::to_vec)))
                .unwrap_or_default();
            let key = message.key().unwrap_or_default().to_vec();
            let payload = message.payload().unwrap_or_default().to_vec();
            records.push((kind, key, payload));
        }
        let last = records.iter().rposition(|(kind, _, _)| kind == b"position");
        let positions = records.iter().filter(|r| r.0 == b"position").count();
        assert!(
            positions >= 2,
            "partition {partition} needs two checkpoints: {positions}"
        );
        for (i, (kind, key, payload)) in records.iter().enumerate() {
            if Some(i) == last {
                dropped += 1;
                continue;
            }
            let kind = String::from_utf8(kind.clone()).unwrap();
            let headers = OwnedHeaders::new().insert(Header {
                key: "streamrec-changelog",
                value: Some(&kind),
            });
            let record = BaseRecord::to(to)
                .partition(partition)
                .key(key)
                .payload(payload)
                .headers(headers);
            producer.send(record).unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    dropped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_written_past_the_last_position_count_each_event_once() {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let a = config_for(&cluster, &dirs.path().join("a"));
    // Two runs: at least two checkpoints of every partition.
    let mut sent = 0;
    for round in 0..2 {
        sent = produce_views(&a, round);
        run_for(&a, sent, Duration::from_secs(1)).await;
    }

    // b: no local state, a group with no commits (it reads the input from its start), and a
    // changelog whose last position per partition was lost.
    let mut b = a.clone();
    b.state.dir = dirs.path().join("b").display().to_string();
    b.kafka.group_id = unique("group-b");
    b.kafka.changelog_topic = unique("changelog-cut");
    cluster
        .create_topic(&b.kafka.changelog_topic, PARTITIONS, 1)
        .unwrap();
    let dropped = copy_without_last_positions(
        &a.kafka.brokers,
        &a.kafka.changelog_topic,
        &b.kafka.changelog_topic,
    );
    assert_eq!(dropped, PARTITIONS as usize);
    // b re-reads the second run's events (after the last position left).
    let report = run_for(&b, sent, Duration::from_secs(1)).await;
    let stats = report.stats();
    assert!(
        stats.already_applied > 0,
        "b re-read events its restored users reflect: {stats:?}"
    );
    assert_eq!(
        stats.applied, 0,
        "every event was in a restored user already"
    );
    every_user_has(&stored_views(&b), 2 * VIEWS as u64);
}
