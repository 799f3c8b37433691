//! `streamrec replay`: rebuilds state from the input topics into a fresh state dir without
//! touching the live service — its own consumer with partitions assigned by hand and never a
//! commit, a fresh state, outputs only where asked.
//!
//! Partitions are merged by Kafka timestamp (`merge`), so two replays of the same topic apply
//! the same events in the same order. The engine runs on this thread and waits only for fetches.
//! The final checkpoint stores, per partition, the first offset not applied: `streamrec run` on
//! that state dir continues there with no gap and no overlap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::client::replay_consumer_config;
use super::context::ReplayContext;
use super::position::{by_name, NextOffsets};
use super::publisher::Publisher;
use super::run::wall_clock_ms;
use super::sink::Topics;
use crate::config::Config;
use crate::engine::Engine;
use crate::merge::{Merge, PartitionKey, Step};
use crate::offsets::Waiter;
use crate::pipeline::{Processor, Record, Stats};
use crate::replay::{OutputMode, PlanError, StartAt, StopAt};
use crate::store::{Offsets, StateStore, StoreError};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one partition is waited for before the consumer's own events are served.
const FILL_WAIT: Duration = Duration::from_millis(100);
/// How long a partition may stay silent (no message, no end) before the operator is told.
const STALL_WARNING: Duration = Duration::from_secs(10);

pub struct ReplayOptions {
    /// A state dir that does not exist yet or holds no state; never the live one.
    pub state_dir: PathBuf,
    pub from: StartAt,
    pub to: StopAt,
    pub output: OutputMode,
    /// Appended to the live topic names with `OutputMode::Shadow`.
    pub shadow_suffix: String,
    pub max_rate: Option<u64>,
    pub progress: bool,
}

pub struct ReplayReport {
    pub stats: Stats,
    pub elapsed: Duration,
    /// First offset replayed per partition.
    pub started: Offsets,
    /// First offset not replayed per partition: what the state stores.
    pub stopped: Offsets,
    /// Stopped by a signal before the end (the state is a consistent checkpoint all the same).
    pub interrupted: bool,
    pub checkpoints: u64,
    /// `state digest` of what the replay built.
    pub digest: String,
    /// From the first message applied to the last: the engine's share of `elapsed`, without
    /// start-up and the final checkpoint.
    pub applying: Duration,
    pub final_checkpoint: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("{0}; the replay stopped")]
    Delivery(String),
}

type Queue = rdkafka::consumer::base_consumer::PartitionQueue<ReplayContext>;
type ReplayConsumer = BaseConsumer<ReplayContext>;

