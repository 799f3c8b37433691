//! The consumer's view of its group: how many partitions it holds, for readiness and for
//! callers (the demo, tests) that must not produce before the group has formed; and the revoke
//! hand-off: before partitions go to another member, every worker publishes what it owes,
//! checkpoints, and the consumer commits — so the next owner starts exactly where this one ends.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::CommitMode;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;

use super::health::Health;
use super::restore::Restores;
use crate::offsets::PartitionKey;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};

/// What a worker receives, in partition order.
pub enum WorkerInput {
    Message(OwnedMessage),
    /// Partitions are being revoked: publish everything owed, wait for acknowledgements,
    /// checkpoint, store offsets, then answer (the worker logs why it could not).
    Settle(std::sync::mpsc::Sender<Result<(), NotSettled>>),
    /// A partition's users as the changelog holds them: install them unless the local state is
    /// as new, and answer with the input positions to continue from (none: keep the local).
    /// A worker that fails to drops the answer and stops with its error.
    Restore(
        Box<super::changelog::PartitionLog>,
        tokio::sync::oneshot::Sender<Restored>,
    ),
    /// A listing change the catalog follower applied to the shared item model: fire the
    /// catalog triggers of this worker's watchers.
    Listing(ListingNews),
}

/// A listing change, by the item's index in the process's item model.
#[derive(Clone, Copy, Debug)]
pub struct ListingNews {
    pub item: u32,
    pub change: crate::catalog::ListingChange,
    pub updated_at_ms: i64,
}

/// A worker could not settle before a revoke (it logged why).
#[derive(Debug)]
pub struct NotSettled;

/// The next input offset per (input topic index, partition) a restore leaves the state at.
pub type Restored = Vec<(PartitionKey, i64)>;

pub struct GroupContext {
    pub health: Arc<Health>,
    /// Where librdkafka's statistics (consumer lag) go, if anywhere.
    pub metrics: Option<Arc<crate::admin::Metrics>>,
    /// The workers' inputs, once they run (none before, and none for a plain consumer).
    pub workers: Arc<Mutex<Vec<mpsc::Sender<WorkerInput>>>>,
    /// How long a revoke waits for the workers to settle.
    pub settle_timeout: Duration,
    /// With a changelog: newly assigned input partitions are held here until their users
    /// are restored.
    pub restore: Option<Restores>,
}

impl GroupContext {
    pub fn new(health: Arc<Health>, settle_timeout: Duration) -> GroupContext {
        GroupContext {
            health,
            metrics: None,
            workers: Arc::default(),
            settle_timeout,
            restore: None,
        }
    }

    /// Every worker settles; then what they stored is committed. Runs inside librdkafka's
    /// rebalance callback on the polling task's thread, so it blocks in place (the workers run
    /// on the runtime's other threads).
    fn settle_before_revoke(&self, consumer: &BaseConsumer<Self>) {
        use rdkafka::consumer::Consumer;
        let workers = self.workers.lock().expect("not poisoned").clone();
        if workers.is_empty() {
            return;
        }
        let settle = || {
            let (reply, replies) = std::sync::mpsc::channel();
            let asked = workers
                .iter()
                .filter(|w| {
                    futures::executor::block_on(w.send(WorkerInput::Settle(reply.clone()))).is_ok()
                })
                .count();
            for _ in 0..asked {
                match replies.recv_timeout(self.settle_timeout) {
                    Ok(Ok(())) => {}
                    Ok(Err(NotSettled)) => {
                        tracing::warn!("a worker could not settle before the revoke")
                    }
                    Err(_) => {
                        tracing::warn!("workers did not settle within the drain time; the next owner re-reads from the last commit");
                        return;
                    }
                }
            }
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(())
                | Err(rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset,
                )) => {}
                Err(err) => tracing::warn!(error = %err, "commit before the revoke failed"),
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(settle),
            _ => tracing::warn!(
                "not on a multi-threaded runtime: partitions are revoked without settling"
            ),
        }
    }
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(metrics) = &self.metrics {
            metrics.record_lag(&statistics);
        }
        if statistics.brokers.values().any(|b| b.state == "UP") {
            self.health.set_brokers_down(false);
        }
    }

    /// librdkafka reconnects by itself; what an operator needs is `/readyz` saying why nothing
    /// moves meanwhile.
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if let KafkaError::Global(RDKafkaErrorCode::AllBrokersDown) = error {
            self.health.set_brokers_down(true);
        }
        tracing::warn!(error = %error, reason, "kafka client error; librdkafka retries");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            if partitions.count() > 0 {
                self.settle_before_revoke(consumer);
            }
        }
    }

    /// The held partitions come from the rebalance itself, never from asking the consumer: during
    /// the consumer's close that request waits on the queue being closed, forever. Eager
    /// rebalancing (the default) assigns and revokes the whole set; cooperative, increments.
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        use rdkafka::consumer::{Consumer, RebalanceProtocol};
        let incremental = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match rebalance {
            Rebalance::Assign(assigned) => {
                if let Some(restore) = &self.restore {
                    restore.hold(consumer, assigned);
                }
                self.health.assignments.fetch_add(1, Ordering::Relaxed);
                let given = assigned.elements();
                let given = given.iter().map(|e| (e.topic(), e.partition()));
                self.health.change_held(true, !incremental, given);
                let held = self.health.assigned_partitions();
                tracing::info!(partitions = held, "partition assignment changed");
            }
            Rebalance::Revoke(revoked) => {
                if let Some(restore) = &self.restore {
                    restore.revoked(revoked);
                }
                let taken = revoked.elements();
                let taken = taken.iter().map(|e| (e.topic(), e.partition()));
                self.health.change_held(false, !incremental, taken);
                let held = self.health.assigned_partitions();
                tracing::info!(partitions = held, "partition assignment changed");
            }
            Rebalance::Error(err) => tracing::warn!(error = %err, "rebalance failed"),
        }
    }
}
