//! Checkpoints of an engine's state with the input offsets it reflects, one cadence and one
//! bookkeeping for `run` and `replay`. A checkpoint is a *cut* taken where the engine lives (a
//! consistent state: nothing is applied meanwhile; cheap, see `engine::Changes`), then encoded
//! and written as one atomic batch: `run` does that on a blocking thread while its worker goes
//! on, `replay` in line.

use std::time::{Duration, Instant};

pub use super::changelog::Changelog;
use crate::engine::{Changes, Engine, ItemCut, UserCut};
use crate::offsets::{by_name, NextOffsets, PartitionKey};
use crate::store::{CheckpointSize, Offsets, StateStore, StoreError};

/// When a checkpoint is due.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// A checkpoint once this much time has passed since the last (with something to write).
    pub interval: Duration,
    /// And once this many events wait for one, whatever the time: it bounds what a crashed
    /// `run` reads again. None for a replay, whose checkpoints are insurance only.
    pub max_events: Option<u64>,
}

/// One engine's checkpoints: where it stands (applied) and what the store holds (durable).
pub struct Checkpointer {
    store: StateStore,
    cadence: Cadence,
    /// The consumed topics, in the order partition keys index them (stored offsets name them).
    topics: Vec<String>,
    last: Instant,
    /// Events applied since the last cut.
    since: u64,
    /// Next offset per partition, as applied by the engine.
    applied: NextOffsets,
    /// Next offset per partition, as in the last checkpoint written.
    durable: NextOffsets,
}

/// A `run` worker's state dir: its checkpoints, and what follows each.
pub struct Durable {
    pub checkpointer: Checkpointer,
    /// Users kept in memory after a checkpoint (0: all).
    pub max_users: usize,
    /// The changelog each checkpoint also writes its changed users to, if any.
    pub changelog: Option<Changelog>,
}

/// One worker's part of a checkpoint: its users, and the positions of its partitions they
/// reflect.
pub struct WorkerCut {
    pub worker: usize,
    users: UserCut,
    pub covers: NextOffsets,
}

/// A checkpoint taken and not written yet.
pub struct Cut {
    changes: Changes,
    offsets: Offsets,
    /// The positions it reflects, durable once it is written.
    pub covers: NextOffsets,
}

impl WorkerCut {
    pub fn new(worker: usize, users: UserCut, covers: NextOffsets) -> WorkerCut {
        WorkerCut {
            worker,
            users,
            covers,
        }
    }
}

impl Cut {
    /// The checkpoint of workers' parts and the item side, cut at one point (a round).
    pub fn join(items: ItemCut, mut parts: Vec<WorkerCut>, topics: &[String]) -> Cut {
        parts.sort_by_key(|part| part.worker);
        let mut covers = NextOffsets::new();
        let mut users = Vec::with_capacity(parts.len());
        for part in parts {
            covers.extend(part.covers);
            users.push(part.users);
        }
        Cut {
            changes: Changes::of(items, users),
            offsets: by_name(&covers, topics),
            covers,
        }
    }

    /// Encodes the cut and writes it as one atomic batch (on any thread; cuts of one engine in
    /// order). Returns what it wrote and the positions now durable.
    pub fn write(self, store: &StateStore) -> Result<(CheckpointSize, NextOffsets), StoreError> {
        let records = self.changes.encode();
        let size = store.write(&records, &self.offsets)?;
        Ok((size, self.covers))
    }
}