/// Replays until every partition reaches `options.to` or `stop` is set.
pub fn replay(
    config: &Config,
    options: &ReplayOptions,
    stop: &AtomicBool,
) -> Result<ReplayReport, ReplayError> {
    let started_at = Instant::now();
    let store = fresh_store(config, &options.state_dir)?;
    let inputs = &config.kafka.input_topics;
    let group = format!("{}.replay", config.kafka.group_id);
    let consumer: Arc<ReplayConsumer> =
        Arc::new(replay_consumer_config(&config.kafka, &group).create_with_context(ReplayContext)?);
    let partitions = partitions(&consumer, inputs, &config.kafka.brokers)?;
    let (assignment, mut next) = start_positions(&consumer, inputs, &partitions, &options.from)?;
    consumer.assign(&assignment)?;
    let mut reader = Reader {
        consumer: &consumer,
        queues: split_queues(&consumer, inputs, &partitions)?,
        inputs,
        to: options.to,
        before: match options.from {
            StartAt::Time(ms) => partitions.iter().map(|&k| (k, ms)).collect(),
            _ => BTreeMap::new(),
        },
        waiting: None,
    };
    let publisher = match options.output {
        OutputMode::None => None,
        mode => Some(Publisher::new(
            &config.kafka,
            output_topics(config, mode, options),
        )?),
    };
    let mut processor = Processor::with_engine(config, Engine::new(config.engine.clone()));
    if publisher.is_none() {
        processor = processor.learn_only();
    }
    let mut run = Replay {
        config,
        options,
        store,
        processor,
        publisher,
        checkpoints: 0,
        last_checkpoint: Instant::now(),
        progress: Progress::new(options.progress),
        started: Offsets::new(),
        applying: None,
        final_checkpoint: Duration::ZERO,
    };
    let mut merge: Merge<OwnedMessage> = Merge::new(partitions.iter().copied());
    let mut interrupted = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        match merge.next_step() {
            Step::Done => break,
            Step::Fill(key) => reader.fill(key, &mut merge, &mut next)?,
            Step::Emit(key, message) => {
                if run.apply(key, &message, &mut next, started_at)? {
                    let consumed = run.processor.stats().consumed;
                    run.progress
                        .update(consumed, || lag(&consumer, inputs, &next));
                }
            }
        }
    }
    resolve_unreached(&consumer, inputs, &partitions, &options.from, &mut next)?;
    run.finish(&next)?;
    run.progress.bar.finish_and_clear();
    Ok(ReplayReport {
        stats: run.processor.stats().clone(),
        elapsed: started_at.elapsed(),
        started: run.started,
        stopped: by_name(&next, inputs),
        interrupted,
        checkpoints: run.checkpoints,
        digest: run.processor.engine().digest(),
        applying: run
            .applying
            .map_or(Duration::ZERO, |(first, last)| last - first),
        final_checkpoint: run.final_checkpoint,
    })
}

/// Opens the target, refusing the live state dir and any dir that already holds state.
fn fresh_store(config: &Config, dir: &Path) -> Result<StateStore, ReplayError> {
    if !config.state.dir.is_empty() && same_dir(Path::new(&config.state.dir), dir) {
        return Err(ReplayError::Refused(format!(
            "{} is the live state dir (state.dir in the config); replay into a new one",
            dir.display()
        )));
    }
    let store = StateStore::open(dir, true)?;
    if store.read()?.is_some() {
        return Err(ReplayError::Refused(format!(
            "state dir {} already holds state; a replay builds a fresh one: give a new dir",
            dir.display()
        )));
    }
    Ok(store)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn output_topics(config: &Config, mode: OutputMode, options: &ReplayOptions) -> Topics {
    let suffix = if mode == OutputMode::Shadow {
        options.shadow_suffix.as_str()
    } else {
        ""
    };
    let kafka = &config.kafka;
    Topics {
        recommendations: format!("{}{suffix}", kafka.recommendations_topic),
        similar_items: format!("{}{suffix}", kafka.similar_items_topic),
        dead_letter: format!("{}{suffix}", kafka.dead_letter_topic),
    }
}

/// Every partition of every input topic, as (topic index, partition).
fn partitions(
    consumer: &ReplayConsumer,
    inputs: &[String],
    brokers: &str,
) -> Result<Vec<PartitionKey>, ReplayError> {
    let mut keys = Vec::new();
    for (index, topic) in inputs.iter().enumerate() {
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                keys.extend(t.partitions().iter().map(|p| (index as u16, p.id())));
            }
            _ => {
                return Err(ReplayError::Refused(format!(
                    "input topic {topic} does not exist on {brokers}"
                )))
            }
        }
    }
    Ok(keys)
}

