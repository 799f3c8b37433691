//! The read model's follower (item-owned scale-out): every instance reads all of
//! `items.records_topic` from its start and installs the owners' records into the item model
//! its workers rank against (`ItemKeys::install`). What the topic held at start is read first
//! and installed in one go — records then resolve each other's keys whatever order they were
//! read in — and `/readyz` says how much is left meanwhile. After that, what each poll brings
//! is installed as it comes. Its own thread: installing is CPU work under the item model's
//! write lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{partition_count, replay_consumer_config};
use super::error::RunError;
use super::health::Health;
use super::model_updates::behind;
use crate::config::{Config, EngineConfig};
use crate::engine::{ItemKeys, Publication, SharedItems};
use crate::item_metrics::ItemMetrics;

/// Records installed at most at once after the catch-up (the write lock's hold).
const MAX_RECORDS_PER_INSTALL: usize = 4096;

pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RunError>>,
}

impl Follower {
    pub fn start(
        config: &Config,
        items: SharedItems,
        health: Arc<Health>,
        metrics: &ItemMetrics,
    ) -> Result<Follower, RunError> {
        let kafka = &config.kafka;
        let group = format!("{}.records.{}", kafka.group_id, std::process::id());
        let mut client = replay_consumer_config(kafka, &group);
        client.set("enable.partition.eof", "false");
        let consumer: BaseConsumer = client.create()?;
        let topic = config.items.records_topic.clone();
        let partitions = partition_count(&consumer, &topic)? as i32;
        let mut assignment = TopicPartitionList::new();
        let mut targets = BTreeMap::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
            if high > low {
                targets.insert(partition, high);
            }
        }
        consumer.assign(&assignment)?;
        health.set_records_behind(behind(&targets, &BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut follow = Follow {
            consumer,
            items,
            keys: ItemKeys::default(),
            engine: config.engine.clone(),
            metrics: metrics.clone(),
        };
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("item-records".into())
            .spawn(move || follow.run(&stopping, targets, &health))
            .map_err(RunError::Thread)?;
        Ok(Follower { stop, thread })
    }

    pub fn stop(self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::Relaxed);
        (self.thread.join()).map_err(|_| RunError::ThreadPanicked("item records follower"))?
    }
}

struct Follow {
    consumer: BaseConsumer,
    items: SharedItems,
    keys: ItemKeys,
    engine: EngineConfig,
    metrics: ItemMetrics,
}

impl Follow {
    fn run(
        &mut self,
        stop: &AtomicBool,
        targets: BTreeMap<i32, i64>,
        health: &Health,
    ) -> Result<(), RunError> {
        let mut read = BTreeMap::new();
        let mut caught_up = targets.is_empty();
        let mut publication = Publication::default();
        while !stop.load(Ordering::Relaxed) {
            let polled = self.consumer.poll(Duration::from_millis(50));
            match polled {
                Some(Ok(message)) => {
                    read.insert(message.partition(), message.offset() + 1);
                    self.add(&mut publication, &message);
                    if caught_up && publication.len() < MAX_RECORDS_PER_INSTALL {
                        continue; // more may be waiting: install them together
                    }
                }
                Some(Err(err)) => tracing::warn!(error = %err, "item records: consumer error"),
                None => {}
            }
            if !caught_up {
                let left = behind(&targets, &read);
                health.set_records_behind(left);
                if left > 0 {
                    continue;
                }
                caught_up = true;
                tracing::info!(records = publication.len(), "item read model caught up");
            }
            self.install(&mut publication);
        }
        Ok(())
    }

    fn add(&self, publication: &mut Publication, message: &impl Message) {
        let (key, payload) = (message.key().unwrap_or_default(), message.payload());
        let added = match payload {
            Some(payload) => publication
                .add_keyed(key, payload)
                .map_err(|e| e.to_string()),
            None => Err("a tombstone (records are never deleted)".to_owned()),
        };
        if let Err(error) = added {
            self.metrics.records_refused.inc();
            tracing::warn!(partition = message.partition(), offset = message.offset(), %error, "item record refused");
        }
    }

    fn install(&mut self, publication: &mut Publication) {
        if publication.is_empty() {
            return;
        }
        let mut model = self.items.write().expect("a worker panicked while ranking");
        let installed = self.keys.install(&mut model, publication, &self.engine);
        drop(model);
        let metrics = &self.metrics;
        (metrics.records_installed).inc_by((installed.views + installed.lists) as u64);
        (metrics.unknown_neighbours).inc_by(installed.unknown_neighbours as u64);
        if let Some(first) = installed.refused.first() {
            metrics
                .records_refused
                .inc_by(installed.refused.len() as u64);
            tracing::warn!(refused = installed.refused.len(), error = %first, "item records refused by their checks");
        }
        *publication = Publication::default();
    }
}
