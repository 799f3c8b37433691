//! librdkafka settings: ours first, then the operator's `[kafka.librdkafka]` table on top.

use rdkafka::config::ClientConfig;

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
