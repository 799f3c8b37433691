//! The members topic on Kafka (see `query::members`): a follower that reads every instance's
//! announcement into `Members`, and this instance's own, sent whenever the events partitions
//! it holds change (checked on the `run` loop's tick).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::error::RunError;
use super::follow::{from_start, Background};
use super::health::Health;
use super::latency::wall_clock_ms;
use crate::config::Config;
use crate::query::members::{Announcement, Members};

/// Reads the members topic from its start into `members` until stopped.
pub fn follow(config: &Config, members: Arc<Members>) -> Result<Background, RunError> {
    let (consumer, _) = from_start(&config.kafka, "members", &config.query.members_topic)?;
    Background::spawn(
        "members",
        "the members follower",
        move |stop: &AtomicBool| {
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        let key = String::from_utf8_lossy(message.key().unwrap_or_default());
                        if let Err(err) = members.read(&key, message.payload()) {
                            let offset = message.offset();
                            tracing::warn!(error = %err, %key, offset, "members record ignored");
                        }
                    }
                    Some(Err(err)) => {
                        tracing::warn!(error = %err, "members follower; librdkafka retries")
                    }
                    None => {}
                }
            }
            drop(consumer.unassign());
            Ok(())
        },
    )
}

/// This instance's announcements.
pub struct Announcer {
    producer: FutureProducer,
    topic: String,
    instance_id: String,
    query_url: String,
    events_topic: String,
    /// The partitions last announced (none yet: `None`).
    announced: Option<Vec<i32>>,
}

impl Announcer {
    /// `bound`: the query listener's address, announced when `query.advertise_url` is empty.
    pub fn new(config: &Config, producer: FutureProducer, bound: Option<SocketAddr>) -> Announcer {
        let query_url = match (config.query.advertise_url.as_str(), bound) {
            ("", Some(bound)) => format!("http://{bound}"),
            (url, _) => url.to_owned(),
        };
        Announcer {
            producer,
            topic: config.query.members_topic.clone(),
            instance_id: config.kafka.instance_id.clone(),
            query_url,
            events_topic: config.kafka.input_topics[0].clone(),
            announced: None,
        }
    }

    /// Announces the events partitions this instance holds, if they changed since the last
    /// announcement (a refused send is tried again at the next call).
    pub fn announce_if_changed(&mut self, health: &Health) {
        let held = health.held_partitions(&self.events_topic);
        if self.announced.as_ref() == Some(&held) {
            return;
        }
        let announcement = Announcement {
            instance_id: self.instance_id.clone(),
            query_url: self.query_url.clone(),
            partitions: held.clone(),
            announced_at_ms: wall_clock_ms(),
        };
        let payload = serde_json::to_vec(&announcement).expect("plain structs serialise");
        let record = FutureRecord::to(&self.topic)
            .key(&self.instance_id)
            .payload(&payload);
        // The delivery is not awaited: a lost announcement is overruled by the next one.
        match self.producer.send_result(record) {
            Ok(_delivery) => {
                tracing::info!(partitions = ?held, "announced this instance's partitions to the group's query routing");
                self.announced = Some(held);
            }
            Err((err, _)) => tracing::warn!(error = %err, "announcement not sent; trying again"),
        }
    }
}
