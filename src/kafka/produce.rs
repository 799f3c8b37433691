//! `streamrec produce`: puts events into a topic as v1 JSON keyed by user, in the order given,
//! waiting for every acknowledgement so a successful return means everything landed.

use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, Producer};

use super::client::producer_config;
use super::error::RunError;
use super::sink::{send, Acked, InFlight};
use crate::config::KafkaConfig;
use crate::event::Event;
use crate::pipeline::{Destination, Output};

/// At most this many messages await acknowledgement; the producer queue adds its own bound.
const MAX_IN_FLIGHT: usize = 20_000;

pub struct ProduceReport {
    pub produced: u64,
    pub elapsed: Duration,
}

/// Produces events as v1 JSON keyed by `user_id`, in the order given, at most `rate` per second
/// if given.
pub async fn produce(
    kafka: &KafkaConfig,
    topic: &str,
    events: &[Event],
    show_progress: bool,
    rate: Option<u64>,
) -> Result<ProduceReport, RunError> {
    let messages: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.user_id.clone(), e.to_json().into_bytes()))
        .collect();
    produce_messages(kafka, topic, &messages, show_progress, rate).await
}

/// Produces (key, payload) messages in order, at most `rate` per second if given, and waits for
/// every acknowledgement.
pub async fn produce_messages(
    kafka: &KafkaConfig,
    topic: &str,
    messages: &[(String, Vec<u8>)],
    show_progress: bool,
    rate: Option<u64>,
) -> Result<ProduceReport, RunError> {
    Loader::new(kafka)?
        .send(topic, messages, show_progress, rate)
        .await
}

/// One producer for several batches (a new idempotent producer stalls while it initialises).
pub struct Loader {
    producer: FutureProducer,
}

impl Loader {
    pub fn new(kafka: &KafkaConfig) -> Result<Loader, RunError> {
        Ok(Loader {
            producer: producer_config(kafka).create()?,
        })
    }

    pub async fn send(
        &self,
        topic: &str,
        messages: &[(String, Vec<u8>)],
        show_progress: bool,
        rate: Option<u64>,
    ) -> Result<ProduceReport, RunError> {
        let started = Instant::now();
        let bar = progress_bar(messages.len() as u64, show_progress);
        let mut in_flight = InFlight::new();
        let mut acked = 0u64;
        let mut on_acked = |done: Acked| -> Result<(), RunError> {
            done.result?;
            acked += 1;
            Ok(())
        };
        for (sent, (key, payload)) in messages.iter().enumerate() {
            if let Some(rate) = rate.filter(|_| sent % 100 == 0) {
                let due = started + Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            // The destination only labels acknowledgements (for latency); the topic is `topic`.
            let output = Output {
                destination: Destination::Recommendations,
                key: key.clone(),
                payload: payload.clone(),
                headers: Vec::new(),
                waiters: Vec::new(),
                cause_ts_ms: None,
            };
            send(&self.producer, topic, output, &mut in_flight, &mut on_acked).await?;
            while in_flight.len() >= MAX_IN_FLIGHT {
                let done = in_flight.next().await.expect("not empty");
                on_acked(done)?;
            }
            bar.inc(1);
        }
        while let Some(done) = in_flight.next().await {
            on_acked(done)?;
        }
        self.producer.flush(Duration::from_secs(30))?;
        bar.finish_and_clear();
        Ok(ProduceReport {
            produced: acked,
            elapsed: started.elapsed(),
        })
    }
}
fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events, {per_sec}, eta {eta}")
            .expect("a valid template"),
    );
    bar
}
