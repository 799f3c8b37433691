//! Publishing for replays: a producer polled by its own thread, backpressure by waiting on a
//! full queue, and the first delivery failure remembered so the replay stops on it. A message
//! refused for what it is (too large, an invalid record) is replaced by a dead letter, as in `run`.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::client::producer_config;
use super::error::PublishError;
use super::sink::{headers_of, refusal_code, refused_message, DeliveryError, Topics};
use crate::config::KafkaConfig;
use crate::dead_letter::{self, Refused};
use crate::pipeline::Output;

pub struct Deliveries {
    topics: Topics,
    /// The first delivery that failed (not for what the message is): topic and error.
    first_failure: Mutex<Option<(String, KafkaError)>>,
    refused: Mutex<Vec<Refused>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let Err((err, message)) = result else {
            return;
        };
        let topic = message.topic();
        match refusal_code(err) {
            Some(code) => {
                let destination = self.topics.destination_of(topic);
                let refused = refused_message(destination, topic, message, Vec::new(), code);
                self.refused.lock().expect("not poisoned").push(refused);
            }
            None => {
                let mut first = self.first_failure.lock().expect("not poisoned");
                first.get_or_insert_with(|| (topic.to_owned(), err.clone()));
            }
        }
    }
}

impl Deliveries {
    fn failure(&self) -> Result<(), PublishError> {
        match self.first_failure.lock().expect("not poisoned").clone() {
            None => Ok(()),
            Some((topic, source)) => Err(DeliveryError::Failed { topic, source }.into()),
        }
    }

    fn take_refused(&self) -> Vec<Refused> {
        std::mem::take(&mut *self.refused.lock().expect("not poisoned"))
    }
}

pub struct Publisher {
    producer: ThreadedProducer<Deliveries>,
    /// The input topics, to name a refused output's source.
    inputs: Vec<String>,
}

impl Publisher {
    pub fn new(
        kafka: &KafkaConfig,
        topics: Topics,
        inputs: Vec<String>,
    ) -> Result<Publisher, KafkaError> {
        let deliveries = Deliveries {
            topics,
            first_failure: Mutex::default(),
            refused: Mutex::default(),
        };
        Ok(Publisher {
            producer: producer_config(kafka).create_with_context(deliveries)?,
            inputs,
        })
    }

    /// Queues `output`, waiting while the producer queue is full; fails once any earlier
    /// delivery failed.
    pub fn send(&self, output: Output) -> Result<(), PublishError> {
        self.producer.context().failure()?;
        for refused in self.producer.context().take_refused() {
            self.queue(self.replacement(refused)?)?;
        }
        self.queue(output)
    }

    fn queue(&self, output: Output) -> Result<(), PublishError> {
        let topics = &self.producer.context().topics;
        let topic = topics.of(output.destination);
        let headers = headers_of(&output);
        let mut record = BaseRecord::to(topic)
            .key(output.key.as_bytes())
            .payload(&output.payload)
            .headers(headers);
        let err = loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((err, _)) => break err,
            }
        };
        let Some(code) = refusal_code(&err) else {
            let topic = topic.to_owned();
            return Err(DeliveryError::Failed { topic, source: err }.into());
        };
        let refused = Refused {
            destination: output.destination,
            topic: topic.to_owned(),
            key: output.key,
            payload: output.payload,
            headers: output.headers,
            waiters: output.waiters,
            code: code.to_owned(),
        };
        self.queue(self.replacement(refused)?)
    }

    fn replacement(&self, refused: Refused) -> Result<Output, PublishError> {
        let (topic, code) = (refused.topic.clone(), refused.code.clone());
        tracing::warn!(%topic, %code, key = %refused.key, "output refused by its topic; publishing a dead letter in its place");
        dead_letter::refused_output(refused, &self.inputs)
            .ok_or(PublishError::DeadLetterUnusable { topic, code })
    }

    /// Waits for every acknowledgement (and for the dead letters that replace refused
    /// messages); an error names the first failed delivery.
    pub fn finish(&self, timeout: Duration) -> Result<(), PublishError> {
        loop {
            self.producer
                .flush(timeout)
                .map_err(|source| PublishError::Unacknowledged {
                    timeout_ms: timeout.as_millis() as u64,
                    source,
                })?;
            self.producer.context().failure()?;
            let refused = self.producer.context().take_refused();
            if refused.is_empty() {
                return Ok(());
            }
            for refused in refused {
                self.queue(self.replacement(refused)?)?;
            }
        }
    }
}
