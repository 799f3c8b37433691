//! The read model's follower (item-owned scale-out): every instance reads all of
//! `items.records_topic` from its start and installs the owners' records into the item model
//! its workers rank against (`ItemKeys::install`). What the topic held at start is read first
//! and installed in one go — records then resolve each other's keys whatever order they were
//! read in — and `/readyz` says how much is left meanwhile. After that, what each poll brings
//! is installed as it comes. Its own thread: installing is CPU work under the item model's
//! write lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;

use super::error::RunError;
use super::follow::{from_start, Background, CatchUp};
use super::health::Health;
use crate::config::{Config, EngineConfig};
use crate::engine::{ItemKeys, Publication, SharedItems};
use crate::item_metrics::ItemMetrics;

/// Records installed at most at once after the catch-up (the write lock's hold).
const MAX_RECORDS_PER_INSTALL: usize = 4096;

/// Starts following the records topic on thread `item-records`.
pub fn follow(
    config: &Config,
    items: SharedItems,
    health: Arc<Health>,
    metrics: &ItemMetrics,
) -> Result<Background, RunError> {
    let (consumer, catch_up) = from_start(&config.kafka, "records", &config.items.records_topic)?;
    health.set_records_behind(catch_up.left());
    let mut follow = Follow {
        consumer,
        items,
        keys: ItemKeys::default(),
        engine: config.engine.clone(),
        metrics: metrics.clone(),
    };
    Background::spawn("item-records", "item records follower", move |stop| {
        follow.run(stop, catch_up, &health)
    })
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
        mut catch_up: CatchUp,
        health: &Health,
    ) -> Result<(), RunError> {
        let mut publication = Publication::default();
        while !stop.load(Ordering::Relaxed) {
            let caught_up = catch_up.done();
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    catch_up.read(message.partition(), message.offset());
                    self.add(&mut publication, &message);
                    if caught_up && publication.len() < MAX_RECORDS_PER_INSTALL {
                        continue; // more may be waiting: install them together
                    }
                }
                Some(Err(err)) => tracing::warn!(error = %err, "item records: consumer error"),
                None => {}
            }
            if !caught_up {
                health.set_records_behind(catch_up.left());
                if !catch_up.done() {
                    continue;
                }
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