/// The assignment, and the next offset of each partition where it is already known.
fn start_positions(
    consumer: &ReplayConsumer,
    inputs: &[String],
    partitions: &[PartitionKey],
    from: &StartAt,
) -> Result<(TopicPartitionList, NextOffsets), ReplayError> {
    let mut assignment = TopicPartitionList::new();
    let mut next = NextOffsets::new();
    let several = inputs.len() > 1;
    let by_time = match from {
        StartAt::Time(ms) => Some(offsets_at(consumer, inputs, partitions, *ms)?),
        _ => None,
    };
    for &(index, partition) in partitions {
        let topic = &inputs[index as usize];
        let offset = match (from, &by_time) {
            (StartAt::Earliest, _) => Offset::Beginning,
            (StartAt::Offsets(offsets), _) => {
                Offset::Offset(StartAt::offset_of(offsets, topic, partition, several)?)
            }
            (StartAt::Time(_), Some(found)) => found[&(index, partition)],
            (StartAt::Time(_), None) => unreachable!("looked up above"),
        };
        if let Offset::Offset(o) = offset {
            next.insert((index, partition), o);
        }
        assignment.add_partition_offset(topic, partition, offset)?;
    }
    Ok((assignment, next))
}

/// The first offset at or after `ms` per partition (the end where no message is that late).
fn offsets_at(
    consumer: &ReplayConsumer,
    inputs: &[String],
    partitions: &[PartitionKey],
    ms: i64,
) -> Result<BTreeMap<PartitionKey, Offset>, ReplayError> {
    let mut wanted = TopicPartitionList::new();
    for &(index, partition) in partitions {
        wanted.add_partition_offset(&inputs[index as usize], partition, Offset::Offset(ms))?;
    }
    let found = consumer.offsets_for_times(wanted, METADATA_TIMEOUT)?;
    tracing::debug!(?found, ms, "offsets for time");
    let mut offsets = BTreeMap::new();
    for &(index, partition) in partitions {
        let topic = &inputs[index as usize];
        let element = found.find_partition(topic, partition);
        let offset = match element.as_ref().map(|e| (e.offset(), e.error())) {
            Some((Offset::Offset(o), Ok(()))) => Offset::Offset(o),
            Some((Offset::End, Ok(()))) => Offset::End,
            Some((_, Err(err))) => return Err(err.into()),
            _ => {
                return Err(ReplayError::Refused(format!(
                    "the broker gave no offset for time {ms} in {topic}/{partition}"
                )))
            }
        };
        offsets.insert((index, partition), offset);
    }
    drop(found); // before the consumer can be dropped: see tests/common
    Ok(offsets)
}

fn split_queues(
    consumer: &Arc<ReplayConsumer>,
    inputs: &[String],
    partitions: &[PartitionKey],
) -> Result<BTreeMap<PartitionKey, Queue>, ReplayError> {
    partitions
        .iter()
        .map(|&(index, partition)| {
            let topic = &inputs[index as usize];
            consumer
                .split_partition_queue(topic, partition)
                .map(|queue| ((index, partition), queue))
                .ok_or_else(|| {
                    ReplayError::Refused(format!("cannot read {topic}/{partition} on its own"))
                })
        })
        .collect()
}

/// Reads partitions for the merge, one message at a time.
struct Reader<'a> {
    consumer: &'a ReplayConsumer,
    queues: BTreeMap<PartitionKey, Queue>,
    inputs: &'a [String],
    to: StopAt,
    /// With `--from <time>`: partitions still before their first message at or after it.
    /// Brokers that ignore the time in ListOffsets (Tansu answers the earliest offset) send
    /// older messages; they are skipped here, so every broker gives Kafka's semantics.
    before: BTreeMap<PartitionKey, i64>,
    /// The partition waited for, and since when (for a warning when a broker stays silent).
    waiting: Option<(PartitionKey, Instant)>,
}

