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
use crate::config::{Config, EngineConfig};
use crate::engine::{ItemOwner, WorkBatch};
use crate::item_metrics::ItemMetrics;
use prometheus_client::metrics::counter::Counter;

/// How often the owners' lag is measured, and how long one partition's answer may take.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
const LAG_TIMEOUT: Duration = Duration::from_millis(500);

/// The running owners; `stop` publishes what is left and waits for its acknowledgements.
pub struct Owners {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RunError>>,
}

impl Owners {
    pub fn start(config: &Config, metrics: &ItemMetrics) -> Result<Owners, RunError> {
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
            },
            metrics: metrics.clone(),
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
        let applied = WorkBatch::decode(payload)
            .map_err(|err| err.to_string())
            .and_then(|batch| (owned.owner.apply(batch, engine)).map_err(|err| err.to_string()));
        match applied {
            Ok(()) => self.metrics.applied().inc(),
            Err(error) => {
                tracing::warn!(partition, offset, %error, "item work batch refused");
                self.metrics.refused().inc()
            }
        };
    }
}

struct OwnerLoop {
    consumer: BaseConsumer,
    producer: BaseProducer<Deliveries>,
    records_topic: String,
    work_topic: String,
    interval: Duration,
    drain: Duration,
    partitions: OwnedPartitions,
    metrics: ItemMetrics,
}

/// The item partitions this instance owns, each with its owner.
struct OwnedPartitions {
    owners: BTreeMap<i32, Owned>,
    engine: EngineConfig,
    significance: f32,
    metrics: ItemMetrics,
}

impl OwnerLoop {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        let (mut published, mut lag_reported) = (Instant::now(), Instant::now());
        while !stop.load(Ordering::Relaxed) {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => self.partitions.apply(&message),
                Some(Err(err)) => tracing::warn!(error = %err, "item work: consumer error"),
                None => {}
            }
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
        self.publish()?;
        self.producer.flush(self.drain)?;
        Ok(())
    }

    /// Work batches between the owners' positions and their partitions' ends (one request per
    /// owned partition: every `LAG_INTERVAL`).
    fn report_lag(&self) {
        let lag: i64 = (self.partitions.owners.iter())
            .filter_map(|(&partition, owned)| {
                let watermarks =
                    (self.consumer).fetch_watermarks(&self.work_topic, partition, LAG_TIMEOUT);
                watermarks.ok().map(|(_, high)| (high - owned.next).max(0))
            })
            .sum();
        self.metrics.work_lag.set(lag);
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
