//! Inputs from a transactional producer (Kafka Streams or Flink with exactly-once, any client
//! with a `transactional.id`), on a real broker: every commit leaves an offset no consumer
//! receives, its marker. `run` learns every event and crosses those gaps in the log as they come:
//! it does not seek back to the offset it expected at each one (a fetch round-trip per
//! transaction, about half a second each on this broker, and a warning each).
//!
//! Aborted transactions are not produced here: Tansu 0.6 hands their records to read_committed
//! consumers (it lists no aborted transactions in its fetch answers), where Kafka's brokers let
//! librdkafka drop them. `#[ignore]`d without a broker; `.ci/run` runs them.

mod common;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::tansu::{applied, start_run, state_config, strip_ansi, terminate, Broker};
use common::{committed, read_topic, unique, wait_until};

const TRANSACTIONS: usize = 20;
const EVENTS_PER_TRANSACTION: usize = 5;

fn user_of(transaction: usize) -> String {
    format!("checkout-{transaction}")
}

fn produce_in_transactions(brokers: &str, topic: &str) {
    let timeout = Duration::from_secs(30);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", unique("shop-checkout"))
        .create()
        .expect("a transactional producer");
    producer.init_transactions(timeout).unwrap();
    for transaction in 0..TRANSACTIONS {
        producer.begin_transaction().unwrap();
        let user = user_of(transaction);
        for n in 0..EVENTS_PER_TRANSACTION {
            let ts = 1_700_000_000_000i64 + (transaction * EVENTS_PER_TRANSACTION + n) as i64;
            let item = format!("item-{}", (transaction + n) % 7);
            let event =
                format!(r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#);
            producer
                .send(BaseRecord::to(topic).key(&user).payload(&event))
                .unwrap();
        }
        producer.commit_transaction(timeout).unwrap();
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn events_in_transactions_are_learned_and_their_markers_cost_no_seek() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, group) = (unique("checkout"), unique("tx"));
    broker.create_topic_with(&input, 1);
    for suffix in ["recs", "similar", "dead", "online"] {
        broker.create_topic_with(&format!("tx-{suffix}"), 1);
    }
    produce_in_transactions(&broker.address, &input);
    let events = TRANSACTIONS * EVENTS_PER_TRANSACTION;
    let delivered = read_topic(&broker.address, &input, 1, events, Duration::from_secs(3));
    let offsets: Vec<i64> = delivered.iter().map(|m| m.offset).collect();
    assert_eq!(delivered.len(), events);
    let end = offsets.iter().max().unwrap() + 1;
    assert!(
        end as usize >= events + TRANSACTIONS - 1,
        "a marker after each transaction: {offsets:?}"
    );

    let config = state_config(dir.path(), &broker, "tx", &input, &group);
    let run = start_run(&config);
    wait_until("the commits reach the end", Duration::from_secs(60), || {
        committed(&broker.address, &group, &input, 1) == [end]
    });
    let printed = terminate(run);
    assert_eq!(applied(&printed), events as u64);

    let log = strip_ansi(&std::fs::read_to_string(config.with_extension("log")).unwrap());
    let seeks: Vec<&str> = log.lines().filter(|l| l.contains("seeking")).collect();
    assert!(seeks.is_empty(), "a fresh group needs no seek: {seeks:#?}");
    let recs = read_topic(
        &broker.address,
        "tx-recs",
        1,
        usize::MAX,
        Duration::from_secs(3),
    );
    for user in (0..TRANSACTIONS).map(user_of) {
        assert!(
            recs.iter().any(|r| r.key == user),
            "recommendations for {user}"
        );
    }
    assert!(common::schemas::validate_named(&broker.address, "tx") > 0);
}
