//! Publishing with backpressure: a full producer queue makes us wait for acknowledgements,
//! never drop or fail.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::offsets::Waiter;
use crate::pipeline::{Destination, Output};

/// The acknowledgement of one output, with the input messages waiting for it.
pub struct Acked {
    pub result: Result<(), String>,
    pub destination: Destination,
    pub waiters: Vec<Waiter>,
    pub cause_ts_ms: Option<i64>,
}

pub type InFlight = FuturesUnordered<BoxFuture<'static, Acked>>;

/// Output topic names by destination.
pub struct Topics {
    pub recommendations: String,
    pub similar_items: String,
    pub dead_letter: String,
    pub triggers: String,
    pub model_updates: String,
}

impl Topics {
    pub fn of(&self, destination: Destination) -> &str {
        match destination {
            Destination::Recommendations => &self.recommendations,
            Destination::SimilarItems => &self.similar_items,
            Destination::DeadLetter => &self.dead_letter,
            Destination::Triggers => &self.triggers,
            Destination::ModelUpdates => &self.model_updates,
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
/// through `on_acked` until there is room.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    output: Output,
    in_flight: &mut InFlight,
    mut on_acked: impl FnMut(Acked) -> Result<(), String>,
) -> Result<(), String> {
    let topic = topic.to_owned();
    let headers = headers_of(&output);
    let mut record = FutureRecord::to(&topic)
        .key(output.key.as_bytes())
        .payload(&output.payload)
        .headers(headers);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => {
                let (destination, waiters, cause_ts_ms) =
                    (output.destination, output.waiters, output.cause_ts_ms);
                let topic = topic.clone();
                in_flight.push(
                    delivery
                        .map(move |result| Acked {
                            result: match result {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((err, _))) => {
                                    Err(format!("delivery to {topic} failed: {err}"))
                                }
                                Err(_) => Err(format!("delivery to {topic} was cancelled")),
                            },
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
            Err((err, _)) => return Err(format!("cannot queue a message for {topic}: {err}")),
        }
    }
}
