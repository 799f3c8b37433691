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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// What the owners did, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct OwnerCounts {
    pub batches_applied: AtomicU64,
    /// Batches that did not decode or pass their check (each logged).
    pub batches_refused: AtomicU64,
    pub views_published: AtomicU64,
    pub lists_published: AtomicU64,
    pub record_bytes: AtomicU64,
    /// Records the records topic did not take (each logged).
    pub records_failed: AtomicU64,
}

/// The running owners; `stop` publishes what is left and waits for its acknowledgements.
pub struct Owners {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RunError>>,
    pub counts: Arc<OwnerCounts>,
}

impl Owners {
    pub fn start(config: &Config) -> Result<Owners, RunError> {
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
        let counts = Arc::new(OwnerCounts::default());
        let producer: BaseProducer<Deliveries> = producer_config(kafka)
            .set("linger.ms", "20")
            .create_with_context(Deliveries(counts.clone()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut loop_ = OwnerLoop {
            consumer,
            producer,
            records_topic: config.items.records_topic.clone(),
            interval: Duration::from_millis(config.items.publish_interval_ms),
            drain: Duration::from_millis(config.pipeline.drain_timeout_ms),
            partitions: OwnedPartitions {
                owners: BTreeMap::new(),
                engine: config.engine.clone(),
                significance: config.items.significance,
                counts: counts.clone(),
            },
        };
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("item-owners".into())
            .spawn(move || loop_.run(&stopping))
            .map_err(RunError::Thread)?;
        Ok(Owners {
            stop,
            thread,
            counts,
        })
    }

    /// Publishes what changed since the last publication, waits for it, and leaves the group.
    pub fn stop(self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::Relaxed);
        (self.thread.join()).map_err(|_| RunError::ThreadPanicked("item owners"))?
    }
}

/// Counts the records the records topic did not take.
struct Deliveries(Arc<OwnerCounts>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, message)) = result {
            self.0.records_failed.fetch_add(1, Ordering::Relaxed);
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
            Ok(()) => self.counts.batches_applied.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(partition, offset, %error, "item work batch refused");
                self.counts.batches_refused.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

struct OwnerLoop {
    consumer: BaseConsumer,
    producer: BaseProducer<Deliveries>,
    records_topic: String,
    interval: Duration,
    drain: Duration,
    partitions: OwnedPartitions,
}

/// The item partitions this instance owns, each with its owner.
struct OwnedPartitions {
    owners: BTreeMap<i32, Owned>,
    engine: EngineConfig,
    significance: f32,
    counts: Arc<OwnerCounts>,
}

impl OwnerLoop {
    fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        let mut published = Instant::now();
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
        }
        self.publish()?;
        self.producer.flush(self.drain)?;
        Ok(())
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
        for (&partition, owned) in &mut self.partitions.owners {
            let publication = owned.owner.publish();
            let counts = &self.partitions.counts;
            counts
                .views_published
                .fetch_add(publication.views.len() as u64, Ordering::Relaxed);
            counts
                .lists_published
                .fetch_add(publication.lists.len() as u64, Ordering::Relaxed);
            for (key, payload) in publication.keyed_records() {
                counts
                    .record_bytes
                    .fetch_add(payload.len() as u64, Ordering::Relaxed);
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