impl Reader<'_> {
    /// Reads the next message of `key` into the merge, or ends the partition at its end or at
    /// the first message past `to` (which stays unapplied: the state's next offset).
    fn fill(
        &mut self,
        key: PartitionKey,
        merge: &mut Merge<OwnedMessage>,
        next: &mut NextOffsets,
    ) -> Result<(), ReplayError> {
        match self.queues[&key].poll(FILL_WAIT) {
            Some(Ok(message)) => {
                self.waiting = None;
                let timestamp = message.timestamp().to_millis();
                if let Some(&from) = self.before.get(&key) {
                    if timestamp.is_some_and(|ts| ts < from) {
                        next.insert(key, message.offset());
                        return Ok(());
                    }
                    self.before.remove(&key);
                }
                if self.to.is_past(timestamp) {
                    next.insert(key, message.offset());
                    merge.end(key);
                } else {
                    merge.push(key, timestamp, message.offset(), message.detach());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => merge.end(key),
            Some(Err(err))
                if err.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) =>
            {
                return Err(ReplayError::Refused(format!(
                    "the start offset of {}/{} is not in its log: {err}",
                    self.inputs[key.0 as usize], key.1
                )))
            }
            Some(Err(err)) => tracing::warn!(error = %err, "consumer error; librdkafka retries"),
            None => {
                self.warn_if_stalled(key, next);
                serve_events(self.consumer)?;
            }
        }
        Ok(())
    }

    fn warn_if_stalled(&mut self, key: PartitionKey, next: &NextOffsets) {
        match self.waiting {
            Some((waited, since)) if waited == key => {
                if since.elapsed() >= STALL_WARNING {
                    tracing::warn!(
                        topic = %self.inputs[key.0 as usize],
                        partition = key.1,
                        offset = ?next.get(&key),
                        "no message and no end of partition from the broker for {} s; still waiting",
                        STALL_WARNING.as_secs()
                    );
                    self.waiting = Some((key, Instant::now()));
                }
            }
            _ => self.waiting = Some((key, Instant::now())),
        }
    }
}

/// Serves the consumer's own queue (logs, errors, statistics) until it is empty; messages never
/// arrive there because every partition was split off before the first poll.
fn serve_events(consumer: &ReplayConsumer) -> Result<(), ReplayError> {
    loop {
        match consumer.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                return Err(ReplayError::Refused(format!(
                    "a message of {}/{} arrived outside its partition queue",
                    message.topic(),
                    message.partition()
                )))
            }
            Some(Err(err)) => tracing::warn!(error = %err, "consumer error; librdkafka retries"),
            None => return Ok(()),
        }
    }
}

