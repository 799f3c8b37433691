//! The Kafka edge's errors: what stops `run`, what stops a replay.

use super::sink::DeliveryError;
use crate::dead_letter::REFUSED_PREFIX_BYTES;
use crate::replay::PlanError;
use crate::store::StoreError;
use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}; stopping without committing past it")]
    Delivery(#[from] DeliveryError),
    #[error("the dead-letter topic {topic} refused even a {REFUSED_PREFIX_BYTES}-byte replacement of a refused message ({code}); check its max.message.bytes; stopping without committing past it")]
    DeadLetterUnusable { topic: String, code: String },
    #[error(
        "outputs of {open} messages were not acknowledged within the drain time of {drain_ms} ms"
    )]
    DrainTimeout { open: usize, drain_ms: u64 },
    #[error("consumed topics do not exist after waiting {waited_ms} ms: {}; create them (or fix kafka.input_topics / kafka.catalog_topic)", .topics.join(", "))]
    MissingTopics { topics: Vec<String>, waited_ms: u64 },
    #[error("{topic}/{partition}: the state has applied this partition up to offset {}, but its log ends before that: the topic was recreated or the broker lost data. Stopping rather than skip the new log's messages as already applied. To keep what was learned and read the log from its start: `streamrec state forget-offsets --state-dir <state.dir>`; to start over: an empty state dir", .next - 1)]
    StateAheadOfLog {
        topic: String,
        partition: i32,
        next: i64,
    },
    #[error("a message of {topic}, which run does not consume (a bug: please report it)")]
    UnknownTopic { topic: String },
    #[error("a pipeline worker stopped unexpectedly: {0}")]
    Worker(String),
    #[error("cannot start the admin listener: {0}")]
    Admin(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}; the replay stopped")]
    Delivery(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}
