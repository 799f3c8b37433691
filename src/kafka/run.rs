//! `streamrec run`: consume events, process them in partition order, publish what they cause,
//! and store each input offset once every output it caused is acknowledged (at-least-once).
//!
//! One task owns the consumer, the processor and the in-flight deliveries, so nothing is locked.
//! `select!` is biased: acknowledgements first (they free room and move offsets), then shutdown,
//! then coalescing ticks, then new messages — only while fewer than `max_in_flight` messages
//! wait for acknowledgement (backpressure).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hdrhistogram::Histogram;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use tokio::sync::watch;

use super::client::{consumer_config, producer_config};
use super::context::{GroupContext, Health};
use super::sink::{send, Acked, InFlight, Topics};
use crate::config::Config;
use crate::offsets::{OffsetTracker, Waiter};
use crate::pipeline::{Destination, Output, Processor, Record, Stats};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}; stopping without committing past it")]
    Delivery(String),
    #[error(
        "outputs of {open} messages were not acknowledged within the drain time of {drain_ms} ms"
    )]
    DrainTimeout { open: usize, drain_ms: u64 },
}

/// What a run did, for the caller to report.
pub struct RunReport {
    pub processor: Processor,
    /// Microseconds from an event's Kafka timestamp to its recommendation's acknowledgement.
    pub latency_us: Histogram<u64>,
    pub elapsed: Duration,
}

pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Loop {
    producer: FutureProducer,
    topics: Topics,
    inputs: Vec<String>,
    processor: Processor,
    tracker: OffsetTracker,
    in_flight: InFlight,
    latency_us: Latency,
}

/// Microseconds from an event's Kafka timestamp to its recommendation's acknowledgement,
/// 1 µs to 1 h at 3 significant figures (longer waits saturate at an hour).
pub type Latency = Arc<Mutex<Histogram<u64>>>;

pub fn new_latency() -> Latency {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
    ))
}

/// What the caller can watch while `run` runs.
pub struct Observers {
    /// Receives the counters at every tick and at the end.
    pub progress: Option<watch::Sender<Stats>>,
    pub health: Arc<Health>,
    /// Shared so a watcher can read (or reset) it while the pipeline runs.
    pub latency: Latency,
}

impl Default for Observers {
    fn default() -> Self {
        Observers {
            progress: None,
            health: Arc::default(),
            latency: new_latency(),
        }
    }
}

/// Runs until `shutdown` resolves, then drains and commits.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    observers: Observers,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let kafka = &config.kafka;
    let context = GroupContext {
        health: observers.health.clone(),
    };
    let consumer: StreamConsumer<GroupContext> =
        consumer_config(kafka, &kafka.group_id).create_with_context(context)?;
    let progress = observers.progress.clone();
    let inputs: Vec<&str> = kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs)?;
    let mut state = Loop {
        producer: producer_config(kafka).create()?,
        topics: Topics {
            recommendations: kafka.recommendations_topic.clone(),
            similar_items: kafka.similar_items_topic.clone(),
            dead_letter: kafka.dead_letter_topic.clone(),
        },
        inputs: kafka.input_topics.clone(),
        processor: Processor::new(config),
        tracker: OffsetTracker::default(),
        in_flight: InFlight::new(),
        latency_us: observers.latency.clone(),
    };
    let pipeline = &config.pipeline;
    let tick_ms = (pipeline.min_update_interval_ms / 4).clamp(10, 100);
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let room = state.tracker.open_events() < pipeline.max_in_flight;
        tokio::select! {
            biased;
            Some(acked) = state.in_flight.next() => state.on_acked(acked).map_err(RunError::Delivery)?,
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                state.flush(false).await?;
                if let Some(progress) = &progress {
                    progress.send_replace(state.processor.stats().clone());
                }
            }
            message = consumer.recv(), if room => match message {
                Ok(message) => state.on_message(&message).await?,
                Err(err) => tracing::warn!(error = %err, "consumer error; librdkafka retries"),
            },
        }
        state.store_offsets(&consumer);
    }
    state.drain(&consumer, pipeline.drain_timeout_ms).await?;
    if let Some(progress) = &progress {
        progress.send_replace(state.processor.stats().clone());
    }
    let latency_us = state.latency_us.lock().expect("not poisoned").clone();
    Ok(RunReport {
        processor: state.processor,
        latency_us,
        elapsed: started.elapsed(),
    })
}

