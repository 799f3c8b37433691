//! Inputs compressed with any of Kafka's codecs are read, on a real broker: a shop's producer
//! (or the topic's own `compression.type`) picks the codec, not streamrec. A librdkafka built
//! without one answers every fetch of such a batch with an error and never gets past it.
//! `#[ignore]`d without a broker; `.ci/run` runs them.

mod common;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::tansu::Broker;
use common::{committed, fresh_config, read_topic, run_for};

const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];
const EVENTS_PER_CODEC: usize = 5;

/// One batch per codec: each codec's producer flushes before the next one sends.
fn produce_with_every_codec(brokers: &str, topic: &str) {
    for (batch, codec) in CODECS.iter().enumerate() {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("compression.type", *codec)
            .set("linger.ms", "50")
            .create()
            .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
        for n in 0..EVENTS_PER_CODEC {
            let user = format!("{codec}-{n}");
            let ts = 1_700_000_000_000i64 + (batch * EVENTS_PER_CODEC + n) as i64;
            let event =
                format!(r#"{{"type":"view","user_id":"{user}","item_id":"item-{n}","ts":{ts}}}"#);
            producer
                .send(BaseRecord::to(topic).key(&user).payload(&event))
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn inputs_compressed_with_every_kafka_codec_are_learned_and_committed() {
    let broker = Broker::start();
    let config = fresh_config(broker.address.clone());
    let kafka = &config.kafka;
    let input = kafka.input_topics[0].clone();
    for topic in [
        &input,
        &kafka.recommendations_topic,
        &kafka.similar_items_topic,
        &kafka.dead_letter_topic,
    ] {
        broker.create_topic_with(topic, 1);
    }
    produce_with_every_codec(&broker.address, &input);
    let total = (CODECS.len() * EVENTS_PER_CODEC) as u64;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let run = run_for(&config, total, Duration::from_secs(2));
    let report = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), run).await })
        .expect("every compressed input is consumed within a minute");
    let stats = report.stats();
    assert_eq!(stats.consumed, total);
    assert_eq!(stats.applied, total);
    assert_eq!(stats.rejected_total(), 0);

    let quiet = Duration::from_secs(5);
    let recs = read_topic(
        &broker.address,
        &kafka.recommendations_topic,
        1,
        total as usize,
        quiet,
    );
    for codec in CODECS {
        assert!(
            recs.iter().any(|r| r.key.starts_with(codec)),
            "a recommendation for a user whose events came {codec}-compressed"
        );
    }
    assert!(common::schemas::validate_outputs_of(&broker.address, kafka) >= CODECS.len());
    let offsets = committed(&broker.address, &kafka.group_id, &input, 1);
    assert_eq!(offsets, [total as i64], "offsets pass every batch");
}
