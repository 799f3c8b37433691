//! librdkafka settings: ours first, then the operator's `[kafka.librdkafka]` table on top.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::ConsumerContext;
use rdkafka::ClientContext;

use crate::config::KafkaConfig;

fn with_overrides(mut client: ClientConfig, kafka: &KafkaConfig) -> ClientConfig {
    for (key, value) in &kafka.librdkafka {
        client.set(key, value);
    }
    client
}

/// A consumer-group member that stores offsets only when told to: an offset is stored after
/// every output its message caused is acknowledged, and auto-commit sends what is stored.
pub fn consumer_config(kafka: &KafkaConfig, group_id: &str) -> ClientConfig {
    let session = kafka.session_timeout_ms.to_string();
    let heartbeat = (kafka.session_timeout_ms / 3).max(100).to_string();
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session)
        .set("heartbeat.interval.ms", heartbeat);
    with_overrides(client, kafka)
}

/// A consumer for replays: partitions assigned by hand, ends reported, a start offset outside
/// the log an error (not a silent jump), and never a commit — set after the operator's table,
/// so no override can make a replay move a group's offsets.
pub fn replay_consumer_config(kafka: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &kafka.brokers);
    let mut client = with_overrides(client, kafka);
    client
        .set("group.id", group_id)
        .set("auto.offset.reset", "error")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    client
}

/// An idempotent producer: librdkafka retries retriable errors itself without duplicates, so a
/// delivery error that reaches us is final.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    with_overrides(client, kafka)
}

/// How many partitions `topic` has (0 when it does not exist).
pub fn partition_count<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
    topic: &str,
) -> Result<usize, rdkafka::error::KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()))
}

/// Hands a record to a blocking producer, serving its queue while the queue is full; any other
/// refusal is returned.
pub fn send_waiting<C, K, P>(
    producer: &rdkafka::producer::BaseProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'_, K, P>,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: rdkafka::producer::ProducerContext<DeliveryOpaque = ()>,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    use rdkafka::error::KafkaError::MessageProduction;
    use rdkafka::types::RDKafkaErrorCode::QueueFull;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((MessageProduction(QueueFull), back)) => {
                record = back;
                producer.poll(std::time::Duration::from_millis(10));
            }
            Err((err, _)) => return Err(err),
        }
    }
}

/// A replay's consumer: reaching a partition's end is how a replay knows it is done, not an
/// error worth a log line; everything else is logged as librdkafka reports it.
pub struct ReplayContext;

impl ClientContext for ReplayContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError::{Global, PartitionEOF};
        use rdkafka::types::RDKafkaErrorCode::PartitionEOF as Eof;
        if !matches!(error, PartitionEOF(_) | Global(Eof)) {
            tracing::error!(error = %error, reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for ReplayContext {}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    use super::*;
    use crate::config_layers;

    /// Topics compressed by a producer or by the broker (`compression.type` on a topic) are
    /// read whatever the codec: a librdkafka without one answers every fetch of such a batch
    /// with an error and never gets past it.
    #[test]
    fn the_librdkafka_we_ship_decompresses_every_kafka_codec() {
        let native = ClientConfig::new().create_native_config().unwrap();
        let features = native.get("builtin.features").unwrap();
        let built: Vec<&str> = features.split(',').collect();
        for codec in ["gzip", "snappy", "lz4", "zstd"] {
            assert!(built.contains(&codec), "no {codec} in {features}");
        }
    }

    /// The documented TLS + SASL/SCRAM example is accepted by the librdkafka we ship (one built
    /// without OpenSSL refuses `SASL_SSL` when the client is made).
    #[test]
    fn the_secure_example_makes_tls_and_scram_clients() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/secure.toml");
        let env = [
            ("STREAMREC__KAFKA__LIBRDKAFKA__SASL_PASSWORD", "s3cret"),
            // The example's CA file exists only where it is deployed.
            ("STREAMREC__KAFKA__LIBRDKAFKA__SSL_CA_LOCATION", "probe"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = config_layers::load(Some(&example), env, &[]).unwrap();
        let kafka = &config.kafka;
        assert_eq!(kafka.librdkafka["security.protocol"], "SASL_SSL");
        assert_eq!(kafka.librdkafka["sasl.password"], "s3cret");
        let consumer: Result<BaseConsumer, _> = consumer_config(kafka, "g").create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let replay: Result<BaseConsumer, _> = replay_consumer_config(kafka, "g.replay").create();
        assert!(replay.is_ok(), "{:?}", replay.err());
        let producer: Result<BaseProducer, _> = producer_config(kafka).create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}
