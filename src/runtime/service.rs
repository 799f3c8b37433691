//! `streamrec run`'s wiring point: from the settings, the triggers' rules, the metrics and the
//! admin listener, then the state dir (engine and checkpoints); then the Kafka loop
//! (`kafka::consume`) with all of it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{Cadence, Checkpointer, Durable};
use crate::admin::{serve, Metrics};
use crate::config::Config;
use crate::engine::Engine;
use crate::kafka::{consume, Observers, Prepared, RunError, RunReport};
use crate::offsets::{by_index, Offsets};
use crate::store::StateStore;

/// Runs until `shutdown` resolves, then drains and commits.
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    observers: Observers,
) -> Result<RunReport, RunError> {
    let started = Instant::now();
    let rules = Arc::new(config.triggers.rules()?);
    let kafka = &config.kafka;
    let metrics = Arc::new(Metrics::new([
        kafka.recommendations_topic.clone(),
        kafka.similar_items_topic.clone(),
        kafka.dead_letter_topic.clone(),
        kafka.triggers_topic.clone(),
        kafka.model_updates_topic.clone(),
    ]));
    // `/readyz` says "loading state" until the state dir is open.
    let state_loaded = Arc::new(AtomicBool::new(false));
    if let Some(listen) = config.admin.address() {
        let health = observers.health.clone();
        serve(listen, metrics.clone(), health, state_loaded.clone())
            .await
            .map_err(RunError::Admin)?;
    }
    let durable = open_state(config)?;
    if let Some((_, durable)) = &durable {
        let stored = durable.checkpointer.store().users_stored()?;
        metrics.users_in_store.set(stored as i64);
    }
    state_loaded.store(true, Ordering::Relaxed);
    let prepared = Prepared {
        started,
        rules,
        metrics,
        durable,
    };
    consume(config, shutdown, observers, prepared).await
}

/// With a state dir: the stored engine (or a fresh one) and checkpointing for the one worker.
/// Consumption then resumes exactly where the state ends (see `kafka::position`), whatever
/// Kafka's committed offsets say.
fn open_state(config: &Config) -> Result<Option<(Engine, Durable)>, RunError> {
    if config.state.dir.is_empty() {
        return Ok(None);
    }
    let store = StateStore::open(std::path::Path::new(&config.state.dir), true)?;
    let started = Instant::now();
    // Users stay in the store until their next event: start-up time does not grow with them.
    let (engine, offsets) = store
        .open_engine(config.engine.clone())?
        .unwrap_or_else(|| (Engine::new(config.engine.clone()), Offsets::new()));
    tracing::info!(
        dir = %config.state.dir,
        items = engine.item_count(),
        partitions = offsets.len(),
        ms = started.elapsed().as_millis() as u64,
        "state loaded (users load on their next event)"
    );
    let topics = config.kafka.consumed_topics();
    let next = by_index(&offsets, &topics);
    let cadence = Cadence {
        interval: Duration::from_millis(config.state.checkpoint_interval_ms),
        max_events: Some(config.state.checkpoint_max_events),
    };
    let durable = Durable {
        checkpointer: Checkpointer::new(store, cadence, topics, next),
        max_users: config.state.max_users_in_memory as usize,
        changelog: Some(config.kafka.changelog_topic.clone()).filter(|t| !t.is_empty()),
    };
    Ok(Some((engine, durable)))
}
