//! The consumer's view of its group: how many partitions it holds, for readiness and for
//! callers (the demo, tests) that must not produce before the group has formed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

/// Shared, lock-free state of a running pipeline.
#[derive(Debug, Default)]
pub struct Health {
    assigned_partitions: AtomicUsize,
    assignments: AtomicUsize,
}

impl Health {
    pub fn assigned_partitions(&self) -> usize {
        self.assigned_partitions.load(Ordering::Relaxed)
    }

    /// How many assignments this member has received (0 before the group formed).
    pub fn assignments(&self) -> usize {
        self.assignments.load(Ordering::Relaxed)
    }
}

pub struct GroupContext {
    pub health: Arc<Health>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        use rdkafka::consumer::Consumer;
        match rebalance {
            Rebalance::Assign(_) | Rebalance::Revoke(_) => {
                if matches!(rebalance, Rebalance::Assign(_)) {
                    self.health.assignments.fetch_add(1, Ordering::Relaxed);
                }
                let held = consumer.assignment().map_or(0, |tpl| tpl.count());
                self.health
                    .assigned_partitions
                    .store(held, Ordering::Relaxed);
                tracing::info!(partitions = held, "partition assignment changed");
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "rebalance failed"),
        }
    }
}

/// A replay's consumer: reaching a partition's end is how a replay knows it is done, not an
/// error worth a log line; everything else is logged as librdkafka reports it.
pub struct ReplayContext;

impl ClientContext for ReplayContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::KafkaError::{Global, PartitionEOF};
        use rdkafka::types::RDKafkaErrorCode::PartitionEOF as Eof;
        if !matches!(error, PartitionEOF(_) | Global(Eof)) {
            tracing::error!(error = %error, reason, "librdkafka error");
        }
    }
}

impl ConsumerContext for ReplayContext {}
