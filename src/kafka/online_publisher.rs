//! Publishes this instance's online metrics on `kafka.online_metrics_topic` (see
//! `online_summary`): on the `run` loop's tick once `pipeline.online_summary_interval_ms`
//! passed, and at shutdown. Deliveries are not awaited: each record holds the totals, so a
//! lost one is made good by the next.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::latency::wall_clock_ms;
use crate::clean::schema_registry_framed;
use crate::config::Config;
use crate::online::OnlineTally;
use crate::online_summary::{online_metrics_json, SummaryOf};

pub struct OnlinePublisher {
    producer: FutureProducer,
    topic: String,
    /// `kafka.schema_ids.online_metrics`: 0, plain JSON.
    schema_id: u32,
    instance_id: String,
    horizon_ms: i64,
    top_n: usize,
    interval: Duration,
    last: Instant,
}

impl OnlinePublisher {
    /// A publisher when `kafka.online_metrics_topic` is set.
    pub fn new(config: &Config, producer: &FutureProducer) -> Option<OnlinePublisher> {
        let topic = &config.kafka.online_metrics_topic;
        (!topic.is_empty()).then(|| OnlinePublisher {
            producer: producer.clone(),
            topic: topic.clone(),
            schema_id: config.kafka.schema_ids.online_metrics,
            instance_id: config.kafka.instance_id.clone(),
            horizon_ms: config.engine.online.horizon_ms,
            top_n: config.pipeline.top_n,
            interval: Duration::from_millis(config.pipeline.online_summary_interval_ms),
            last: Instant::now(),
        })
    }

    pub fn publish_if_due(&mut self, totals: &OnlineTally) {
        if self.last.elapsed() >= self.interval {
            self.publish(totals);
        }
    }

    pub fn publish(&mut self, totals: &OnlineTally) {
        self.last = Instant::now();
        let of = SummaryOf {
            instance_id: &self.instance_id,
            now_ms: wall_clock_ms(),
            horizon_ms: self.horizon_ms,
            top_n: self.top_n,
        };
        let mut payload = online_metrics_json(&of, totals);
        if self.schema_id != 0 {
            payload = schema_registry_framed(self.schema_id, &payload);
        }
        let record = FutureRecord::to(&self.topic)
            .key(&self.instance_id)
            .payload(&payload);
        if let Err((err, _)) = self.producer.send_result(record) {
            tracing::warn!(error = %err, topic = %self.topic, "online metrics not sent; the next summary carries them");
        }
    }
}
