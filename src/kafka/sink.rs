//! Publishing with backpressure: a full producer queue makes us wait for acknowledgements,
//! never drop or fail. A delivery error says whether it refuses one message (a dead letter
//! takes its place) or fails the destination (the pipeline stops).

use std::time::Duration;

use futures::channel::oneshot::Canceled;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::clean::schema_registry_framed;
use crate::config::OutputSchemaIds;
use crate::dead_letter::{self, Refused};
use crate::offsets::Waiter;
use crate::pipeline::{Destination, Output};

/// The acknowledgement of one output, with the input messages waiting for it.
pub struct Acked {
    pub result: Result<(), DeliveryError>,
    pub destination: Destination,
    pub waiters: Vec<Waiter>,
    pub cause_ts_ms: Option<i64>,
}

/// Why an output was not delivered, split by what it means for the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Refused for what the message is (too large, an invalid record): this message only, the
    /// others go on; a dead letter takes its place.
    #[error("{} refused a message: {}", .0.topic, .0.code)]
    Refused(Box<Refused>),
    /// The destination or the brokers failed (authorization, unknown topic, the message timeout
    /// passed): no later offset may be committed, so the pipeline stops. Not retriable here:
    /// librdkafka's idempotent producer already retried what it could.
    #[error("delivery to {topic} failed: {source}")]
    Failed { topic: String, source: KafkaError },
    #[error("delivery to {topic} was cancelled (the producer closed)")]
    Cancelled { topic: String },
}

/// The stable code of an error that refuses one message for what it is; None for errors of the
/// destination or the connection.
pub fn refusal_code(err: &KafkaError) -> Option<&'static str> {
    let KafkaError::MessageProduction(code) = err else {
        return None;
    };
    Some(match code {
        RDKafkaErrorCode::MessageSizeTooLarge => "msg_size_too_large",
        RDKafkaErrorCode::MessageBatchTooLarge => "record_list_too_large",
        RDKafkaErrorCode::InvalidMessageSize => "invalid_message_size",
        RDKafkaErrorCode::InvalidMessage => "corrupt_message",
        RDKafkaErrorCode::InvalidRecord => "invalid_record",
        RDKafkaErrorCode::BadMessage => "bad_message",
        _ => return None,
    })
}

/// A message the producer handed back, as a refusal (the headers a dead letter can carry are
/// kept; others are ours to drop).
pub(super) fn refused_message(
    destination: Destination,
    topic: &str,
    message: &impl Message,
    waiters: Vec<Waiter>,
    code: &str,
) -> Refused {
    let mut headers = Vec::new();
    if let Some(owned) = message.headers() {
        for header in owned.iter() {
            let known = dead_letter::HEADERS
                .iter()
                .find(|&&name| name == header.key);
            if let (Some(&name), Some(value)) = (known, header.value) {
                headers.push((name, String::from_utf8_lossy(value).into_owned()));
            }
        }
    }
    Refused {
        destination,
        topic: topic.to_owned(),
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
        waiters,
        code: code.to_owned(),
    }
}

fn acked_result(
    result: Result<Result<Delivery, (KafkaError, OwnedMessage)>, Canceled>,
    destination: Destination,
    topic: &str,
    waiters: &mut Vec<Waiter>,
) -> Result<(), DeliveryError> {
    match result {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((err, message))) => match refusal_code(&err) {
            Some(code) => {
                let waiters = std::mem::take(waiters);
                let refused = refused_message(destination, topic, &message, waiters, code);
                Err(DeliveryError::Refused(Box::new(refused)))
            }
            None => Err(DeliveryError::Failed {
                topic: topic.to_owned(),
                source: err,
            }),
        },
        Err(Canceled) => Err(DeliveryError::Cancelled {
            topic: topic.to_owned(),
        }),
    }
}

pub type InFlight = FuturesUnordered<BoxFuture<'static, Acked>>;

/// Output topic names by destination.
pub struct Topics {
    pub recommendations: String,
    pub similar_items: String,
    pub dead_letter: String,
    pub triggers: String,
    pub model_updates: String,
    pub item_work: String,
    pub schema_ids: OutputSchemaIds,
}

impl Topics {
    /// `output` as its topic's consumers read it: in Confluent's wire format where the topic
    /// has a schema id (`kafka.schema_ids`).
    pub fn frame(&self, output: &mut Output) {
        let ids = &self.schema_ids;
        let id = match output.destination {
            Destination::Recommendations => ids.recommendations,
            Destination::SimilarItems => ids.similar_items,
            Destination::Triggers => ids.triggers,
            _ => 0,
        };
        if id != 0 {
            output.payload = schema_registry_framed(id, &output.payload);
        }
    }

