//! `streamrec run`'s Kafka loop (wired by `runtime::run`): consume events, process them in
//! partition order, publish what they cause, and store each input offset once every output it
//! caused is acknowledged (at-least-once).
//!
//! The consumer task hands each message to worker `partition % workers` through a bounded
//! channel (a slow worker stops the consumer: backpressure). Workers own their users; the item
//! model is shared behind a read-write lock. With one worker the engine is deterministic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::catalog_follower::{self, WorkerInputs};
use super::changelog::{read_partition, ChangelogError, PartitionLog};
use super::checkpoint_round::CheckpointRounds;
use super::client::{consumer_config, partition_count, producer_config};
use super::context::{GroupContext, Restored, WorkerInput};
use super::error::{error_code, RunError};
use super::follow::Background;
use super::health::Health;
use super::latency::{new_latency, Latency};
use super::leave::leave_group;
use super::log_end::{log_holds, Holds};
use super::online_publisher::OnlinePublisher;
use super::position::{Positions, Verdict};
use super::restore::Restores;
use super::sink::Topics;
use super::worker::Worker;
use super::{item_owners, item_records, members};
use crate::admin::Metrics;
use crate::config::{Config, KafkaConfig};
use crate::engine::Engine;
use crate::engine::SharedItems;
use crate::item_metrics::ItemMetrics;
use crate::offsets::{topic_index, worker_of, PartitionKey};
use crate::pipeline::{Processor, Stats};
use crate::query::Queries;
use crate::runtime::checkpoint::Durable;
use crate::triggers::Rules;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Messages buffered per worker before the consumer waits.
const WORKER_QUEUE: usize = 1024;
/// Room a full worker queue must have before the consumer goes on (see `send_to_worker`).
const WAKE_ROOM: usize = 64;

/// Sends an input to a worker. When the worker's queue is full, waits until it has room for
/// `WAKE_ROOM` inputs, not one: waiting for one slot, the consumer would be woken for every
/// message the worker takes (a thread wake-up each, 9 % of a saturated worker's time). The
/// worker takes its inputs one at a time as before.
async fn send_to_worker(
    worker: &mpsc::Sender<WorkerInput>,
    input: WorkerInput,
) -> Result<(), mpsc::error::SendError<WorkerInput>> {
    if worker.capacity() == 0 {
        let room = worker
            .reserve_many(WAKE_ROOM.min(worker.max_capacity()))
            .await;
        drop(room); // the permits go back; the send below takes one of them
    }
    worker.send(input).await
}

/// Seeks a partition to `next`, where the state ends, unless its log ends before that (checked
/// when the seek goes forward, from a message at `offset`: a broker may answer a fetch past
/// the end with nothing rather than an out-of-range error).
async fn seek_to_state(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
    next: i64,
) -> Result<Verdict, RunError> {
    if offset < next {
        if let Some((log_start, log_end)) =
            log_before(consumer, kafka, topic, partition, next).await
        {
            return Ok(Verdict::LogBehindState {
                next,
                log_start,
                log_end,
            });
        }
    }
    tracing::info!(topic, partition, next, "seeking to where the state ends");
    consumer.seek(
        topic,
        partition,
        Offset::Offset(next),
        Duration::from_secs(10),
    )?;
    // The state reflects everything before `next`: let the group's commit say so too, even if
    // nothing new arrives (a kill after a checkpoint and before its commit left the group
    // behind).
    if let Err(err) = consumer.store_offset(topic, partition, next - 1) {
        tracing::debug!(topic, partition, error = %err, "state position not stored");
    }
    Ok(Verdict::Skip { seek_to: None })
}

