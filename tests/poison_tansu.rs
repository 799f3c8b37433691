//! An input larger than any producer forwards by default (librdkafka's `message.max.bytes` is
//! 1 MB) never stops `run`, on a real broker (Tansu accepts it from a shop's producer): its dead
//! letter goes out as a marked prefix, the next event gets its recommendation, and the committed
//! offsets pass both. `#[ignore]`d without a broker; `.ci/run` runs them.

mod common;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::tansu::{state_config, Broker};
use common::{committed, fresh_config, read_topic, run_for, Read};

/// A 1.2 MB JSON event, as a shop's client with a raised `message.max.bytes` sends it.
fn oversized_event() -> Vec<u8> {
    let pad = "x".repeat(1_200_000);
    format!(r#"{{"type":"view","user_id":"big","item_id":"i","ts":1700000000000,"pad":"{pad}"}}"#)
        .into_bytes()
}

fn valid_event() -> Vec<u8> {
    br#"{"type":"view","user_id":"after","item_id":"i2","ts":1700000001000}"#.to_vec()
}

fn produce_large(brokers: &str, topic: &str, messages: &[(&str, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "5000000")
        .create()
        .unwrap();
    for (key, payload) in messages {
        producer
            .send(BaseRecord::to(topic).key(*key).payload(payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

struct Outcome {
    dead: Vec<Read>,
    recommended: Vec<String>,
    committed: Vec<i64>,
    total_size: String,
}

/// Runs `run` over the oversized event and a valid one on a one-partition input.
fn run_over_oversized(tune: impl FnOnce(&mut streamrec::config::Config)) -> Outcome {
    let broker = Broker::start();
    let mut config = fresh_config(broker.address.clone());
    tune(&mut config);
    let kafka = &config.kafka;
    let input = kafka.input_topics[0].clone();
    broker.create_topic_with(&input, 1);
    for topic in [
        &kafka.recommendations_topic,
        &kafka.similar_items_topic,
        &kafka.dead_letter_topic,
    ] {
        broker.create_topic_with(topic, 1);
    }
    let big = oversized_event();
    let total_size = big.len().to_string();
    produce_large(
        &broker.address,
        &input,
        &[("big", big), ("after", valid_event())],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime.block_on(run_for(&config, 2, Duration::from_secs(2)));
    assert_eq!(report.stats().rejected.get("payload_too_large"), Some(&1));
    let quiet = Duration::from_secs(5);
    let dead = read_topic(&broker.address, &kafka.dead_letter_topic, 1, 1, quiet);
    let recs = read_topic(&broker.address, &kafka.recommendations_topic, 1, 1, quiet);
    assert!(common::schemas::validate_outputs_of(&broker.address, kafka) >= 2);
    Outcome {
        dead,
        recommended: recs.iter().map(|r| r.key.clone()).collect(),
        committed: committed(&broker.address, &kafka.group_id, &input, 1),
        total_size,
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn an_oversized_event_becomes_a_marked_prefix_and_the_next_event_is_processed() {
    let outcome = run_over_oversized(|_| {});
    assert_eq!(outcome.dead.len(), 1);
    let dead = &outcome.dead[0];
    assert_eq!(dead.headers["streamrec-reason"], "payload_too_large");
    assert_eq!(dead.headers["streamrec-truncated"], "true");
    assert_eq!(dead.headers["streamrec-original-size"], outcome.total_size);
    assert_eq!(dead.headers["source-offset"], "0");
    assert_eq!(dead.payload, oversized_event()[..256 * 1024]);
    assert_eq!(outcome.recommended, ["after"]);
    assert_eq!(outcome.committed, [2], "offsets pass both inputs");
}

/// With the dead-letter bound set above the producer's limit, the producer refuses the dead
/// letter; a short prefix naming the refusal takes its place. The consumer's fetch limits are
/// set below the message's size too: librdkafka still returns a message larger than them.
#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_dead_letter_the_producer_refuses_is_replaced_and_fetch_limits_do_not_block() {
    let outcome = run_over_oversized(|config| {
        config.pipeline.dead_letter_max_bytes = 2_000_000;
        let librdkafka = &mut config.kafka.librdkafka;
        librdkafka.insert("fetch.max.bytes".into(), "1000000".into());
        librdkafka.insert("max.partition.fetch.bytes".into(), "300000".into());
    });
    assert_eq!(outcome.dead.len(), 1);
    let dead = &outcome.dead[0];
    assert_eq!(dead.headers["streamrec-reason"], "payload_too_large");
    assert_eq!(dead.headers["streamrec-truncated"], "true");
    assert_eq!(dead.headers["streamrec-original-size"], outcome.total_size);
    assert!(dead.headers["streamrec-refused-topic"].starts_with("dead-"));
    assert_eq!(
        dead.payload.len(),
        streamrec::dead_letter::REFUSED_PREFIX_BYTES
    );
    assert_eq!(outcome.recommended, ["after"]);
    assert_eq!(outcome.committed, [2]);
}

/// A replay publishes through the same path as `run`: with `--output live`, the dead letter of
/// the oversized event is refused by the producer and replaced by the short prefix, and the
/// replay goes on to the next event's recommendation.
#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_replay_replaces_a_refused_dead_letter_as_run_does() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let name = common::unique("replayed");
    let input = format!("{name}-events");
    for topic in [&input, &format!("{name}-recs"), &format!("{name}-dead")] {
        broker.create_topic_with(topic, 1);
    }
    broker.create_topic_with(&format!("{name}-similar"), 1);
    produce_large(
        &broker.address,
        &input,
        &[("big", oversized_event()), ("after", valid_event())],
    );
    let config = state_config(dir.path(), &broker, &name, &input, &common::unique("group"));
    let out = common::tansu::streamrec()
        .args(["replay", "--quiet", "--output", "live", "--yes"])
        .args(["--set", "pipeline.dead_letter_max_bytes=2000000"])
        .args(["--config", config.to_str().unwrap()])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let quiet = Duration::from_secs(5);
    let dead = read_topic(&broker.address, &format!("{name}-dead"), 1, 1, quiet);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["streamrec-reason"], "payload_too_large");
    assert!(dead[0].headers["streamrec-refused-topic"].starts_with(&name));
    assert_eq!(
        dead[0].payload.len(),
        streamrec::dead_letter::REFUSED_PREFIX_BYTES
    );
    let recs = read_topic(&broker.address, &format!("{name}-recs"), 1, 1, quiet);
    assert_eq!(
        recs.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["after"]
    );
}
