//! `streamrec replay`: rebuilds state from the input topics into a fresh state dir without
//! touching the live service — its own consumer with partitions assigned by hand and never a
//! commit, a fresh state, outputs only where asked.
//!
//! Partitions are merged by Kafka timestamp (`merge`), so two replays of the same topic apply
//! the same events in the same order. A reading thread (`replay_reader`) fetches, merges and
//! cleans; the engine applies on this one.
//! The final checkpoint stores, per partition, the first offset not applied: `streamrec run` on
//! that state dir continues there with no gap and no overlap.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::error::ReplayError;
use super::latency::wall_clock_ms;
use super::publisher::Publisher;
use super::replay_reader::{Item, ReplayReader, BATCHES_IN_FLIGHT};
use super::sink::Topics;
use crate::clean::Rejection;
use crate::config::Config;
use crate::engine::Engine;
use crate::event::Input;
use crate::merge::PartitionKey;
use crate::offsets::{by_name, NextOffsets, Waiter};
use crate::pipeline::{Processor, Record, Stats};
use crate::replay_plan::OutputMode;
use crate::runtime::checkpoint::{Cadence, Checkpointer};
use crate::store::{Offsets, StateStore};

pub struct ReplayOptions {
    /// A state dir that does not exist yet or holds no state; never the live one.
    pub state_dir: PathBuf,
    pub from: crate::replay_plan::StartAt,
    pub to: crate::replay_plan::StopAt,
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

/// Replays until every partition reaches `options.to` or `stop` is set.
pub fn replay(
    config: &Config,
    options: &ReplayOptions,
    stop: &AtomicBool,
) -> Result<ReplayReport, ReplayError> {
    let started_at = Instant::now();
    let store = fresh_store(config, &options.state_dir)?;
    let source = ReplayReader::open(config, &options.from, options.to)?;
    let publisher = match options.output {
        OutputMode::None => None,
        mode => Some(Publisher::new(
            &config.kafka,
            output_topics(config, mode, options),
            config.kafka.input_topics.clone(),
        )?),
    };
    let rules = Arc::new(config.triggers.rules()?);
    let mut processor =
        Processor::with_engine(config, Engine::new(config.engine.clone())).with_rules(rules);
    if publisher.is_none() {
        processor = processor.learn_only();
    }
    // Interval only: `checkpoint_max_events` bounds what a live run re-reads after a crash,
    // but a replay's checkpoints are insurance.
    let cadence = Cadence {
        interval: Duration::from_millis(config.state.checkpoint_interval_ms),
        max_events: None,
    };
    let topics = config.kafka.consumed_topics();
    let mut run = Replay {
        config,
        options,
        checkpointer: Checkpointer::new(store, cadence, topics.clone(), NextOffsets::new()),
        processor,
        publisher,
        checkpoints: 0,
        progress: Progress::new(options.progress, source.lag.clone()),
        started: NextOffsets::new(),
        applying: None,
        final_checkpoint: Duration::ZERO,
        started_at,
        topics,
    };
    let (items_tx, items) = sync_channel(BATCHES_IN_FLIGHT);
    let applied = std::thread::scope(|scope| {
        let reading = scope.spawn(|| source.run(items_tx, stop));
        let applied = run.apply_all(&items, stop);
        drop(items); // a reader still sending learns that the engine side is gone
        let read = reading.join().map_err(|_| ReplayError::ReaderPanicked)?;
        read.and(applied)
    });
    let interrupted = applied?;
    run.finish()?;
    run.progress.bar.finish_and_clear();
    let inputs = &config.kafka.input_topics;
    Ok(ReplayReport {
        stats: run.processor.totals(),
        elapsed: started_at.elapsed(),
        started: by_name(&run.started, inputs),
        stopped: by_name(run.checkpointer.applied_offsets(), inputs),
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
        return Err(ReplayError::LiveStateDir { dir: dir.into() });
    }
    let store = StateStore::open(dir, true)?;
    if store.read()?.is_some() {
        return Err(ReplayError::StateDirNotEmpty { dir: dir.into() });
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
        triggers: format!("{}{suffix}", kafka.triggers_topic),
        // A replay builds one state; it never feeds other instances.
        model_updates: String::new(),
        item_work: String::new(),
        schema_ids: kafka.schema_ids,
    }
}

/// The replay's engine side: processing, outputs, checkpoints and progress.
struct Replay<'a> {
    config: &'a Config,
    options: &'a ReplayOptions,
    /// Where each partition stands, and the state dir's checkpoints of it.
    checkpointer: Checkpointer,
    processor: Processor,
    publisher: Option<Publisher>,
    checkpoints: u64,
    progress: Progress,
    /// First offset applied per partition.
    started: NextOffsets,
    /// When the first and the latest batch were applied.
    applying: Option<(Instant, Instant)>,
    final_checkpoint: Duration,
    started_at: Instant,
    /// The topics read, in the order partition keys index them.
    topics: Vec<String>,
}

impl Replay<'_> {
    /// Applies what the reader sends until it is done; true when `stop` cut it short.
    fn apply_all(
        &mut self,
        items: &Receiver<Vec<Item>>,
        stop: &AtomicBool,
    ) -> Result<bool, ReplayError> {
        while let Ok(batch) = items.recv() {
            // One clock reading per batch: coalescing and output times need no finer grain.
            let now = wall_clock_ms();
            for item in batch {
                match item {
                    Item::Next { key, offset } => self.checkpointer.moved(key, offset),
                    Item::Message {
                        key,
                        offset,
                        timestamp_ms,
                        cleaned,
                    } => self.apply(key, offset, timestamp_ms, cleaned, now)?,
                }
            }
            let applied_at = Instant::now();
            let first = self.applying.map_or(applied_at, |(first, _)| first);
            self.applying = Some((first, applied_at));
            if stop.load(Ordering::Relaxed) {
                return Ok(true);
            }
        }
        Ok(stop.load(Ordering::Relaxed))
    }