/// The log's start and end when it ends before `next`: the listed end says so, and a fetch of
/// the state's last offset (`next` - 1) confirms it (some brokers list an end behind what they
/// serve). None when the log holds it, or when neither check answers.
async fn log_before(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    kafka: &KafkaConfig,
    topic: &str,
    partition: i32,
    next: i64,
) -> Option<(i64, i64)> {
    let (client, name) = (consumer.clone(), topic.to_owned());
    let watermarks = tokio::task::spawn_blocking(move || {
        client.fetch_watermarks(&name, partition, Duration::from_secs(5))
    })
    .await;
    let Ok(Ok((low, high))) = watermarks else {
        return None;
    };
    if high >= next {
        return None;
    }
    let (kafka, name) = (kafka.clone(), topic.to_owned());
    let holds =
        tokio::task::spawn_blocking(move || log_holds(&kafka, &name, partition, next - 1, low))
            .await
            .unwrap_or(Holds::Unknown);
    match holds {
        Holds::No => Some((low, high)),
        Holds::Yes | Holds::Unknown => {
            tracing::warn!(topic, partition, listed_end = high, next, ?holds, "the broker lists the log's end before the state's, but a fetch does not confirm it; going on");
            None
        }
    }
}

/// The error that stops `run` on a log that ends before its state; the group's commit goes
/// back to where the log starts, so that a state without offsets (or an empty one) reads it
/// from there.
fn state_ahead_of_log(
    consumer: &StreamConsumer<GroupContext>,
    topic: &str,
    partition: i32,
    next: i64,
    log: std::ops::Range<i64>,
) -> Result<RunError, RunError> {
    let mut start = TopicPartitionList::new();
    start.add_partition_offset(topic, partition, Offset::Offset(log.start))?;
    consumer.store_offsets(&start)?;
    Ok(RunError::StateAheadOfLog {
        topic: topic.to_owned(),
        partition,
        next,
        log_end: log.end,
    })
}

/// What a run did, for the caller to report.
pub struct RunReport {
    /// One per worker; each engine holds that worker's users (the item model is shared).
    pub processors: Vec<Processor>,
    /// Microseconds from an event's Kafka timestamp to its recommendation's acknowledgement.
    pub latency_us: Histogram<u64>,
    pub elapsed: Duration,
}

impl RunReport {
    /// Counters summed over workers.
    pub fn stats(&self) -> Stats {
        let totals: Vec<Stats> = self.processors.iter().map(Processor::totals).collect();
        sum(totals.iter())
    }
}

fn sum<'a>(all: impl Iterator<Item = &'a Stats>) -> Stats {
    let mut total = Stats::default();
    for stats in all {
        total.merge(stats);
    }
    total
}

/// What the caller can watch while `run` runs.
pub struct Observers {
    /// Receives the counters (summed over workers) every 100 ms and at the end.
    pub progress: Option<watch::Sender<Stats>>,
    pub health: Arc<Health>,
    /// Shared so a watcher can read (or reset) it while the pipeline runs.
    pub latency: Latency,
    /// The query listener's bound address, once bound (`query.listen` may name port 0).
    pub query_address: Arc<std::sync::OnceLock<std::net::SocketAddr>>,
}

impl Default for Observers {
    fn default() -> Self {
        Observers {
            progress: None,
            health: Arc::default(),
            latency: new_latency(),
            query_address: Arc::default(),
        }
    }
}

type Workers = FuturesUnordered<JoinHandle<Result<Processor, RunError>>>;

/// What the wiring point (`runtime::run`) made for the loop.
pub struct Prepared {
    pub started: Instant,
    pub rules: Arc<Rules>,
    pub metrics: Arc<Metrics>,
    /// With a state dir: per worker, the stored engine (or a fresh one, all on one item
    /// model) and its checkpoints.
    pub durable: Option<Vec<(Engine, Durable)>>,
    /// With the query API: its routes, and each worker's end of its query queue.
    pub queries: Option<Queries>,
}

