//! The item owners of one instance (item-owned scale-out): a member of the group
//! `<group_id>.items` over `items.work_topic`, it applies the work batches of the item
//! partitions the group gives it, each partition to its own `ItemOwner`, and every
//! `items.publish_interval_ms` publishes what changed to `items.records_topic` (partition p's
//! records to partition p), which every instance follows (`item_records`).
//!
//! An owner's state is what its partition's work log says, applied once in log order. With
//! `items.changelog_topic`, each owner checkpoints its state with the work-log offset it
//! reflects every `items.checkpoint_interval_ms` (`item_checkpoints`), and a partition it is
//! given starts from the last checkpoint and reads the log from there; without, it starts
//! empty and reads the log from its start (the group commits no offsets). An offset below the
//! one it applies next is skipped (a rebalance or seek that moves the fetch position back), so
//! item state is exact however partitions move.
//!
//! It runs on its own thread: applying work is CPU work that must not hold an async runtime's
//! thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::client::{consumer_config, producer_config, send_waiting};
use super::error::RunError;
use super::follow::Background;
use super::health::Health;
use super::item_checkpoints::ItemCheckpoints;
use super::leave::leave_group_blocking;
use super::owned_partitions::{Owned, OwnedPartitions};
use crate::config::Config;
use crate::item_metrics::ItemMetrics;
use prometheus_client::metrics::counter::Counter;

/// How often the owners' lag is measured (from the consumer's statistics), and how long one
/// partition's end may take to be listed when the owners stop.
const LAG_INTERVAL: Duration = Duration::from_secs(1);
const END_TIMEOUT: Duration = Duration::from_millis(500);

/// The owners' thread.
pub struct Owners {
    thread: Background,
    drain_by: Arc<OnceLock<Instant>>,
}

impl Owners {
    /// Publishes what is left and waits for its acknowledgements, by `drain_by` (the rest is
    /// the next owners' to apply), then checkpoints and leaves.
    pub fn stop(self, drain_by: Instant) -> Result<(), RunError> {
        let _ = self.drain_by.set(drain_by);
        self.thread.stop()
    }
}

/// Starts the owners on thread `item-owners`.
pub fn start(
    config: &Config,
    metrics: &ItemMetrics,
    health: Arc<Health>,
) -> Result<Owners, RunError> {
    let kafka = &config.kafka;
    let group = format!("{}.items", kafka.group_id);
    let mut client = consumer_config(kafka, &group);
    // Never commit: a partition's state is its whole log (see the module's comment).
    client
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    // The partitions' ends come with the statistics, from the fetches themselves: a listing
    // request per partition would queue behind the fetch on the broker's connection.
    client.set(
        "statistics.interval.ms",
        LAG_INTERVAL.as_millis().to_string(),
    );
    let ends = Ends::default();
    let consumer: BaseConsumer<Ends> = client.create_with_context(ends.clone())?;
    consumer.subscribe(&[&config.items.work_topic])?;
    let producer: BaseProducer<Deliveries> = producer_config(kafka)
        .set("linger.ms", "20")
        .create_with_context(Deliveries(metrics.records_failed.clone()))?;
    let checkpoints = match config.items.changelog_topic.as_str() {
        "" => None,
        topic => Some(ItemCheckpoints::new(kafka, topic)?),
    };
    let mut loop_ = OwnerLoop {
        consumer,
        producer,
        records_topic: config.items.records_topic.clone(),
        work_topic: config.items.work_topic.clone(),
        interval: Duration::from_millis(config.items.publish_interval_ms),
        drain_by: Arc::default(),
        checkpoint_interval: Duration::from_millis(config.items.checkpoint_interval_ms),
        partitions: OwnedPartitions::new(
            &config.engine,
            (config.items.significance, metrics),
            checkpoints,
        ),
        metrics: metrics.clone(),
        health,
        ready_lag: config.items.ready_lag,
    };
    let drain_by = loop_.drain_by.clone();
    let thread = Background::spawn("item-owners", "item owners", move |stop| {
        let stopped = loop_.run(stop);
        // The loop's consumer leaves the `.items` group, as the run's leaves its own.
        let by = loop_.drain_deadline();
        leave_group_blocking(loop_, by);
        stopped
    })?;
    Ok(Owners { thread, drain_by })
}

