//! Whether a partition's log still holds an offset, found by fetching it. `run` asks when the
//! listed end (ListOffsets) is before where its state ends: on Kafka that means the log was
//! recreated or lost data, but some brokers list an end behind what they serve, and stopping
//! `run` on their word would be a false alarm.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{replay_consumer_config, ReplayContext};
use crate::config::KafkaConfig;

/// How long a check waits for the broker's answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    Yes,
    /// The fetch at the offset was out of range or at the log's end.
    No,
    /// No answer in time (not even at the log's start), or no consumer could be made.
    Unknown,
}

/// Fetches `offset` of `topic`/`partition` with a consumer of its own (blocking: run it off the
/// async threads). A fetch past the end is out of range on Kafka, and on some brokers answers
/// nothing at all: then a fetch at the log's listed start tells a log that ends before
/// `offset` (it answers) from a broker that does not answer.
pub fn log_holds(
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
    log_start: i64,
) -> Holds {
    let fetched = consumer(kafka).and_then(|consumer| {
        Ok(match fetch_at(&consumer, topic, partition, offset)? {
            Fetched::Message => Holds::Yes,
            Fetched::End => Holds::No,
            Fetched::Nothing => match fetch_at(&consumer, topic, partition, log_start)? {
                Fetched::Message | Fetched::End => Holds::No,
                Fetched::Nothing => Holds::Unknown,
            },
        })
    });
    fetched.unwrap_or_else(|err| {
        tracing::warn!(topic, partition, offset, error = %err, "cannot check the log by a fetch");
        Holds::Unknown
    })
}

enum Fetched {
    Message,
    /// At the end, or out of range.
    End,
    Nothing,
}

fn consumer(kafka: &KafkaConfig) -> Result<BaseConsumer<ReplayContext>, KafkaError> {
    let group = format!("{}.log-check", kafka.group_id);
    replay_consumer_config(kafka, &group).create_with_context(ReplayContext)
}

fn fetch_at(
    consumer: &BaseConsumer<ReplayContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Fetched, KafkaError> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    while started.elapsed() < CHECK_TIMEOUT {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.offset() >= offset => return Ok(Fetched::Message),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(Fetched::End),
            Some(Err(err))
                if err.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) =>
            {
                return Ok(Fetched::End)
            }
            Some(Err(err)) => {
                tracing::debug!(topic, partition, error = %err, "log check: consumer error")
            }
            Some(Ok(_)) | None => {}
        }
    }
    Ok(Fetched::Nothing)
}