/// Consumes until `shutdown` resolves, then drains and commits.
pub async fn consume(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    observers: Observers,
    prepared: Prepared,
) -> Result<RunReport, RunError> {
    let Prepared {
        started,
        rules,
        metrics,
        durable: restored,
        queries,
    } = prepared;
    let kafka = &config.kafka;
    let mut context = GroupContext::new(
        observers.health.clone(),
        Duration::from_millis(config.pipeline.drain_timeout_ms),
    );
    let mut client = consumer_config(kafka, &kafka.group_id);
    if config.admin.address().is_some() {
        context.metrics = Some(metrics.clone());
        if client.get("statistics.interval.ms").is_none() {
            client.set("statistics.interval.ms", "5000");
        }
    }
    let restores = (!kafka.changelog_topic.is_empty())
        .then(|| Restores::new(kafka.input_topics.clone(), observers.health.clone()));
    context.restore = restores.clone();
    let worker_inputs = context.workers.clone();
    let consumer: Arc<StreamConsumer<GroupContext>> =
        Arc::new(client.create_with_context(context)?);
    let topics = kafka.consumed_topics();
    let mut positions_table = match &restored {
        Some(workers) => {
            let mut stored = crate::offsets::NextOffsets::new();
            for (_, checkpoints) in workers {
                stored.extend(checkpoints.checkpointer.durable_offsets().clone());
            }
            Positions::from_state(&stored)
        }
        None => Positions::default(),
    }
    .named(&topics);
    let mut needed = topics.clone();
    if config.items.owned() {
        needed.extend([
            config.items.work_topic.clone(),
            config.items.records_topic.clone(),
        ]);
    }
    if !config.query.members_topic.is_empty() {
        needed.push(config.query.members_topic.clone());
    }
    tokio::pin!(shutdown);
    let timeout = Duration::from_millis(kafka.missing_topic_timeout_ms);
    tokio::select! {
        waited = wait_for_topics(&consumer, &needed, &observers.health, timeout) => waited?,
        _ = &mut shutdown => {
            tracing::info!("stopped while waiting for the consumed topics");
            let latency_us = observers.latency.lock().expect("not poisoned").clone();
            return Ok(RunReport { processors: Vec::new(), latency_us, elapsed: started.elapsed() });
        }
    }
    if let Some((routes, _)) = &queries {
        let events = partition_count(&*consumer, &kafka.input_topics[0])?;
        routes.set_partitions(events as i32);
    }
    let inputs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs)?;
    let producer: FutureProducer = producer_config(kafka).create()?;
    let mut membership = None;
    if let Some(members) = queries.as_ref().and_then(|(routes, _)| routes.members()) {
        let bound = observers.query_address.get().copied();
        let announcer = members::Announcer::new(config, producer.clone(), bound);
        membership = Some((members::follow(config, members)?, announcer));
    }
    let mut online = OnlinePublisher::new(config, &producer);
    let work_partitions = item_partitions(config, &consumer)?;
    let (senders, mut workers, stats, items) = start_workers(
        config,
        (&consumer, &producer),
        &observers,
        &metrics,
        (restored, queries),
        (&rules, work_partitions),
    );
    *worker_inputs.lock().expect("not poisoned") = senders.clone();
    let item_side = match config.items.owned() {
        true => Some(OwnedItems::start(
            config,
            (items.clone(), worker_inputs.clone()),
            observers.health.clone(),
            &metrics.items_side,
        )?),
        false => None,
    };
    let follower = match kafka.model_updates_topic.as_str() {
        "" => None,
        _ => Some(super::model_updates::follow(
            config,
            items,
            observers.health.clone(),
        )?),
    };
    let count = config.pipeline.workers;

    if let Some(restores) = &restores {
        check_changelog(&consumer, kafka, restores.inputs())?;
    }
    let (restored_tx, mut restored_rx) =
        mpsc::channel::<(i32, Result<PartitionLog, ChangelogError>)>(64);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut failure = None;
    let mut seen_assignments = 0;
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(stopped) = workers.next() => {
                failure = Some(worker_failure(stopped));
                break;
            }
            _ = tick.tick() => {
                let totals = report_progress(&observers, &stats, &metrics);
                if let Some(online) = &mut online {
                    online.publish_if_due(&totals.online);
                }
                if let Some((_, announcer)) = &mut membership {
                    announcer.announce_if_changed(&observers.health);
                }
                if let Some(restores) = &restores {
                    start_reading(restores, kafka, &restored_tx);
                }
            }
            Some((partition, log)) = restored_rx.recv() => {
                let log = log.map_err(RunError::Restore)?;
                let Some(restores) = restores.as_ref().filter(|r| r.read(partition)) else {
                    tracing::info!(partition, "changelog read of a partition revoked meanwhile dropped");
                    continue;
                };
                let Some(positions) = install(&senders[worker_of(partition, count)], log).await else {
                    // The worker stopped: its own error says why.
                    let stopped = workers.next().await;
                    failure = Some(stopped.map_or(RunError::WorkerGone { when: "during a restore" }, worker_failure));
                    break;
                };
                for &(key, next) in &positions {
                    positions_table.restored(key, next);
                }
                if restores.installed(partition) {
                    let next_of = |topic: &str| {
                        let index = topic_index(&topics, topic)?;
                        positions_table.next_of(PartitionKey::new(index, partition))
                    };
                    restores.resume(&consumer, partition, next_of);
                }
            }
            message = consumer.recv() => match message {
                Ok(message) => {
                    if observers.health.brokers_down() {
                        observers.health.set_brokers_down(false);
                    }
                    let assignments = observers.health.assignments();
                    if assignments != seen_assignments {
                        if seen_assignments > 0 {
                            positions_table.reassigned();
                        }
                        seen_assignments = assignments;
                    }
                    let (topic, partition) = (message.topic(), message.partition());
                    let Some(index) = topic_index(&topics, topic) else {
                        failure = Some(RunError::UnknownTopic { topic: topic.to_owned() });
                        break;
                    };
                    if restores.as_ref().is_some_and(|r| r.holds(topic, partition)) {
                        // Fetched before the pause: read again from here (or from the
                        // restored position) once the partition resumes.
                        positions_table.held_at(PartitionKey::new(index, partition), message.offset());
                        continue;
                    }
                    let mut verdict = positions_table.check(PartitionKey::new(index, partition), message.offset());
                    if let Verdict::Skip { seek_to: Some(next) } = verdict {
                        verdict = seek_to_state(&consumer, kafka, topic, partition, message.offset(), next).await?;
                    }
                    match verdict {
                        Verdict::Process => {}
                        Verdict::Skip { .. } => continue,
                        Verdict::LogBehindState { next, log_start, log_end } => {
                            let log = log_start..log_end;
                            failure = Some(state_ahead_of_log(&consumer, topic, partition, next, log)?);
                            break;
                        }
                    }
                    let input = WorkerInput::Message(message.detach());
                    if send_to_worker(&senders[worker_of(partition, count)], input).await.is_err() {
                        continue; // that worker ended; `workers.next()` reports why
                    }
                }
                Err(err) => {
                    metrics.count_consumer_error(&error_code(&err));
                    tracing::warn!(error = %err, "consumer error; librdkafka retries");
                }
            },
        }
    }
    // One drain budget from here, shared by its steps: the workers' drains, the item owners'
    // catch-up and flush, the final flush.
    let drain_by = Instant::now() + Duration::from_millis(config.pipeline.drain_timeout_ms);
    drop(senders);
    worker_inputs.lock().expect("not poisoned").clear();
    let mut processors = Vec::with_capacity(count);
    while let Some(stopped) = workers.next().await {
        match stopped {
            Ok(Ok(processor)) => processors.push(processor),
            other => failure = Some(cause(failure, worker_failure(other))),
        }
    }
    // Each step of a shutdown says when it is done: the last one logged is where a shutdown
    // that hangs (and ends at `pipeline.shutdown_limit_ms`) stood.
    tracing::info!("shutdown: workers drained");
    let stopped = item_side.map(|owned| owned.stop(drain_by));
    if stopped.is_some() {
        tracing::info!("shutdown: item owners stopped");
    }
    let members_stopped = membership.map(|(follower, _)| follower.stop());
    if let Some(follower) = follower {
        follower.abort();
    }
    // The first error of the workers, the item owners and the members' follower, in that order.
    let finished = failure.map_or(Ok(()), Err);
    let finished = finished
        .and(stopped.transpose())
        .and(members_stopped.transpose());
    let finished = finished.and_then(|_| {
        let totals = report_progress(&observers, &stats, &metrics);
        if let Some(online) = &mut online {
            online.publish(&totals.online);
        }
        finish(&consumer, &producer, drain_by)?;
        tracing::info!("shutdown: outputs flushed and offsets committed; leaving the group");
        Ok(())
    });
    // Every worker has ended, so this handle is the consumer's last: dropped here, on an error
    // too, its close would have no limit (see `leave`).
    if leave_group(consumer, drain_by).await && finished.is_ok() {
        tracing::info!("shutdown: left the group");
    }
    finished?;
    let latency_us = observers.latency.lock().expect("not poisoned").clone();
    Ok(RunReport {
        processors,
        latency_us,
        elapsed: started.elapsed(),
    })
}