    fn apply(
        &mut self,
        key: PartitionKey,
        offset: i64,
        timestamp_ms: Option<i64>,
        cleaned: Result<Input, (Rejection, Option<Vec<u8>>)>,
        now: i64,
    ) -> Result<(), ReplayError> {
        let topic = &self.topics[key.topic as usize];
        self.started.entry(key).or_insert(offset);
        let (cleaned, payload) = match cleaned {
            Ok(event) => (Ok(event), None),
            Err((reason, payload)) => (Err(reason), payload),
        };
        let record = Record {
            source: Waiter {
                topic: key.topic,
                partition: key.partition,
                offset,
            },
            topic,
            key: None,
            payload: payload.as_deref(),
            timestamp_ms,
        };
        let ready = self.processor.in_memory(cleaned);
        let processed = self.processor.process_ready(&record, ready, now);
        self.checkpointer.applied(key, offset);
        if let Some(publisher) = &mut self.publisher {
            for output in processed.outputs {
                publisher.send(output)?;
            }
        }
        let consumed = self.processor.stats().consumed;
        if consumed % 1024 == 0 {
            self.every_so_often(now)?;
            self.progress.update(consumed);
            pace(self.options.max_rate, consumed, self.started_at);
        }
        Ok(())
    }

    fn every_so_often(&mut self, now: i64) -> Result<(), ReplayError> {
        if let Some(publisher) = &mut self.publisher {
            for output in self.processor.flush_due(now, usize::MAX).outputs {
                publisher.send(output)?;
            }
        }
        if self.checkpointer.due() {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), ReplayError> {
        self.checkpointer
            .checkpoint_in_line(self.processor.engine_mut())?;
        self.checkpoints += 1;
        Ok(())
    }

    /// Publishes what is owed, waits for every acknowledgement, then the final checkpoint.
    fn finish(&mut self) -> Result<(), ReplayError> {
        if let Some(publisher) = &mut self.publisher {
            for output in self.processor.flush_all(wall_clock_ms()).outputs {
                publisher.send(output)?;
            }
            publisher.finish(Duration::from_millis(self.config.pipeline.drain_timeout_ms))?;
        }
        let started = Instant::now();
        self.checkpoint()?;
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

/// Events replayed, their rate, and the lag to the partitions' ends (high watermarks, which the
/// reader reads again every few seconds; a broker with lagging watermarks shows a low lag).
struct Progress {
    bar: ProgressBar,
    lag: Arc<AtomicU64>,
}

impl Progress {
    fn new(visible: bool, lag: Arc<AtomicU64>) -> Progress {
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
        Progress { bar, lag }
    }

    fn update(&self, consumed: u64) {
        let lag = self.lag.load(Ordering::Relaxed);
        self.bar.set_length(consumed + lag);
        self.bar.set_position(consumed);
        self.bar.set_message(lag.to_string());
    }
}