/// Counts the records the records topic did not take.
struct Deliveries(Counter);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, message)) = result {
            self.0.inc();
            tracing::error!(error = %err, partition = message.partition(), "item record not delivered; readers miss it until the item's next change");
        }
    }
}

/// Per partition, its log's low and high watermarks.
type Logs = BTreeMap<i32, (i64, i64)>;

/// The work topic's partitions' logs as the consumer's last statistics saw them.
#[derive(Clone, Default)]
struct Ends(Arc<Mutex<Logs>>);

impl ClientContext for Ends {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut logs = self.0.lock().expect("not poisoned");
        for topic in statistics.topics.values() {
            for (&partition, seen) in &topic.partitions {
                if partition >= 0 && seen.hi_offset >= 0 {
                    logs.insert(partition, (seen.lo_offset.max(0), seen.hi_offset));
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Ends {}

struct OwnerLoop {
    consumer: BaseConsumer<Ends>,
    producer: BaseProducer<Deliveries>,
    records_topic: String,
    work_topic: String,
    interval: Duration,
    /// The shutdown's drain deadline, set before the stop flag.
    drain_by: Arc<OnceLock<Instant>>,
    checkpoint_interval: Duration,
    partitions: OwnedPartitions,
    metrics: ItemMetrics,
    health: Arc<Health>,
    ready_lag: u64,
}

impl OwnerLoop {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        let (mut published, mut lag_reported) = (Instant::now(), Instant::now());
        let mut checkpointed = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.poll_work();
            self.producer.poll(Duration::ZERO);
            if published.elapsed() >= self.interval {
                self.drop_revoked();
                self.publish()?;
                published = Instant::now();
            }
            if lag_reported.elapsed() >= LAG_INTERVAL {
                self.report_lag();
                lag_reported = Instant::now();
            }
            // One partition at a time, each about once per interval.
            let owned = self.partitions.owners.len().max(1) as u32;
            if checkpointed.elapsed() >= self.checkpoint_interval / owned {
                // Only partitions still assigned: no poll (where revokes happen) comes between.
                self.drop_revoked();
                self.partitions.checkpoint(true);
                checkpointed = Instant::now();
            }
        }
        let drain_by = self.drain_deadline();
        self.catch_up(drain_by);
        self.drop_revoked();
        self.publish()?;
        self.producer
            .flush(drain_by.saturating_duration_since(Instant::now()))?;
        self.partitions.checkpoint(false);
        Ok(())
    }

    /// The shutdown's drain deadline (now, if the stop came without one).
    fn drain_deadline(&self) -> Instant {
        self.drain_by.get().copied().unwrap_or_else(Instant::now)
    }

    /// Applies the next work batch, if one comes within 50 ms.
    fn poll_work(&mut self) {
        match self.consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                let partition = message.partition();
                if !self.partitions.owners.contains_key(&partition) {
                    let mut new = self.unowned_assigned();
                    if !new.contains(&partition) {
                        new.push(partition);
                    }
                    for (adopted, next) in self.partitions.adopt(&new) {
                        if next > 0 && (adopted != partition || next > message.offset()) {
                            self.skip_to(adopted, next);
                        }
                    }
                }
                self.partitions.apply(&message)
            }
            Some(Err(err)) => tracing::warn!(error = %err, "item work: consumer error"),
            None => {}
        }
    }

    /// The partitions assigned to this instance that it does not own yet.
    fn unowned_assigned(&self) -> Vec<i32> {
        let Ok(assignment) = self.consumer.assignment() else {
            return Vec::new();
        };
        let partitions = assignment.elements().into_iter().map(|e| e.partition());
        (partitions.filter(|p| !self.partitions.owners.contains_key(p))).collect()
    }

