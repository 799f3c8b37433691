//! A partition handed from one member to another on librdkafka's mock cluster: the member that
//! lost it keeps its users in memory (in case the partition comes back), and a publication
//! owed at the revoke (drained then) or a query may touch them later. Only the partition's
//! owner writes its changelog, so such stale copies never overwrite the new owner's records:
//! every user's latest changelog record has all of its events.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamrec::config::Config;
use streamrec::engine::{Engine, PortableUser};
use streamrec::event::EventType;
use streamrec::store::StateStore;

use common::instance::{both_hold_partitions, Instance};
use common::moving::{changelog_users, produce_views, USERS_PER_PARTITION, VIEWS};
use common::{fresh_config, read_topic, unique, wait_until};

const PARTITIONS: i32 = 3;
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

/// A round of views by the users of `partitions`, at the round's times.
fn produce_round(config: &Config, round: usize, partitions: &[i32]) -> u64 {
    produce_views(config, round, T0 + round as i64 * 1_000, partitions)
}

/// Waits until `member` consumed `total` inputs, then for a few checkpoint intervals.
async fn checkpointed(member: &mut Instance, total: u64) {
    member.consumed(total).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Every user's latest record in the changelog.
fn latest_records(config: &Config) -> BTreeMap<String, PortableUser> {
    let (brokers, topic) = (&config.kafka.brokers, &config.kafka.changelog_topic);
    (0..PARTITIONS)
        .flat_map(|partition| changelog_users(brokers, topic, partition))
        .map(|(user, bytes)| {
            let record = PortableUser::decode(&bytes, &user).unwrap();
            (user, record)
        })
        .collect()
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
    config.query.listen = "127.0.0.1:0".into();
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
    let (a, b) = members_a_and_b(a, dirs.path());

    let mut first = Instance::start(&a).await;
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let round_one = produce_round(&a, 1, &all);
    checkpointed(&mut first, round_one).await;
    let mut second = join(&first, &b).await;
    let topic = &a.kafka.input_topics[0];
    let (held_a, held_b) = (
        first.health.held_partitions(topic),
        second.health.held_partitions(topic),
    );
    if let Touch::Query = touch {
        let path = format!("/v1/users/p{}-u0/recommendations", held_b[0]);
        let answer = first.get(&path, &[]).await;
        assert_eq!(
            answer.status, 200,
            "a answers for a user it no longer holds"
        );
    }
    checkpointed(&mut second, produce_round(&a, 2, &held_b)).await;
    checkpointed(&mut first, round_one + produce_round(&a, 2, &held_a)).await;
    first.stop().await;
    second.stop().await;
    let views = EventType::View.index();
    (latest_records(&a).into_iter())
        .map(|(user, record)| (user, record.profile.counts[views]))
        .collect()
}

/// Two members of `config`'s group, `a` and `b`, each with its own state dir under `dirs`.
fn members_a_and_b(config: Config, dirs: &std::path::Path) -> (Config, Config) {
    let member = |name: &str| {
        let mut member = config.clone();
        member.state.dir = dirs.join(name).display().to_string();
        member.kafka.instance_id = name.into();
        member
    };
    (member("a"), member("b"))
}

/// Starts a second member beside `first`, and waits until both hold partitions and have
/// restored what they took.
async fn join(first: &Instance, config: &Config) -> Instance {
    let second = Instance::start(config).await;
    let topic = &config.kafka.input_topics[0];
    both_hold_partitions(first, &second, topic, PARTITIONS).await;
    let (health_a, health_b) = (first.health.clone(), second.health.clone());
    tokio::task::spawn_blocking(move || {
        let restored = || health_a.restoring().is_empty() && health_b.restoring().is_empty();
        wait_until(
            "both restored their partitions",
            Duration::from_secs(30),
            restored,
        );
    })
    .await
    .unwrap();
    second
}

fn assert_every_user_has_both_rounds(views: BTreeMap<String, u64>) {
    assert_eq!(views.len(), PARTITIONS as usize * USERS_PER_PARTITION);
    let stale: Vec<_> = views
        .iter()
        .filter(|(_, &n)| n != 2 * VIEWS as u64)
        .collect();
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
    let mut member = Instance::start(&config).await;
    let all: Vec<i32> = (0..PARTITIONS).collect();
    checkpointed(&mut member, produce_round(&config, 1, &all)).await;
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

const CART_WINDOW_MS: i64 = 600_000;

/// One event of `kind` by user `p{p}-{who}` on each partition `p` of `partitions`.
fn produce_on(config: &Config, (who, kind): (&str, &str), ts: i64, partitions: &[i32]) -> u64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .unwrap();
    let topic = &config.kafka.input_topics[0];
    for &p in partitions {
        let user = format!("p{p}-{who}");
        let json = format!(r#"{{"type":"{kind}","user_id":"{user}","item_id":"i{p}","ts":{ts}}}"#);
        let record = BaseRecord::to(topic).partition(p).key(&user).payload(&json);
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    partitions.len() as u64
}

/// Fails when a user's waiting trigger state stays with the member that lost the user's
/// partition: a user carts an item on a, b takes the partition, and the partition's time
/// passes the cart's deadline on b, which must fire the abandonment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cart_waiting_at_a_revoke_is_abandoned_on_the_new_owner() {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let mut a = coalescing_config(&cluster);
    a.pipeline.min_update_interval_ms = 0;
    let rules = dirs.path().join("triggers.toml");
    let rule = format!(
        "[[rule]]\nname = \"cart\"\nkind = \"cart_abandonment\"\n\
         window_ms = {CART_WINDOW_MS}\ncooldown_ms = 1\n"
    );
    std::fs::write(&rules, rule).unwrap();
    a.triggers.file = rules.display().to_string();
    let (a, b) = members_a_and_b(a, dirs.path());

    let mut first = Instance::start(&a).await;
    let all: Vec<i32> = (0..PARTITIONS).collect();
    checkpointed(
        &mut first,
        produce_on(&a, ("buyer", "add_to_cart"), T0, &all),
    )
    .await;
    let mut second = join(&first, &b).await;
    let held_b = second.health.held_partitions(&a.kafka.input_topics[0]);
    let later = T0 + CART_WINDOW_MS;
    second
        .consumed(produce_on(&a, ("browser", "view"), later, &held_b))
        .await;
    let triggers = &a.kafka.triggers_topic;
    let quiet = Duration::from_secs(5);
    let read = read_topic(&a.kafka.brokers, triggers, PARTITIONS, held_b.len(), quiet);
    first.stop().await;
    second.stop().await;

    let mut fired: Vec<String> = read.iter().map(|r| r.key.clone()).collect();
    fired.sort();
    let carted: Vec<String> = held_b.iter().map(|p| format!("p{p}-buyer")).collect();
    assert_eq!(fired, carted, "cart abandonments fired on the new owner");
}

/// Fails when a partition's dedup keys stay with the member that lost it: each user's views,
/// from two checkpoints apart, are sent again (a producer's retry, say) after the partition
/// moved to b, which must drop the copies as a would have. Each checkpoint carries only the
/// keys since the one before, so the first views' keys are in an earlier record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_after_a_revoke_is_dropped_by_the_new_owner() {
    let cluster = MockCluster::new(1).unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let (a, b) = members_a_and_b(coalescing_config(&cluster), dirs.path());

    let mut first = Instance::start(&a).await;
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let (viewed, viewed_later) = (("viewer", "view"), ("viewer", "add_to_cart"));
    checkpointed(&mut first, produce_on(&a, viewed, T0, &all)).await;
    let total = produce_on(&a, viewed_later, T0 + 1, &all);
    checkpointed(&mut first, 2 * total).await;
    let mut second = join(&first, &b).await;
    let held_b = second.health.held_partitions(&a.kafka.input_topics[0]);
    let copies =
        produce_on(&a, viewed, T0, &held_b) + produce_on(&a, viewed_later, T0 + 1, &held_b);
    second.consumed(copies).await;
    let duplicates = second.progress.borrow().duplicates;
    first.stop().await;
    second.stop().await;
    assert_eq!(duplicates, copies, "b dropped every copy of what a applied");
}