    pub fn of(&self, destination: Destination) -> &str {
        match destination {
            Destination::Recommendations => &self.recommendations,
            Destination::SimilarItems => &self.similar_items,
            Destination::DeadLetter => &self.dead_letter,
            Destination::Triggers => &self.triggers,
            Destination::ModelUpdates => &self.model_updates,
            Destination::ItemWork { .. } => &self.item_work,
        }
    }
}

/// An output's headers as Kafka headers.
pub fn headers_of(output: &Output) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &output.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

/// Queues `output` for `topic`; while the producer queue is full, handles acknowledgements
/// through `on_acked` until there is room. A message refused on the spot (larger than the
/// producer's `message.max.bytes`) comes back as `DeliveryError::Refused`.
pub async fn send<E: From<DeliveryError>>(
    producer: &FutureProducer,
    topic: &str,
    output: Output,
    in_flight: &mut InFlight,
    mut on_acked: impl FnMut(Acked) -> Result<(), E>,
) -> Result<(), E> {
    let topic = topic.to_owned();
    let headers = headers_of(&output);
    let mut record = FutureRecord::to(&topic)
        .key(output.key.as_bytes())
        .payload(&output.payload)
        .headers(headers);
    if let Destination::ItemWork { partition } = output.destination {
        record = record.partition(partition);
    }
    let err = loop {
        match producer.send_result(record) {
            Ok(delivery) => {
                let (destination, mut waiters, cause_ts_ms) =
                    (output.destination, output.waiters, output.cause_ts_ms);
                in_flight.push(
                    delivery
                        .map(move |result| Acked {
                            result: acked_result(result, destination, &topic, &mut waiters),
                            destination,
                            waiters,
                            cause_ts_ms,
                        })
                        .boxed(),
                );
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                match in_flight.next().await {
                    Some(acked) => on_acked(acked)?,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            Err((err, _)) => break err,
        }
    };
    let Some(code) = refusal_code(&err) else {
        return Err(DeliveryError::Failed { topic, source: err }.into());
    };
    let refused = Refused {
        destination: output.destination,
        topic,
        key: output.key,
        payload: output.payload,
        headers: output.headers,
        waiters: output.waiters,
        code: code.to_owned(),
    };
    Err(DeliveryError::Refused(Box::new(refused)).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(destination: Destination) -> Output {
        Output {
            destination,
            key: "u1".into(),
            payload: b"{}".to_vec(),
            headers: Vec::new(),
            waiters: Vec::new(),
            cause_ts_ms: None,
        }
    }

    #[test]
    fn only_outputs_of_a_topic_with_a_schema_id_are_framed() {
        let topics = Topics {
            recommendations: "recs".into(),
            similar_items: "similar".into(),
            dead_letter: "dead".into(),
            triggers: "triggers".into(),
            model_updates: String::new(),
            item_work: String::new(),
            schema_ids: OutputSchemaIds {
                recommendations: 7,
                similar_items: 0,
                triggers: 258,
                online_metrics: 9,
            },
        };
        let framed = |destination| {
            let mut output = output(destination);
            topics.frame(&mut output);
            output.payload
        };
        assert_eq!(framed(Destination::Recommendations), b"\0\0\0\0\x07{}");
        assert_eq!(framed(Destination::Triggers), b"\0\0\0\x01\x02{}");
        assert_eq!(framed(Destination::SimilarItems), b"{}");
        assert_eq!(
            framed(Destination::DeadLetter),
            b"{}",
            "the input as it came"
        );
    }

    #[test]
    fn refusals_of_one_message_are_told_from_failures_of_the_destination() {
        let production = KafkaError::MessageProduction;
        for (code, name) in [
            (RDKafkaErrorCode::MessageSizeTooLarge, "msg_size_too_large"),
            (RDKafkaErrorCode::InvalidRecord, "invalid_record"),
            (
                RDKafkaErrorCode::MessageBatchTooLarge,
                "record_list_too_large",
            ),
        ] {
            assert_eq!(refusal_code(&production(code)), Some(name));
        }
        for code in [
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert_eq!(refusal_code(&production(code)), None, "{code:?}");
        }
        assert_eq!(refusal_code(&KafkaError::Canceled), None);
    }
}
