//! Stream time per input partition: a partition hours ahead (a backlog elsewhere, a replay)
//! never decides another partition's dedup window or trigger deadlines. On partition 1 a buyer
//! carts an item; then partition 0's events, five hours ahead, are read; then on partition 1 the
//! cart arrives again, the buyer buys inside the window, a control user carts and never buys,
//! and later traffic moves partition 1's time past the control's deadline. The duplicate must
//! be caught, the buyer must get no cart-abandonment trigger, and the control exactly one — in
//! the processor, through the mock cluster, and through a real broker (Tansu, `#[ignore]`d
//! without one).

mod common;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamrec::config::Config;
use streamrec::offsets::Waiter;
use streamrec::pipeline::{Destination, Processor, Record, Stats};
use streamrec::triggers::Rules;

use common::{fresh_config, read_topic};

const RULES: &str = r#"
[[rule]]
name = "cart"
kind = "cart_abandonment"
window_ms = 1800000
cooldown_ms = 1000
"#;

const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

fn event(kind: &str, user: &str, item: &str, ts: i64) -> Vec<u8> {
    format!(r#"{{"type":"{kind}","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#).into_bytes()
}

/// Partition 0: another shop's traffic five hours ahead.
fn ahead() -> Vec<(i32, Vec<u8>)> {
    (0..20)
        .map(|n| {
            (
                0,
                event("view", &format!("a{n}"), "x", T0 + 300 * MINUTE + n),
            )
        })
        .collect()
}

fn cart() -> Vec<u8> {
    event("add_to_cart", "buyer", "shoe", T0)
}

/// Partition 1, before the backlog of partition 0 is read: the buyer's cart.
fn first() -> Vec<(i32, Vec<u8>)> {
    vec![(1, cart())]
}

/// Partition 1, after it: the cart again, the control's cart, the buyer's purchase, then later
/// traffic that moves partition 1's time past the control's deadline.
fn lagging() -> Vec<(i32, Vec<u8>)> {
    vec![
        (1, cart()),
        (1, event("add_to_cart", "control", "hat", T0 + MINUTE)),
        (1, event("purchase", "buyer", "shoe", T0 + 10 * MINUTE)),
        (1, event("view", "later", "sock", T0 + 40 * MINUTE)),
    ]
}

fn rules_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("triggers.toml");
    std::fs::write(&path, RULES).unwrap();
    path.display().to_string()
}

/// The users each published trigger names.
fn triggered(payloads: impl IntoIterator<Item = Vec<u8>>) -> Vec<String> {
    let mut users: Vec<String> = payloads
        .into_iter()
        .map(|p| {
            let value: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(value["kind"], "cart_abandonment");
            value["user_id"].as_str().unwrap().to_owned()
        })
        .collect();
    users.sort();
    users
}

fn check(stats: &Stats, users: &[String]) {
    assert_eq!(stats.duplicates, 1, "the repeated cart is caught");
    assert_eq!(
        users,
        ["control"],
        "no trigger for the buyer, one for the control"
    );
}

#[test]
fn a_partition_ahead_neither_expires_another_partitions_duplicates_nor_fires_its_deadlines() {
    let mut config = Config::default();
    config.pipeline.min_update_interval_ms = 0;
    let rules = Arc::new(Rules::parse(RULES).unwrap());
    let mut processor = Processor::new(&config).with_rules(rules);
    let mut payloads = Vec::new();
    let inputs = first().into_iter().chain(ahead()).chain(lagging());
    for (offset, (partition, payload)) in inputs.enumerate() {
        let record = Record {
            source: Waiter {
                topic: 0,
                partition,
                offset: offset as i64,
            },
            topic: "events",
            key: None,
            payload: Some(&payload),
            timestamp_ms: None,
        };
        let outputs = processor.process(&record, 0).outputs;
        let fired = outputs
            .into_iter()
            .filter(|o| o.destination == Destination::Triggers);
        payloads.extend(fired.map(|o| o.payload));
    }
    check(processor.stats(), &triggered(payloads));
}

fn produce_to_partitions(brokers: &str, topic: &str, messages: &[(i32, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (partition, payload) in messages {
        let record = BaseRecord::to(topic)
            .partition(*partition)
            .key("k")
            .payload(payload);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Runs `run` over the three phases, each produced once the one before is consumed, and
/// returns the run's counters and the users the published triggers name.
async fn through_a_broker(config: Config, brokers: &str) -> (Stats, Vec<String>) {
    let input = config.kafka.input_topics[0].clone();
    let triggers_topic = config.kafka.triggers_topic.clone();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(Stats::default());
    let observers = streamrec::kafka::Observers {
        progress: Some(progress_tx),
        ..Default::default()
    };
    let brokers_owned = brokers.to_owned();
    let until = async move {
        let mut consumed = 0;
        for phase in [first(), ahead(), lagging()] {
            produce_to_partitions(&brokers_owned, &input, &phase);
            consumed += phase.len() as u64;
            while progress.borrow_and_update().consumed < consumed {
                progress.changed().await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let run = streamrec::runtime::run(&config, until, observers);
    let report = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the run ends")
        .expect("the run succeeds");
    let read = read_topic(brokers, &triggers_topic, 2, 10, Duration::from_secs(5));
    (
        report.stats(),
        triggered(read.into_iter().map(|r| r.payload)),
    )
}

fn two_partition_config(brokers: String, dir: &tempfile::TempDir) -> Config {
    let mut config = fresh_config(brokers);
    config.triggers.file = rules_file(dir);
    config.pipeline.min_update_interval_ms = 0;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_mock_cluster_each_partition_keeps_its_own_time() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = two_partition_config(cluster.bootstrap_servers(), &dir);
    let kafka = &config.kafka;
    for topic in kafka.output_topics().into_iter().chain(&kafka.input_topics) {
        if !topic.is_empty() {
            cluster.create_topic(topic, 2, 1).unwrap();
        }
    }
    let (stats, users) = through_a_broker(config, &cluster.bootstrap_servers()).await;
    check(&stats, &users);
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn through_a_real_broker_each_partition_keeps_its_own_time() {
    let broker = common::tansu::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = two_partition_config(broker.address.clone(), &dir);
    let kafka = &config.kafka;
    for topic in kafka.output_topics().into_iter().chain(&kafka.input_topics) {
        if !topic.is_empty() {
            broker.create_topic_with(topic, 2);
        }
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kafka = config.kafka.clone();
    let (stats, users) = runtime.block_on(through_a_broker(config, &broker.address));
    check(&stats, &users);
    assert!(common::schemas::validate_outputs_of(&broker.address, &kafka) > 0);
}
