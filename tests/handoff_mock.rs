//! A partition handed from one member to another on librdkafka's mock cluster: the member that
//! lost it keeps its users in memory (in case the partition comes back), and a publication
//! owed at the revoke (drained then) or a query may touch them later. Only the partition's
//! owner writes its changelog, so such stale copies never overwrite the new owner's records:
//! every user's latest changelog record has all of its events.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use streamrec::config::Config;
use streamrec::engine::{Engine, PortableUser};
use streamrec::event::EventType;
use streamrec::kafka::{Health, Observers};
use streamrec::pipeline::Stats;
use streamrec::runtime::run;
use streamrec::store::StateStore;
use tokio::sync::{oneshot, watch};

use common::{fresh_config, unique};

const PARTITIONS: i32 = 3;
const USERS_PER_PARTITION: usize = 4;
const VIEWS: u64 = 5;
const T0: i64 = 1_700_000_000_000;

/// How the member that lost a partition touches the partition's users afterwards.
#[derive(Clone, Copy)]
enum Touch {
    /// Publications owed at the revoke (coalesced), which its drain sends (and notes as shown).
    Drain,
    /// A query for one of the users, answered from its stale copy. Nothing is coalesced, so
    /// no drain touches a user (the new owner's last drain would write its users again).
    Query,
}

