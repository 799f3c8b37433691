//! The catalog as a table every instance holds (item-owned scale-out; Kafka Streams calls it a
//! global table): each instance reads every partition of `kafka.catalog_topic` from its start
//! and applies the listings to the item model its workers rank against, so an item out of stock
//! is filtered by every instance, not only by the one whose group member consumes its
//! partition (that member checks the message and dead-letters a bad one, and nothing else).
//!
//! Catalog triggers fire where the watchers are: each worker keeps the views of its own users
//! and is told of every listing change after the catch-up. What the topic held at start is
//! applied without telling anyone: those changes happened before this start, and firing them
//! again would repeat triggers (the watchers of a restarted instance are its new events').

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::client::{partition_count, replay_consumer_config};
use super::context::{ListingNews, WorkerInput};
use super::error::RunError;
use super::health::Health;
use super::model_updates::behind;
use crate::catalog::CatalogUpdate;
use crate::clean::Cleaner;
use crate::config::{Config, EngineConfig};
use crate::engine::{apply_listing, SharedItems};

/// The workers' inputs (filled once they run).
pub type WorkerInputs = Arc<Mutex<Vec<mpsc::Sender<WorkerInput>>>>;

pub struct CatalogFollower {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RunError>>,
}

impl CatalogFollower {
    pub fn start(
        config: &Config,
        items: SharedItems,
        workers: WorkerInputs,
        health: Arc<Health>,
        followed: Counter,
    ) -> Result<CatalogFollower, RunError> {
        let kafka = &config.kafka;
        let group = format!("{}.catalog.{}", kafka.group_id, std::process::id());
        let mut client = replay_consumer_config(kafka, &group);
        client.set("enable.partition.eof", "false");
        let consumer: BaseConsumer = client.create()?;
        let topic = kafka.catalog_topic.clone();
        let mut assignment = TopicPartitionList::new();
        let mut targets = BTreeMap::new();
        for partition in 0..partition_count(&consumer, &topic)? as i32 {
            assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
            let (low, high) =
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
            if high > low {
                targets.insert(partition, high);
            }
        }
        consumer.assign(&assignment)?;
        health.set_catalog_behind(behind(&targets, &BTreeMap::new()));
        let mut follow = Follow {
            consumer,
            items,
            workers,
            cleaner: Cleaner::new(config.engine.clean.clone()),
            engine: config.engine.clone(),
            followed,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("catalog".into())
            .spawn(move || follow.run(&stopping, targets, &health))
            .map_err(RunError::Thread)?;
        Ok(CatalogFollower { stop, thread })
    }

    pub fn stop(self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::Relaxed);
        (self.thread.join()).map_err(|_| RunError::ThreadPanicked("catalog follower"))?
    }
}

struct Follow {
    consumer: BaseConsumer,
    items: SharedItems,
    workers: WorkerInputs,
    cleaner: Cleaner,
    engine: EngineConfig,
    followed: Counter,
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
        while !stop.load(Ordering::Relaxed) {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    read.insert(message.partition(), message.offset() + 1);
                    let listing = self.cleaner.clean_catalog(message.payload(), message.key());
                    // A bad listing is the group member's to dead-letter (once, not per instance).
                    if let Ok(update) = listing {
                        self.apply(&update, caught_up);
                        self.followed.inc();
                    }
                }
                Some(Err(err)) => tracing::warn!(error = %err, "catalog: consumer error"),
                None => {}
            }
            if !caught_up {
                let left = behind(&targets, &read);
                health.set_catalog_behind(left);
                caught_up = left == 0;
                if caught_up {
                    tracing::info!("catalog caught up");
                }
            }
        }
        Ok(())
    }

    /// Applies a listing; a change after the catch-up goes to every worker for its triggers.
    fn apply(&self, update: &CatalogUpdate, tell: bool) {
        let mut model = self.items.write().expect("a worker panicked while ranking");
        let applied = apply_listing(&mut model, update, &self.engine);
        let now_ms = model.latest_ts_ms;
        drop(model);
        let Some((item, change)) = applied.filter(|_| tell) else {
            return;
        };
        let updated_at_ms = match update {
            CatalogUpdate::Upsert(listed) => listed.updated_at_ms,
            CatalogUpdate::Remove { .. } => now_ms,
        };
        let news = ListingNews {
            item,
            change,
            updated_at_ms,
        };
        let workers = self.workers.lock().expect("not poisoned").clone();
        for worker in workers {
            // A worker that stopped reports its own error.
            let _ = worker.blocking_send(WorkerInput::Listing(news));
        }
    }
}