/// Waits until every consumed topic exists, checking each second for at most `timeout`;
/// meanwhile `/readyz` names the missing ones. A subscription to a missing topic would only log
/// that it is unavailable, and the group would look like it is forming.
async fn wait_for_topics(
    consumer: &Arc<StreamConsumer<GroupContext>>,
    topics: &[String],
    health: &Health,
    timeout: Duration,
) -> Result<(), RunError> {
    let started = Instant::now();
    loop {
        let (consumer, wanted) = (consumer.clone(), topics.to_vec());
        let missing = tokio::task::spawn_blocking(move || {
            let mut missing = Vec::new();
            for topic in wanted {
                if partition_count(&*consumer, &topic)? == 0 {
                    missing.push(topic);
                }
            }
            Ok::<_, KafkaError>(missing)
        })
        .await
        .map_err(RunError::Panicked)??;
        health.set_missing_topics(missing.clone());
        if missing.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(RunError::MissingTopics {
                topics: missing,
                waited_ms: timeout.as_millis() as u64,
            });
        }
        tracing::warn!(topics = ?missing, "consumed topics do not exist; waiting for them");
        tokio::time::sleep(Duration::from_secs(1).min(timeout)).await;
    }
}

/// The changelog must exist with a partition for every input partition (partition p's users
/// are written to changelog partition p).
fn check_changelog(
    consumer: &StreamConsumer<GroupContext>,
    kafka: &crate::config::KafkaConfig,
    inputs: &[String],
) -> Result<(), RunError> {
    let changelog = partition_count(consumer, &kafka.changelog_topic)?;
    for input in inputs {
        let needed = partition_count(consumer, input)?;
        if changelog < needed {
            return Err(RunError::ChangelogTooSmall {
                topic: kafka.changelog_topic.clone(),
                partitions: changelog,
                input: input.clone(),
                needed,
            });
        }
    }
    Ok(())
}