/// Partitions that delivered nothing: their next offset is the consumer's position there.
fn resolve_unreached(
    consumer: &ReplayConsumer,
    inputs: &[String],
    partitions: &[PartitionKey],
    from: &StartAt,
    next: &mut NextOffsets,
) -> Result<(), ReplayError> {
    let unknown: Vec<PartitionKey> = partitions
        .iter()
        .copied()
        .filter(|k| !next.contains_key(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let position = consumer.position()?;
    for (index, partition) in unknown {
        let topic = &inputs[index as usize];
        let at = position
            .find_partition(topic, partition)
            .map(|e| e.offset());
        let offset = match at {
            Some(Offset::Offset(o)) => o,
            _ => {
                let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
                if *from == StartAt::Earliest {
                    low
                } else {
                    high
                }
            }
        };
        next.insert((index, partition), offset);
    }
    drop(position);
    Ok(())
}

/// The replay's engine side: processing, outputs, checkpoints and progress.
struct Replay<'a> {
    config: &'a Config,
    options: &'a ReplayOptions,
    store: StateStore,
    processor: Processor,
    publisher: Option<Publisher>,
    checkpoints: u64,
    last_checkpoint: Instant,
    progress: Progress,
    started: Offsets,
    /// When the first and the latest message were applied.
    applying: Option<(Instant, Instant)>,
    final_checkpoint: Duration,
}

impl Replay<'_> {
    /// Applies one message; true every 1024 messages (time for housekeeping and progress).
    fn apply(
        &mut self,
        key: PartitionKey,
        message: &OwnedMessage,
        next: &mut NextOffsets,
        started_at: Instant,
    ) -> Result<bool, ReplayError> {
        let topic = message.topic();
        self.started
            .entry((topic.to_owned(), key.1))
            .or_insert(message.offset());
        let record = Record {
            source: Waiter {
                topic: key.0,
                partition: key.1,
                offset: message.offset(),
            },
            topic,
            payload: message.payload(),
            timestamp_ms: message.timestamp().to_millis(),
        };
        let now = wall_clock_ms();
        let processed = self.processor.process(&record, now);
        next.insert(key, message.offset() + 1);
        let applied_at = Instant::now();
        let first = self.applying.map_or(applied_at, |(first, _)| first);
        self.applying = Some((first, applied_at));
        if let Some(publisher) = &self.publisher {
            for output in processed.outputs {
                publisher.send(output).map_err(ReplayError::Delivery)?;
            }
        }
        let consumed = self.processor.stats().consumed;
        if consumed % 1024 != 0 {
            return Ok(false);
        }
        self.every_so_often(next, now)?;
        pace(self.options.max_rate, consumed, started_at);
        Ok(true)
    }

    fn every_so_often(&mut self, next: &NextOffsets, now: i64) -> Result<(), ReplayError> {
        if let Some(publisher) = &self.publisher {
            for output in self.processor.flush(now, false).outputs {
                publisher.send(output).map_err(ReplayError::Delivery)?;
            }
        }
        // Interval only: `checkpoint_max_events` bounds what a live run re-reads after a crash,
        // but a replay's checkpoints are insurance, and each writes the whole state.
        let interval = Duration::from_millis(self.config.state.checkpoint_interval_ms);
        if self.last_checkpoint.elapsed() >= interval {
            self.checkpoint(next)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, next: &NextOffsets) -> Result<(), ReplayError> {
        let offsets = by_name(next, &self.config.kafka.input_topics);
        self.store.checkpoint(self.processor.engine(), &offsets)?;
        self.checkpoints += 1;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Publishes what is owed, waits for every acknowledgement, then the final checkpoint.
    fn finish(&mut self, next: &NextOffsets) -> Result<(), ReplayError> {
        if let Some(publisher) = &self.publisher {
            for output in self.processor.flush(wall_clock_ms(), true).outputs {
                publisher.send(output).map_err(ReplayError::Delivery)?;
            }
            publisher
                .finish(Duration::from_millis(self.config.pipeline.drain_timeout_ms))
                .map_err(ReplayError::Delivery)?;
        }
        let started = Instant::now();
        self.checkpoint(next)?;
        self.final_checkpoint = started.elapsed();
        Ok(())
    }
}

/// Sleeps while ahead of `max_rate` events per second.
fn pace(max_rate: Option<u64>, consumed: u64, started_at: Instant) {
    if let Some(rate) = max_rate {
        let due = Duration::from_secs_f64(consumed as f64 / rate.max(1) as f64);
        if let Some(ahead) = due.checked_sub(started_at.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

/// Events replayed, their rate, and the lag to the partitions' ends (high watermarks, read
/// again every few seconds; a broker with lagging watermarks shows a low lag, never a wrong count).
struct Progress {
    bar: ProgressBar,
    last_refresh: Instant,
}

impl Progress {
    fn new(visible: bool) -> Progress {
        let bar = if visible {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} replayed {pos} events, {per_sec}, lag {msg}, eta {eta}",
                )
                .expect("a valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress {
            bar,
            last_refresh: Instant::now() - Duration::from_secs(60),
        }
    }

    fn update(&mut self, consumed: u64, lag: impl FnOnce() -> u64) {
        self.bar.set_position(consumed);
        if self.bar.is_hidden() || self.last_refresh.elapsed() < Duration::from_secs(2) {
            return;
        }
        self.last_refresh = Instant::now();
        let lag = lag();
        self.bar.set_length(consumed + lag);
        self.bar.set_message(lag.to_string());
    }
}

/// Messages between each partition's next offset and its high watermark.
fn lag(consumer: &ReplayConsumer, inputs: &[String], next: &NextOffsets) -> u64 {
    next.iter()
        .filter_map(|(&(index, partition), &at)| {
            let topic = &inputs[index as usize];
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(1))
                .ok()?;
            Some((high - at).max(0) as u64)
        })
        .sum()
}