/// `VIEWS` views by every user of `partitions`, at `round`'s times.
fn produce_views(config: &Config, round: i64, partitions: &[i32]) -> u64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .unwrap();
    let mut sent = 0;
    for k in 0..VIEWS as usize {
        for u in 0..USERS_PER_PARTITION {
            for &p in partitions {
                let user = format!("p{p}-u{u}");
                let ts = T0 + round * 1_000 + (k * 10 + u) as i64;
                let json = format!(
                    r#"{{"type":"view","user_id":"{user}","item_id":"r{round}-i{k}","ts":{ts}}}"#
                );
                let topic = &config.kafka.input_topics[0];
                let record = BaseRecord::to(topic).partition(p).key(&user).payload(&json);
                producer.send(record).unwrap();
                sent += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    sent
}

/// A member running until stopped.
struct Member {
    progress: watch::Receiver<Stats>,
    health: Arc<Health>,
    query: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<()>,
}

impl Member {
    fn start(config: &Config) -> Member {
        let (progress_tx, progress) = watch::channel(Stats::default());
        let observers = Observers {
            progress: Some(progress_tx),
            ..Observers::default()
        };
        let (health, query) = (observers.health.clone(), observers.query_address.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let config = config.clone();
        let running = tokio::spawn(async move {
            let until = async { stopped.await.unwrap_or(()) };
            run(&config, until, observers)
                .await
                .expect("the run succeeds");
        });
        Member {
            progress,
            health,
            query,
            stop,
            running,
        }
    }

    /// Waits until it consumed `total` inputs, then for a few checkpoint intervals.
    async fn consumed(&mut self, total: u64) {
        let wait = self.progress.wait_for(|s| s.consumed >= total);
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("consumed in time")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    fn held(&self, config: &Config) -> Vec<i32> {
        self.health.held_partitions(&config.kafka.input_topics[0])
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.running)
            .await
            .expect("the member stops")
            .unwrap();
    }
}

/// Every user's latest record in the changelog.
fn latest_records(config: &Config) -> BTreeMap<String, PortableUser> {
    let mut latest = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("group.id", unique("read"))
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        let topic = &config.kafka.changelog_topic;
        (assignment.add_partition_offset(topic, partition, Offset::Beginning)).unwrap();
        consumer.assign(&assignment).unwrap();
        loop {
            let message = match consumer.poll(Duration::from_secs(5)) {
                Some(Ok(message)) => message,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => break,
                Some(Err(err)) => panic!("reading the changelog: {err}"),
            };
            let is_user = (message.headers().and_then(|h| h.iter().next()))
                .is_some_and(|h| h.value == Some(b"user".as_slice()));
            if is_user {
                let user = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
                let record = PortableUser::decode(message.payload().unwrap(), &user).unwrap();
                latest.insert(user, record);
            }
        }
    }
    latest
}

/// A config whose lists after a user's first wait for a drain (a revoke's or a stop's), with
/// frequent checkpoints and its topics on `cluster`.
fn coalescing_config(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> Config {
    let mut config = fresh_config(cluster.bootstrap_servers());
    config.kafka.changelog_topic = unique("changelog");
    config.pipeline.min_update_interval_ms = 60_000;
    config.state.checkpoint_interval_ms = 50;
    for topic in config.kafka.all_topics() {
        cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    config
}

/// Member a takes every partition and applies a first round (checkpointed, every later list
/// owed); b joins and takes some; a second round reaches b's partitions first, then a's, so
/// that a checkpoints after b wrote its users. Returns the views per user in the changelog.
async fn hand_over(touch: Touch) -> BTreeMap<String, u64> {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let mut a = coalescing_config(&cluster);
    if let Touch::Query = touch {
        a.pipeline.min_update_interval_ms = 0;
    }
    a.query.listen = "127.0.0.1:0".into();
    let mut b = a.clone();
    a.state.dir = dirs.path().join("a").display().to_string();
    b.state.dir = dirs.path().join("b").display().to_string();
    (a.kafka.instance_id, b.kafka.instance_id) = ("a".into(), "b".into());

    let mut first = Member::start(&a);
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let round_one = produce_views(&a, 1, &all);
    first.consumed(round_one).await;
    let mut second = Member::start(&b);
    let started = std::time::Instant::now();
    while first.held(&a).len() + second.held(&b).len() != PARTITIONS as usize
        || second.held(&b).is_empty()
        || !first.health.restoring().is_empty()
        || !second.health.restoring().is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "b joins and the partitions are split"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (held_a, held_b) = (first.held(&a), second.held(&b));
    if let Touch::Query = touch {
        let user = format!("p{}-u0", held_b[0]);
        let address = first.query.get().expect("a's query listener").to_string();
        let path = format!("/v1/users/{user}/recommendations");
        let answer = tokio::task::spawn_blocking(move || common::http::get(&address, &path, None));
        let (status, _) = answer.await.unwrap().expect("a answers");
        assert_eq!(status, 200, "a answers for a user it no longer holds");
    }
    second.consumed(produce_views(&a, 2, &held_b)).await;
    first
        .consumed(round_one + produce_views(&a, 2, &held_a))
        .await;
    first.stop().await;
    second.stop().await;
    let views = EventType::View.index();
    (latest_records(&a).into_iter())
        .map(|(user, record)| (user, record.profile.counts[views]))
        .collect()
}

fn assert_every_user_has_both_rounds(views: BTreeMap<String, u64>) {
    assert_eq!(views.len(), PARTITIONS as usize * USERS_PER_PARTITION);
    let stale: Vec<_> = views.iter().filter(|(_, &n)| n != 2 * VIEWS).collect();
    assert!(
        stale.is_empty(),
        "latest changelog records missing the second round: {stale:?}"
    );
}

/// Fails when the revoke's drain leaves the users it published changed and unwritten and the
/// changelog takes any member's changed users.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_drained_at_a_revoke_leave_no_stale_user_for_the_changelog() {
    assert_every_user_has_both_rounds(hand_over(Touch::Drain).await);
}

/// Fails when a checkpoint writes users of partitions the member does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_after_a_revoke_does_not_put_a_stale_user_in_the_changelog() {
    assert_every_user_has_both_rounds(hand_over(Touch::Query).await);
}

/// Fails when a stop's drain leaves what it published unwritten: the lists it sent are what
/// the users were shown, which online metrics judge their next events against after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_drained_at_a_stop_are_in_the_state_dir() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = coalescing_config(&cluster);
    config.state.dir = dir.path().display().to_string();
    let mut member = Member::start(&config);
    let all: Vec<i32> = (0..PARTITIONS).collect();
    member.consumed(produce_views(&config, 1, &all)).await;
    member.stop().await;

    let store = StateStore::open(dir.path(), false).unwrap();
    let stored = store.read().unwrap().expect("a checkpoint was written");
    let mut engine = Engine::from_records(config.engine.clone(), &stored.records).unwrap();
    for p in 0..PARTITIONS {
        for u in 0..USERS_PER_PARTITION {
            let user = format!("p{p}-u{u}");
            engine
                .insert_user(&user, &store.user(&user).unwrap().unwrap())
                .unwrap();
            let last_event_ms = engine.user(&user).unwrap().profile.last_seen_ms;
            let shown_at = engine.shown(&user).map(|shown| shown.at_ms);
            assert_eq!(
                shown_at,
                Some(last_event_ms),
                "{user} was last shown the list the stop's drain made after their last event"
            );
        }
    }
}
