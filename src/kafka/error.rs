//! The Kafka edge's errors: what stops `run`, what stops a replay, and whether trying again
//! can help.

use std::path::PathBuf;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::changelog::ChangelogError;
use super::sink::DeliveryError;
use crate::dead_letter::REFUSED_PREFIX_BYTES;
use crate::replay_plan::PlanError;
use crate::store::StoreError;

/// What a stopped `run` needs before it can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The brokers or the network: a restart (an orchestrator's, say) may be all it takes.
    Transient,
    /// A setting, a topic, the state dir or a bug: an operator has to act first.
    Fatal,
}

/// Why `run` stopped.
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
    #[error("{topic}/{partition}: the state has applied this partition up to offset {}, but its log ends before that (next offset {log_end}): the topic was recreated or the broker lost data. Stopping rather than skip the new log's messages as already applied. To keep what was learned and read the log from its start: `streamrec state forget-offsets --state-dir <state.dir>`; to start over: an empty state dir", .next - 1)]
    StateAheadOfLog {
        topic: String,
        partition: i32,
        next: i64,
        log_end: i64,
    },
    #[error("a message of {topic}, which run does not consume (a bug: please report it)")]
    UnknownTopic { topic: String },
    #[error(
        "the model updates topic {topic} does not exist; create it (partitions as the input's)"
    )]
    ModelUpdatesTopicMissing { topic: String },
    #[error("{key} {topic} has {has} partitions, items.work_topic {work} has {needed}: create it compacted with as many (the owner of work partition p writes to its partition p)")]
    ItemTopicsMismatch {
        key: &'static str,
        topic: String,
        work: String,
        has: usize,
        needed: usize,
    },
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the {0} thread panicked (a bug: please report it)")]
    ThreadPanicked(&'static str),
    #[error("the changelog topic {topic} has {partitions} partitions, the input {input} has {needed}: create it compacted with at least as many")]
    ChangelogTooSmall {
        topic: String,
        partitions: usize,
        input: String,
        needed: usize,
    },
    #[error("restoring partition {} from the changelog", .0.partition())]
    Restore(#[source] ChangelogError),
    #[error("writing the changelog: {0}")]
    Changelog(#[source] KafkaError),
    #[error("a pipeline worker stopped {when}")]
    WorkerGone { when: &'static str },
    /// Another worker failed during a checkpoint round: its error is the cause.
    #[error(transparent)]
    Abandoned(#[from] crate::runtime::rounds::Abandoned),
    #[error("a task of run panicked (a bug: please report it)")]
    Panicked(#[source] tokio::task::JoinError),
    #[error("cannot start the admin listener: {0}")]
    Admin(#[source] std::io::Error),
    #[error("cannot start the query listener: {0}")]
    Query(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl RunError {
    /// Whether trying again may succeed without an operator.
    pub fn retry(&self) -> Retry {
        match self {
            RunError::Kafka(err) | RunError::Changelog(err) => kafka_retry(err),
            RunError::Delivery(DeliveryError::Failed { source, .. }) => kafka_retry(source),
            RunError::Restore(err) if !err.is_transient() => Retry::Fatal,
            RunError::Delivery(_)
            | RunError::DrainTimeout { .. }
            | RunError::Restore(_)
            | RunError::Abandoned(_) => Retry::Transient,
            RunError::DeadLetterUnusable { .. }
            | RunError::MissingTopics { .. }
            | RunError::StateAheadOfLog { .. }
            | RunError::UnknownTopic { .. }
            | RunError::ModelUpdatesTopicMissing { .. }
            | RunError::ChangelogTooSmall { .. }
            | RunError::ItemTopicsMismatch { .. }
            | RunError::ThreadPanicked(_)
            | RunError::Thread(_)
            | RunError::WorkerGone { .. }
            | RunError::Panicked(_)
            | RunError::Admin(_)
            | RunError::Query(_)
            | RunError::Store(_)
            | RunError::Config(_) => Retry::Fatal,
        }
    }
}

/// librdkafka's code for an error (e.g. `NotImplemented`), as a metric label; `other` for
/// an error that carries none.
pub fn error_code(err: &KafkaError) -> String {
    err.rdkafka_error_code()
        .map_or_else(|| "other".to_owned(), |code| format!("{code:?}"))
}

/// Refused credentials or permissions, and topics that do not exist, need an operator;
/// anything else librdkafka gave up on (timeouts, the network) may pass.
fn kafka_retry(err: &KafkaError) -> Retry {
    let needs_an_operator = [
        RDKafkaErrorCode::TopicAuthorizationFailed,
        RDKafkaErrorCode::GroupAuthorizationFailed,
        RDKafkaErrorCode::ClusterAuthorizationFailed,
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        RDKafkaErrorCode::SaslAuthenticationFailed,
        RDKafkaErrorCode::Authentication,
        RDKafkaErrorCode::UnknownTopic,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::InvalidConfig,
        RDKafkaErrorCode::InvalidArgument,
    ];
    match err.rdkafka_error_code() {
        Some(code) if needs_an_operator.contains(&code) => Retry::Fatal,
        _ => Retry::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_code_names_librdkafkas_code() {
        let undecodable = KafkaError::MessageConsumption(RDKafkaErrorCode::NotImplemented);
        assert_eq!(error_code(&undecodable), "NotImplemented");
        assert_eq!(error_code(&KafkaError::Canceled), "other");
    }

    #[test]
    fn refusals_of_credentials_and_state_need_an_operator_timeouts_do_not() {
        let denied = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        let failed = |source| {
            RunError::Delivery(DeliveryError::Failed {
                topic: "recommendations".into(),
                source,
            })
        };
        assert_eq!(failed(denied).retry(), Retry::Fatal);
        assert_eq!(failed(timeout).retry(), Retry::Transient);
        let state = RunError::StateAheadOfLog {
            topic: "events".into(),
            partition: 0,
            next: 300,
            log_end: 12,
        };
        assert_eq!(state.retry(), Retry::Fatal);
        assert_eq!(
            RunError::DrainTimeout {
                open: 1,
                drain_ms: 10
            }
            .retry(),
            Retry::Transient
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{} is the live state dir (state.dir in the config); replay into a new one", .dir.display())]
    LiveStateDir { dir: PathBuf },
    #[error("state dir {} already holds state; a replay builds a fresh one: give a new dir", .dir.display())]
    StateDirNotEmpty { dir: PathBuf },
    #[error("input topic {topic} does not exist on {brokers}")]
    MissingTopic { topic: String, brokers: String },
    #[error("the broker gave no offset for time {ms} in {topic}/{partition}")]
    NoOffsetForTime {
        topic: String,
        partition: i32,
        ms: i64,
    },
    #[error("the start offset of {topic}/{partition} is not in its log: {source}")]
    StartNotInLog {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("cannot read {topic}/{partition} on its own")]
    NoPartitionQueue { topic: String, partition: i32 },
    #[error("a message of {topic}/{partition} arrived outside its partition queue")]
    StrayMessage { topic: String, partition: i32 },
    #[error("the reading thread of the replay panicked")]
    ReaderPanicked,
    #[error("{0}; the replay stopped")]
    Publish(#[from] PublishError),
}

/// Why a replay's outputs could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("outputs not acknowledged within {timeout_ms} ms: {source}")]
    Unacknowledged { timeout_ms: u64, source: KafkaError },
    #[error("cannot create the replay's producer: {0}")]
    Client(#[from] KafkaError),
    #[error("cannot start the runtime that waits for acknowledgements: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the dead-letter topic {topic} refused even a replacement of a refused message ({code}); check its max.message.bytes")]
    DeadLetterUnusable { topic: String, code: String },
}