/// Reads each held partition's changelog on a blocking thread; the result comes back on `done`.
fn start_reading(
    restores: &Restores,
    kafka: &crate::config::KafkaConfig,
    done: &mpsc::Sender<(i32, Result<PartitionLog, ChangelogError>)>,
) {
    for partition in restores.start_reading() {
        let kafka = kafka.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let log = tokio::task::spawn_blocking(move || read_partition(&kafka, partition))
                .await
                .unwrap_or(Err(ChangelogError::Panicked { partition }));
            let _ = done.send((partition, log)).await;
        });
    }
}

/// Hands a partition's changelog to the worker that owns it; None when the worker stopped
/// before it answered.
async fn install(worker: &mpsc::Sender<WorkerInput>, log: PartitionLog) -> Option<Restored> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    worker
        .send(WorkerInput::Restore(Box::new(log), reply))
        .await
        .ok()?;
    answer.await.ok()
}

fn start_workers(
    config: &Config,
    (consumer, producer): (&Arc<StreamConsumer<GroupContext>>, &FutureProducer),
    observers: &Observers,
    metrics: &Arc<Metrics>,
    (restored, queries): (Option<Vec<(Engine, Durable)>>, Option<Queries>),
    (rules, work_partitions): (&Arc<Rules>, u32),
) -> (
    Vec<mpsc::Sender<WorkerInput>>,
    Workers,
    WorkerStats,
    SharedItems,
) {
    let stats = Arc::new(Mutex::new(vec![Stats::default(); config.pipeline.workers]));
    let engines: Vec<(Engine, Option<Durable>)> = match restored {
        Some(workers) => workers.into_iter().map(|(e, d)| (e, Some(d))).collect(),
        None => {
            let fresh = Engine::workers(&config.engine, config.pipeline.workers);
            fresh.into_iter().map(|engine| (engine, None)).collect()
        }
    };
    // One item model for all of them.
    let items = engines[0].0.shared_items();
    let rounds = Arc::new(CheckpointRounds::new(config.pipeline.workers));
    let topics = Arc::new(Topics {
        recommendations: config.kafka.recommendations_topic.clone(),
        similar_items: config.kafka.similar_items_topic.clone(),
        dead_letter: config.kafka.dead_letter_topic.clone(),
        triggers: config.kafka.triggers_topic.clone(),
        model_updates: config.kafka.model_updates_topic.clone(),
        item_work: config.items.work_topic.clone(),
        schema_ids: config.kafka.schema_ids,
    });
    let inputs = Arc::new(config.kafka.consumed_topics());
    let workers = Workers::new();
    let mut senders = Vec::new();
    let (routes, receivers) = match queries {
        Some((routes, receivers)) => (Some(routes), receivers.into_iter().map(Some).collect()),
        None => (None, Vec::new()),
    };
    let mut receivers = receivers.into_iter();
    for (index, (engine, checkpoints)) in engines.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        senders.push(tx);
        let worker = Worker {
            index,
            checkpoints,
            rounds: rounds.clone(),
            called: rounds.watch(),
            consumer: consumer.clone(),
            producer: producer.clone(),
            topics: topics.clone(),
            inputs: inputs.clone(),
            processor: processor_for(config, engine, rules, work_partitions),
            latency_us: observers.latency.clone(),
            metrics: metrics.clone(),
            users_reported: 0,
            rejections_logged: Stats::default(),
            last_rejection_log: Instant::now(),
            partition_spans: BTreeMap::new(),
            stats: stats.clone(),
            queries: receivers.next().flatten(),
            routes: routes.clone(),
            partitioner_checked: false,
        };
        workers.push(tokio::spawn(worker.run(rx, config.pipeline.clone())));
    }
    (senders, workers, stats, items)
}