    /// Moves a partition's fetch to `next` (what comes before is skipped anyway).
    fn skip_to(&self, partition: i32, next: i64) {
        let at = rdkafka::Offset::Offset(next);
        let timeout = Duration::from_secs(5);
        if let Err(err) = (self.consumer).seek(&self.work_topic, partition, at, timeout) {
            tracing::warn!(partition, next, error = %err, "cannot seek to an item partition's checkpoint; skipping the work before it instead");
        }
    }

    /// The partitions assigned, and the log (low, high watermarks) of each one known: listed
    /// now (one request each), or as the last statistics saw it. None without an assignment.
    fn assigned_logs(&self, listed: bool) -> Option<(usize, Logs)> {
        let assignment = self.consumer.assignment().ok()?;
        let seen = self
            .consumer
            .context()
            .0
            .lock()
            .expect("not poisoned")
            .clone();
        let logs = (assignment.elements().iter())
            .filter_map(|element| {
                let partition = element.partition();
                if !listed {
                    return seen.get(&partition).map(|&log| (partition, log));
                }
                let watermarks =
                    (self.consumer).fetch_watermarks(&self.work_topic, partition, END_TIMEOUT);
                watermarks.ok().map(|log| (partition, log))
            })
            .collect();
        Some((assignment.count(), logs))
    }

    /// Applies the work of its partitions up to their ends as of now (within the drain time),
    /// so that what it publishes last covers every input its own workers sent.
    fn catch_up(&mut self, deadline: Instant) {
        let Some((_, logs)) = self.assigned_logs(true) else {
            return;
        };
        let ends: BTreeMap<i32, i64> = (logs.into_iter())
            .filter(|(_, (low, high))| high > low)
            .map(|(partition, (_, high))| (partition, high))
            .collect();
        let behind = |owners: &BTreeMap<i32, Owned>| {
            (ends.iter()).any(|(p, &end)| owners.get(p).is_none_or(|o| o.next < end))
        };
        while behind(&self.partitions.owners) && Instant::now() < deadline {
            self.poll_work();
        }
        if behind(&self.partitions.owners) {
            tracing::warn!("item owners stopped before applying all their partitions' work; their next owners will");
        }
    }

    /// Work batches between the owners' positions and their partitions' ends (as of the last
    /// statistics, at most `LAG_INTERVAL` old).
    fn report_lag(&self) {
        let Some((assigned, logs)) = self.assigned_logs(false) else {
            return;
        };
        (self.metrics.partitions_owned).set(assigned as i64);
        let lag: i64 = (logs.into_iter())
            .map(|(partition, (low, high))| {
                let owner = self.partitions.owners.get(&partition);
                (high - owner.map_or(low, |o| o.next)).max(0)
            })
            .sum();
        self.metrics.work_lag.set(lag);
        let unready = (lag as u64 > self.ready_lag).then_some(lag as u64);
        self.health.set_owners_behind(unready.unwrap_or(0));
    }

    /// Forgets the partitions the group moved elsewhere.
    fn drop_revoked(&mut self) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let held: BTreeSet<i32> = (assignment.elements().iter())
            .map(|element| element.partition())
            .collect();
        self.partitions.owners.retain(|partition, _| {
            let kept = held.contains(partition);
            if !kept {
                tracing::info!(partition, "item partition moved to another owner");
            }
            kept
        });
    }

    /// Each owner's records of what changed since its last publication, to its partition.
    fn publish(&mut self) -> Result<(), RunError> {
        let (views, lists) = (
            self.metrics.published("view"),
            self.metrics.published("lists"),
        );
        for (&partition, owned) in &mut self.partitions.owners {
            let publication = owned.owner.publish();
            views.inc_by(publication.views.len() as u64);
            lists.inc_by(publication.lists.len() as u64);
            for (key, payload) in publication.keyed_records() {
                self.metrics.record_bytes.inc_by(payload.len() as u64);
                let record = BaseRecord::to(&self.records_topic)
                    .partition(partition)
                    .key(&key[..])
                    .payload(&payload);
                send_waiting(&self.producer, record)?;
            }
        }
        Ok(())
    }
}
