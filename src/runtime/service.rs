//! `streamrec run`'s wiring point: from the settings, the triggers' rules, the metrics and the
//! admin listener, then the state dir (engine and checkpoints); then the Kafka loop
//! (`kafka::consume`) with all of it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::checkpoint::{Cadence, Changelog, Checkpointer, Durable};
use crate::admin::{serve, Metrics};
use crate::config::Config;
use crate::engine::Engine;
use crate::experiments;
use crate::kafka::{consume, Observers, Prepared, RunError, RunReport};
use crate::offsets::{by_index, worker_of, Offsets};
use crate::query::{self, Queries, Routes};
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
    let metrics = Arc::new(Metrics::new(
        [
            kafka.recommendations_topic.clone(),
            kafka.similar_items_topic.clone(),
            kafka.dead_letter_topic.clone(),
            kafka.triggers_topic.clone(),
            kafka.model_updates_topic.clone(),
        ],
        &experiments::arms(&config.engine.experiments),
    ));
    let max_items = i64::try_from(config.engine.max_items).unwrap_or(i64::MAX);
    metrics.max_items.set(max_items);
    // `/readyz` says "loading state" until the state dir is open.
    let state_loaded = Arc::new(AtomicBool::new(false));
    if let Some(listen) = config.admin.address() {
        let health = observers.health.clone();
        serve(listen, metrics.clone(), health, state_loaded.clone())
            .await
            .map_err(RunError::Admin)?;
    }
    let queries = serve_queries(config, &observers, &metrics).await?;
    let durable = open_state(config)?;
    if let Some((_, durable)) = durable.as_ref().and_then(|workers| workers.first()) {
        let stored = durable.checkpointer.store().users_stored()?;
        metrics.users_in_store.set(stored as i64);
    }
    state_loaded.store(true, Ordering::Relaxed);
    let prepared = Prepared {
        started,
        rules,
        metrics,
        durable,
        queries,
    };
    consume(config, shutdown, observers, prepared).await
}

/// With `query.listen`: the query API's listener, and the workers' ends of its queues. The
/// bound address goes to `observers.query_address`.
async fn serve_queries(
    config: &Config,
    observers: &Observers,
    metrics: &Arc<Metrics>,
) -> Result<Option<Queries>, RunError> {
    if config.query.address().is_none() {
        return Ok(None);
    }
    let members = (!config.query.members_topic.is_empty())
        .then(|| (Arc::default(), config.kafka.instance_id.clone()));
    let (routes, receivers) = Routes::new(
        config.pipeline.workers,
        config.query.partitioner(),
        &config.kafka.input_topics[0],
        observers.health.clone(),
        members,
    );
    let bound = query::server::serve(config, routes.clone(), metrics.clone())
        .await
        .map_err(RunError::Query)?;
    if let Some(bound) = bound {
        let _ = observers.query_address.set(bound);
    }
    Ok(Some((routes, receivers)))
}

/// With a state dir: per worker, the stored engine (or a fresh one, all on one item model) and
/// its checkpoints. Consumption then resumes exactly where the state ends (see
/// `kafka::position`), whatever Kafka's committed offsets say.
fn open_state(config: &Config) -> Result<Option<Vec<(Engine, Durable)>>, RunError> {
    if config.state.dir.is_empty() {
        return Ok(None);
    }
    let store = StateStore::open(std::path::Path::new(&config.state.dir), true)?;
    let started = Instant::now();
    let workers = config.pipeline.workers;
    // Users stay in the store until their next event: start-up time does not grow with them.
    let (engines, offsets) = match store.open_workers(config.engine.clone(), workers)? {
        Some(stored) => stored,
        None => (Engine::workers(&config.engine, workers), Offsets::new()),
    };
    tracing::info!(
        dir = %config.state.dir,
        items = engines[0].item_count(),
        partitions = offsets.len(),
        workers,
        ms = started.elapsed().as_millis() as u64,
        "state loaded (users load on their next event)"
    );
    let topics = config.kafka.consumed_topics();
    let next = by_index(&offsets, &topics);
    let cadence = Cadence {
        interval: Duration::from_millis(config.state.checkpoint_interval_ms),
        max_events: Some(config.state.checkpoint_max_events),
    };
    let max_users = config.state.max_users_in_memory as usize;
    let durable = engines.into_iter().enumerate().map(|(worker, engine)| {
        // Each worker checkpoints the positions of its own partitions.
        let mut own = next.clone();
        own.retain(|key, _| worker_of(key.partition, workers) == worker);
        let durable = Durable {
            checkpointer: Checkpointer::new(store.clone(), cadence, topics.clone(), own),
            max_users: max_users.div_ceil(workers),
            changelog: (!config.kafka.changelog_topic.is_empty()).then(|| {
                Changelog::new(
                    config.kafka.changelog_topic.clone(),
                    config.kafka.changelog_dedup_keys,
                    config.kafka.changelog_dedup_slots,
                )
            }),
        };
        (engine, durable)
    });
    Ok(Some(durable.collect()))
}