fn processor_for(
    config: &Config,
    engine: Engine,
    rules: &Arc<Rules>,
    work_partitions: u32,
) -> Processor {
    let mut processor = Processor::with_engine(config, engine)
        .with_rules(rules.clone())
        .checking_keys();
    if !config.kafka.changelog_topic.is_empty() {
        processor = processor.tracking_positions();
    }
    if config.items.owned() {
        processor = processor.sending_item_work(&config.items, work_partitions);
    }
    match config.kafka.model_updates_topic.as_str() {
        "" => processor,
        _ => processor.replicating(&config.kafka.instance_id),
    }
}

/// Item-owned scale-out: the partitions of the work topic (the item partitions), checked
/// against the records topic's; 0 when off.
fn item_partitions(
    config: &Config,
    consumer: &StreamConsumer<GroupContext>,
) -> Result<u32, RunError> {
    let items = &config.items;
    if !items.owned() {
        return Ok(0);
    }
    let work = partition_count(consumer, &items.work_topic)?;
    for (key, topic) in [
        ("items.records_topic", &items.records_topic),
        ("items.changelog_topic", &items.changelog_topic),
    ] {
        let has = match topic.as_str() {
            "" => continue,
            _ => partition_count(consumer, topic)?,
        };
        if has < work {
            return Err(RunError::ItemTopicsMismatch {
                key,
                topic: topic.clone(),
                work: items.work_topic.clone(),
                has,
                needed: work,
            });
        }
    }
    Ok(work as u32)
}

