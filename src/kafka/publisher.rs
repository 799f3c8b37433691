//! Publishing for replays, through the same path as `run`'s workers (`sink::send`): a full
//! producer queue waits for acknowledgements, a message refused for what it is (too large, an
//! invalid record) is replaced by a dead letter, and any other delivery failure stops the
//! replay. The replay's engine thread is not async: the publisher waits on a small runtime of
//! its own (so `replay` must not be called from async code).

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::producer::{FutureProducer, Producer};

use super::client::producer_config;
use super::error::PublishError;
use super::sink::{send, Acked, DeliveryError, InFlight, Topics};
use crate::config::KafkaConfig;
use crate::dead_letter::{self, Refused};
use crate::pipeline::Output;

pub struct Publisher {
    producer: FutureProducer,
    topics: Topics,
    /// The input topics, to name a refused output's source.
    inputs: Vec<String>,
    in_flight: InFlight,
    /// Outputs their topic refused: dead letters take their place.
    refused: Vec<Refused>,
    runtime: tokio::runtime::Runtime,
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        topics: Topics,
        inputs: Vec<String>,
    ) -> Result<Publisher, PublishError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(PublishError::Runtime)?;
        Ok(Publisher {
            producer: producer_config(kafka).create()?,
            topics,
            inputs,
            in_flight: InFlight::new(),
            refused: Vec::new(),
            runtime,
        })
    }

    /// Queues `output` (and a dead letter for each output refused meanwhile), waiting while
    /// the producer queue is full; fails once any delivery failed.
    pub fn send(&mut self, output: Output) -> Result<(), PublishError> {
        let Publisher {
            producer,
            topics,
            inputs,
            in_flight,
            refused,
            runtime,
        } = self;
        while let Some(Some(acked)) = in_flight.next().now_or_never() {
            on_acked(refused, acked)?;
        }
        let mut queue = vec![output];
        runtime.block_on(async {
            loop {
                for refused in refused.drain(..) {
                    queue.push(replacement(refused, inputs)?);
                }
                let Some(mut output) = queue.pop() else {
                    return Ok(());
                };
                topics.frame(&mut output);
                let topic = topics.of(output.destination);
                let sent = send(producer, topic, output, in_flight, |acked| {
                    on_acked(refused, acked)
                })
                .await;
                match sent {
                    Err(PublishError::Delivery(DeliveryError::Refused(r))) => refused.push(*r),
                    other => other?,
                }
            }
        })
    }

    /// Waits for every acknowledgement (and for the dead letters that replace refused
    /// messages); an error names the first failed delivery.
    pub fn finish(&mut self, timeout: Duration) -> Result<(), PublishError> {
        loop {
            self.producer
                .flush(timeout)
                .map_err(|source| PublishError::Unacknowledged {
                    timeout_ms: timeout.as_millis() as u64,
                    source,
                })?;
            // A flush returns once every delivery report is served: no acknowledgement waits.
            let (in_flight, refused) = (&mut self.in_flight, &mut self.refused);
            self.runtime.block_on(async {
                while let Some(acked) = in_flight.next().await {
                    on_acked(refused, acked)?;
                }
                Ok::<_, PublishError>(())
            })?;
            let Some(refused) = self.refused.pop() else {
                return Ok(());
            };
            self.send(replacement(refused, &self.inputs)?)?;
        }
    }
}

fn on_acked(refused: &mut Vec<Refused>, acked: Acked) -> Result<(), PublishError> {
    match acked.result {
        Ok(()) => Ok(()),
        Err(DeliveryError::Refused(r)) => {
            refused.push(*r);
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// The dead letter that takes a refused output's place.
fn replacement(refused: Refused, inputs: &[String]) -> Result<Output, PublishError> {
    let (topic, code) = (refused.topic.clone(), refused.code.clone());
    tracing::warn!(%topic, %code, key = %refused.key, "output refused by its topic; publishing a dead letter in its place");
    dead_letter::refused_output(refused, inputs)
        .ok_or(PublishError::DeadLetterUnusable { topic, code })
}