impl Checkpointer {
    /// Checkpoints into `store`, whose state reflects `durable`.
    pub fn new(
        store: StateStore,
        cadence: Cadence,
        topics: Vec<String>,
        durable: NextOffsets,
    ) -> Checkpointer {
        Checkpointer {
            store,
            cadence,
            topics,
            last: Instant::now(),
            since: 0,
            applied: durable.clone(),
            durable,
        }
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// The message at `offset` of a partition was applied.
    pub fn applied(&mut self, key: PartitionKey, offset: i64) {
        self.applied.insert(key, offset + 1);
        self.since += 1;
    }

    /// A partition's position moved with nothing applied (its messages up to `next` are
    /// out of range of a replay).
    pub fn moved(&mut self, key: PartitionKey, next: i64) {
        self.applied.insert(key, next);
    }

    /// A partition's state came whole from elsewhere (a changelog): its users are in the
    /// store, and the next checkpoint (due at the interval) makes its position durable with
    /// what the restore set in the engine.
    pub fn restored(&mut self, key: PartitionKey, next: i64) {
        self.applied.insert(key, next);
        self.since = self.since.max(1);
    }

    /// Next offsets as applied.
    pub fn applied_offsets(&self) -> &NextOffsets {
        &self.applied
    }

    /// Next offsets as the store holds them.
    pub fn durable_offsets(&self) -> &NextOffsets {
        &self.durable
    }

    /// Something was applied since the last cut.
    pub fn pending(&self) -> bool {
        self.since > 0
    }

    /// So many events wait that a checkpoint is due whatever the time.
    pub fn full(&self) -> bool {
        self.cadence.max_events.is_some_and(|max| self.since >= max)
    }

    pub fn due(&self) -> bool {
        self.full() || (self.pending() && self.last.elapsed() >= self.cadence.interval)
    }

    /// Takes what changed in the engine since the last cut, with the offsets it reflects: the
    /// whole checkpoint of an engine that is the only worker.
    pub fn cut(&mut self, engine: &mut Engine) -> Cut {
        let covers = self.begin_cut(engine);
        let users = engine.continue_users_cut(usize::MAX);
        let part = WorkerCut::new(0, users.expect("a cut with no limit completes"), covers);
        Cut::join(engine.cut_items(), vec![part], &self.topics)
    }

    /// Starts a worker's part of a round: a cut of its users taken in steps
    /// (`Engine::continue_users_cut`). Returns the positions of its partitions at the cut.
    pub fn begin_cut(&mut self, engine: &mut Engine) -> NextOffsets {
        self.since = 0;
        self.last = Instant::now();
        let unfinished = engine.begin_users_cut();
        debug_assert!(
            unfinished.is_none(),
            "the previous cut was finished before its write"
        );
        self.applied.clone()
    }

    /// The consumed topics, in partition-key order.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// A cut is in the store: its positions are durable.
    pub fn written(&mut self, covers: NextOffsets) {
        self.durable = covers;
    }

    /// Cuts, writes and records the checkpoint on this thread.
    pub fn checkpoint_in_line(
        &mut self,
        engine: &mut Engine,
    ) -> Result<CheckpointSize, StoreError> {
        let cut = self.cut(engine);
        let (size, covers) = cut.write(&self.store)?;
        self.written(covers);
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::event::{Event, EventType};

    fn checkpointer(dir: &std::path::Path, max_events: Option<u64>) -> Checkpointer {
        let cadence = Cadence {
            interval: Duration::from_secs(3600),
            max_events,
        };
        let store = StateStore::open(dir, true).unwrap();
        Checkpointer::new(store, cadence, vec!["events".into()], NextOffsets::new())
    }

    #[test]
    fn a_cut_is_durable_only_once_written_and_the_store_then_holds_its_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkpoints = checkpointer(dir.path(), Some(2));
        let mut engine = Engine::new(EngineConfig::default());
        let key = PartitionKey::new(0, 3);
        engine.apply(&Event::new(EventType::View, "u", "i", 1_700_000_000_000));
        checkpoints.applied(key, 41);
        assert!(!checkpoints.due(), "one event, and an hour to wait");
        engine.apply(&Event::new(EventType::View, "u", "j", 1_700_000_001_000));
        checkpoints.applied(key, 42);
        assert!(checkpoints.full() && checkpoints.due());

        let cut = checkpoints.cut(&mut engine);
        assert!(!checkpoints.pending());
        assert!(checkpoints.durable_offsets().is_empty(), "not written yet");
        let (_, covers) = cut.write(checkpoints.store()).unwrap();
        checkpoints.written(covers);
        assert_eq!(checkpoints.durable_offsets()[&key], 43);
        let stored = checkpoints.store().read().unwrap().unwrap();
        assert_eq!(stored.offsets[&("events".to_string(), 3)], 43);
    }

    #[test]
    fn without_an_event_cap_only_time_makes_a_checkpoint_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkpoints = checkpointer(dir.path(), None);
        for offset in 0..10_000 {
            checkpoints.applied(PartitionKey::new(0, 0), offset);
        }
        assert!(checkpoints.pending() && !checkpoints.due());
        checkpoints.moved(PartitionKey::new(0, 1), 7);
        let mut engine = Engine::new(EngineConfig::default());
        checkpoints.checkpoint_in_line(&mut engine).unwrap();
        assert_eq!(checkpoints.durable_offsets()[&PartitionKey::new(0, 1)], 7);
    }

    #[test]
    fn a_restored_position_is_durable_with_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkpoints = checkpointer(dir.path(), None);
        let key = PartitionKey::new(0, 2);
        checkpoints.restored(key, 500);
        assert!(checkpoints.durable_offsets().is_empty(), "not stored yet");
        assert!(checkpoints.pending(), "a checkpoint is owed");
        let mut engine = Engine::new(EngineConfig::default());
        checkpoints.checkpoint_in_line(&mut engine).unwrap();
        assert_eq!(checkpoints.durable_offsets()[&key], 500);
        let stored = checkpoints.store().read().unwrap().unwrap();
        assert_eq!(stored.offsets[&("events".to_string(), 2)], 500);
    }
}