/// Item-owned scale-out's threads: this instance's item owners, the follower of every
/// owner's records, and with a catalog the follower of every catalog partition.
struct OwnedItems {
    owners: item_owners::Owners,
    follower: Background,
    catalog: Option<Background>,
}

impl OwnedItems {
    fn start(
        config: &Config,
        (items, workers): (SharedItems, WorkerInputs),
        health: Arc<Health>,
        metrics: &ItemMetrics,
    ) -> Result<OwnedItems, RunError> {
        let catalog = match config.kafka.catalog_topic.as_str() {
            "" => None,
            _ => Some(catalog_follower::follow(
                config,
                items.clone(),
                workers,
                health.clone(),
                metrics.listings_followed.clone(),
            )?),
        };
        Ok(OwnedItems {
            follower: item_records::follow(config, items, health.clone(), metrics)?,
            owners: item_owners::start(config, metrics, health)?,
            catalog,
        })
    }

    /// Owners publish what is left by `drain_by`; all leave.
    fn stop(self, drain_by: Instant) -> Result<(), RunError> {
        let owners = self.owners.stop(drain_by);
        self.follower.stop()?;
        self.catalog.map(Background::stop).transpose()?;
        owners
    }
}

/// One `Stats` slot per worker.
type WorkerStats = Arc<Mutex<Vec<Stats>>>;

/// The error to report of two: the first, unless it only says that a checkpoint round was
/// abandoned because of the other.
fn cause(first: Option<RunError>, next: RunError) -> RunError {
    match first {
        Some(RunError::Abandoned(_)) | None => next,
        Some(first) => first,
    }
}

fn worker_failure(
    stopped: Result<Result<Processor, RunError>, tokio::task::JoinError>,
) -> RunError {
    match stopped {
        Ok(Err(err)) => err,
        Ok(Ok(_)) => RunError::WorkerGone {
            when: "while messages were still coming",
        },
        Err(join) => RunError::Panicked(join),
    }
}

/// Counters summed over workers, to the metrics first, then to the progress watcher (so a
/// watcher that sees a count finds it in the metrics too); returns them.
fn report_progress(observers: &Observers, stats: &Mutex<Vec<Stats>>, metrics: &Metrics) -> Stats {
    let total = sum(stats.lock().expect("not poisoned").iter());
    metrics.record(&total, &observers.health);
    if let Some(progress) = &observers.progress {
        progress.send_replace(total.clone());
    }
    total
}

/// Workers have stored every acknowledged offset: flush the producer, commit synchronously.
fn finish(
    consumer: &StreamConsumer<GroupContext>,
    producer: &FutureProducer,
    drain_by: Instant,
) -> Result<(), RunError> {
    producer.flush(drain_by.saturating_duration_since(Instant::now()))?;
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        // Nothing stored since the last auto-commit: nothing to do.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        // Another member is joining or leaving (instances stopping together): the group is
        // between generations and refuses commits. Closing the consumer commits what is stored
        // once it can; at worst the next owner re-reads a few messages (at-least-once).
        Err(KafkaError::ConsumerCommit(
            code @ (RDKafkaErrorCode::RebalanceInProgress
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::UnknownMemberId),
        )) => {
            tracing::warn!(%code, "final commit refused during a rebalance; left to the consumer's close");
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}
