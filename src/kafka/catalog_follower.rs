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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use tokio::sync::mpsc;

use super::context::{ListingNews, WorkerInput};
use super::error::RunError;
use super::follow::{from_start, Background, CatchUp};
use super::health::Health;
use crate::catalog::CatalogUpdate;
use crate::clean::Cleaner;
use crate::config::{Config, EngineConfig};
use crate::engine::{apply_listing, SharedItems};

/// The workers' inputs (filled once they run).
pub type WorkerInputs = Arc<Mutex<Vec<mpsc::Sender<WorkerInput>>>>;

/// Starts following the catalog on thread `catalog`; `followed` counts the listings applied.
pub fn follow(
    config: &Config,
    items: SharedItems,
    workers: WorkerInputs,
    health: Arc<Health>,
    followed: Counter,
) -> Result<Background, RunError> {
    let (consumer, catch_up) = from_start(&config.kafka, "catalog", &config.kafka.catalog_topic)?;
    health.set_catalog_behind(catch_up.left());
    let mut follow = Follow {
        consumer,
        items,
        workers,
        cleaner: Cleaner::new(config.engine.clean.clone()),
        engine: config.engine.clone(),
        followed,
    };
    Background::spawn("catalog", "catalog follower", move |stop| {
        follow.run(stop, catch_up, &health)
    })
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
        mut catch_up: CatchUp,
        health: &Health,
    ) -> Result<(), RunError> {
        while !stop.load(Ordering::Relaxed) {
            let caught_up = catch_up.done();
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => {
                    catch_up.read(message.partition(), message.offset());
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
                health.set_catalog_behind(catch_up.left());
                if catch_up.done() {
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
