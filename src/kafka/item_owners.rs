//! The item owners of one instance (item-owned scale-out): a member of the group
//! `<group_id>.items` over `items.work_topic`, it applies the work batches of the item
//! partitions the group gives it, each partition to its own `ItemOwner`, and every
//! `items.publish_interval_ms` publishes what changed to `items.records_topic` (partition p's
//! records to partition p), which every instance follows (`item_records`).
//!
//! An owner's state is what its partition's work log says, applied once in log order: a
//! partition it is given starts empty and reads its log from the start (the group commits no
//! offsets), and an offset below the one it applied next is skipped (a rebalance that moves
//! the fetch position back). So item state is exact however partitions move, at the price of
//! re-reading a moved partition's log (bounded by the topic's retention); checkpoints with a
//! changelog are the next step.
//!
//! It runs on its own thread: applying work is CPU work that must not hold an async runtime's
//! thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::client::{consumer_config, producer_config};
use super::error::RunError;
use super::health::Health;
use crate::config::{Config, EngineConfig};
use crate::engine::{ItemOwner, WorkBatch};
use crate::item_metrics::ItemMetrics;
use prometheus_client::metrics::counter::Counter;

/// How often the owners' lag is measured, and how long one partition's answer may take.
const LAG_INTERVAL: Duration = Duration::from_secs(1);
const LAG_TIMEOUT: Duration = Duration::from_millis(500);

/// The running owners; `stop` publishes what is left and waits for its acknowledgements.
pub struct Owners {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RunError>>,
}

impl Owners {
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
        let consumer: BaseConsumer = client.create()?;
        consumer.subscribe(&[&config.items.work_topic])?;
        let producer: BaseProducer<Deliveries> = producer_config(kafka)
            .set("linger.ms", "20")
            .create_with_context(Deliveries(metrics.records_failed.clone()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut loop_ = OwnerLoop {
            consumer,
            producer,
            records_topic: config.items.records_topic.clone(),
            work_topic: config.items.work_topic.clone(),
            interval: Duration::from_millis(config.items.publish_interval_ms),
            drain: Duration::from_millis(config.pipeline.drain_timeout_ms),
            partitions: OwnedPartitions {
                owners: BTreeMap::new(),
                engine: config.engine.clone(),
                significance: config.items.significance,
                metrics: metrics.clone(),
                applied: metrics.applied(),
                refused: metrics.refused(),
            },
            metrics: metrics.clone(),
            health,
            ready_lag: config.items.ready_lag,
        };
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("item-owners".into())
            .spawn(move || loop_.run(&stopping))
            .map_err(RunError::Thread)?;
        Ok(Owners { stop, thread })
    }

    /// Publishes what changed since the last publication, waits for it, and leaves the group.
    pub fn stop(self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::Relaxed);
        (self.thread.join()).map_err(|_| RunError::ThreadPanicked("item owners"))?
    }
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

/// One item partition's owner and the next offset of its work log it applies.
struct Owned {
    owner: ItemOwner,
    next: i64,
}

impl OwnedPartitions {
    fn apply(&mut self, message: &impl Message) {
        let (partition, offset) = (message.partition(), message.offset());
        let (engine, significance) = (&self.engine, self.significance);
        let owned = self.owners.entry(partition).or_insert_with(|| {
            tracing::info!(partition, "owning an item partition: reading its work log");
            let mut owner = ItemOwner::new(engine);
            owner.significance = significance;
            Owned { owner, next: 0 }
        });
        if offset < owned.next {
            return; // applied already: the fetch went back
        }
        owned.next = offset + 1;
        let payload = message.payload().unwrap_or_default();
        let skipped = owned.owner.skipped_inputs;
        let applied = WorkBatch::decode(payload)
            .map_err(|err| err.to_string())
            .and_then(|batch| (owned.owner.apply(batch, engine)).map_err(|err| err.to_string()));
        (self.metrics.inputs_skipped).inc_by(owned.owner.skipped_inputs - skipped);
        match applied {
            Ok(()) => self.applied.inc(),
            Err(error) => {
                tracing::warn!(partition, offset, %error, "item work batch refused");
                self.refused.inc()
            }
        };
    }
}

/// Per partition, its log's low and high watermarks.
type Logs = BTreeMap<i32, (i64, i64)>;

struct OwnerLoop {
    consumer: BaseConsumer,
    producer: BaseProducer<Deliveries>,
    records_topic: String,
    work_topic: String,
    interval: Duration,
    drain: Duration,
    partitions: OwnedPartitions,
    metrics: ItemMetrics,
    health: Arc<Health>,
    ready_lag: u64,
}

/// The item partitions this instance owns, each with its owner.
struct OwnedPartitions {
    owners: BTreeMap<i32, Owned>,
    engine: EngineConfig,
    significance: f32,
    metrics: ItemMetrics,
    /// The work batches family's two counters, looked up once.
    applied: Counter,
    refused: Counter,
}

impl OwnerLoop {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        let (mut published, mut lag_reported) = (Instant::now(), Instant::now());
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
        }
        self.catch_up(Instant::now() + self.drain);
        self.drop_revoked();
        self.publish()?;
        self.producer.flush(self.drain)?;
        Ok(())
    }

    /// Applies the next work batch, if one comes within 50 ms.
    fn poll_work(&mut self) {
        match self.consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => self.partitions.apply(&message),
            Some(Err(err)) => tracing::warn!(error = %err, "item work: consumer error"),
            None => {}
        }
    }

    /// The partitions assigned, and the log (low, high watermarks) of each one the broker
    /// answered for; None without an assignment.
    fn assigned_logs(&self) -> Option<(usize, Logs)> {
        let assignment = self.consumer.assignment().ok()?;
        let logs = (assignment.elements().iter())
            .filter_map(|element| {
                let partition = element.partition();
                let watermarks =
                    (self.consumer).fetch_watermarks(&self.work_topic, partition, LAG_TIMEOUT);
                watermarks.ok().map(|log| (partition, log))
            })
            .collect();
        Some((assignment.count(), logs))
    }

    /// Applies the work of its partitions up to their ends as of now (within the drain time),
    /// so that what it publishes last covers every input its own workers sent.
    fn catch_up(&mut self, deadline: Instant) {
        let Some((_, logs)) = self.assigned_logs() else {
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

    /// Work batches between the owners' positions and their partitions' ends (one request per
    /// owned partition: every `LAG_INTERVAL`).
    fn report_lag(&self) {
        let Some((assigned, logs)) = self.assigned_logs() else {
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
                let mut record = BaseRecord::to(&self.records_topic)
                    .partition(partition)
                    .key(&key[..])
                    .payload(&payload);
                loop {
                    match self.producer.send(record) {
                        Ok(()) => break,
                        Err((
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            returned,
                        )) => {
                            record = returned;
                            self.producer.poll(Duration::from_millis(10));
                        }
                        Err((err, _)) => return Err(err.into()),
                    }
                }
            }
        }
        Ok(())
    }
}