impl Loop {
    async fn on_message(
        &mut self,
        message: &rdkafka::message::BorrowedMessage<'_>,
    ) -> Result<(), RunError> {
        let topic = message.topic();
        let topic_index = self.inputs.iter().position(|t| t == topic).unwrap_or(0) as u16;
        let record = Record {
            source: Waiter {
                topic: topic_index,
                partition: message.partition(),
                offset: message.offset(),
            },
            topic,
            payload: message.payload(),
            timestamp_ms: message.timestamp().to_millis(),
        };
        let processed = self.processor.process(&record, wall_clock_ms());
        self.tracker.add(record.source, processed.holds());
        self.send_all(processed.outputs).await
    }

    async fn send_all(&mut self, outputs: Vec<Output>) -> Result<(), RunError> {
        for output in outputs {
            let (tracker, latency) = (&mut self.tracker, &self.latency_us);
            send(
                &self.producer,
                &self.topics,
                output,
                &mut self.in_flight,
                |acked| record_ack(tracker, latency, acked),
            )
            .await
            .map_err(RunError::Delivery)?;
        }
        Ok(())
    }

    fn on_acked(&mut self, acked: Acked) -> Result<(), String> {
        record_ack(&mut self.tracker, &self.latency_us, acked)
    }

    async fn flush(&mut self, all: bool) -> Result<(), RunError> {
        let flushed = self.processor.flush(wall_clock_ms(), all);
        for waiter in flushed.released {
            self.tracker.resolve(waiter);
        }
        self.send_all(flushed.outputs).await
    }

    fn store_offsets(&mut self, consumer: &StreamConsumer<GroupContext>) {
        for (topic, partition, offset) in self.tracker.take_advanced() {
            let name = &self.inputs[topic as usize];
            // A partition revoked meanwhile refuses the store; its new owner re-reads from the
            // last commit, which is the at-least-once promise.
            if let Err(err) = consumer.store_offset(name, partition, offset) {
                tracing::debug!(topic = %name, partition, offset, error = %err, "offset not stored");
            }
        }
    }

    /// Stops consuming, publishes everything owed, waits for acknowledgements, commits.
    async fn drain(
        &mut self,
        consumer: &StreamConsumer<GroupContext>,
        drain_ms: u64,
    ) -> Result<(), RunError> {
        self.flush(true).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(drain_ms);
        while let Ok(Some(acked)) = tokio::time::timeout_at(deadline, self.in_flight.next()).await {
            self.on_acked(acked).map_err(RunError::Delivery)?;
        }
        self.store_offsets(consumer);
        if !self.in_flight.is_empty() {
            return Err(RunError::DrainTimeout {
                open: self.tracker.open_events(),
                drain_ms,
            });
        }
        self.producer.flush(Duration::from_millis(drain_ms))?;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing stored since the last auto-commit: nothing to do.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            )) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

fn record_ack(
    tracker: &mut OffsetTracker,
    latency_us: &Latency,
    acked: Acked,
) -> Result<(), String> {
    acked.result?;
    for waiter in acked.waiters {
        tracker.resolve(waiter);
    }
    if let (Destination::Recommendations, Some(cause_ms)) = (acked.destination, acked.cause_ts_ms) {
        let micros = (wall_clock_ms() - cause_ms).max(0) as u64 * 1000;
        // Uncontended: only this task records; watchers lock briefly to read.
        latency_us
            .lock()
            .expect("not poisoned")
            .saturating_record(micros);
    }
    Ok(())
}
