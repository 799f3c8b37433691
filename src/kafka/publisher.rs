//! Publishing for replays: a producer polled by its own thread, backpressure by waiting on a
//! full queue, and the first delivery failure remembered so the replay stops on it.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::client::producer_config;
use super::sink::{headers_of, Topics};
use crate::config::KafkaConfig;
use crate::pipeline::Output;

#[derive(Default)]
pub struct Deliveries {
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, message)) = result {
            let mut first = self.first_failure.lock().expect("not poisoned");
            first.get_or_insert_with(|| format!("delivery to {} failed: {err}", message.topic()));
        }
    }
}

impl Deliveries {
    fn failure(&self) -> Option<String> {
        self.first_failure.lock().expect("not poisoned").clone()
    }
}

pub struct Publisher {
    producer: ThreadedProducer<Deliveries>,
    topics: Topics,
}

impl Publisher {
    pub fn new(kafka: &KafkaConfig, topics: Topics) -> Result<Publisher, KafkaError> {
        Ok(Publisher {
            producer: producer_config(kafka).create_with_context(Deliveries::default())?,
            topics,
        })
    }

    /// Queues `output`, waiting while the producer queue is full; fails once any earlier
    /// delivery failed.
    pub fn send(&self, output: Output) -> Result<(), String> {
        if let Some(failure) = self.producer.context().failure() {
            return Err(failure);
        }
        let topic = self.topics.of(output.destination);
        let headers = headers_of(&output);
        let mut record = BaseRecord::to(topic)
            .key(output.key.as_bytes())
            .payload(&output.payload)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((err, _)) => return Err(format!("cannot queue a message for {topic}: {err}")),
            }
        }
    }

    /// Waits for every acknowledgement; an error names the first failed delivery.
    pub fn finish(&self, timeout: Duration) -> Result<(), String> {
        self.producer.flush(timeout).map_err(|err| {
            format!(
                "outputs not acknowledged within {} ms: {err}",
                timeout.as_millis()
            )
        })?;
        self.producer.context().failure().map_or(Ok(()), Err)
    }
}
