//! The item partitions one instance owns (see `item_owners`): each one's `ItemOwner`, the next
//! offset of its work log it applies, and its checkpoints; taking partitions on (restored from
//! their checkpoints or empty), applying work batches, and checkpointing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rdkafka::message::Message;

use super::item_checkpoints::{Book, ItemCheckpoints, Restored};
use crate::config::EngineConfig;
use crate::engine::{ItemOwner, WorkBatch};
use crate::item_metrics::ItemMetrics;

/// The item partitions this instance owns, each with its owner.
pub(super) struct OwnedPartitions {
    pub(super) owners: BTreeMap<i32, Owned>,
    /// Where owners checkpoint, if they do.
    checkpoints: Option<ItemCheckpoints>,
    writer: u64,
    engine: EngineConfig,
    significance: f32,
    metrics: ItemMetrics,
    /// The work batches family's two counters, looked up once.
    applied: Counter,
    refused: Counter,
}

/// One item partition's owner, the next offset of its work log it applies, and its
/// checkpoints' book.
pub(super) struct Owned {
    pub(super) owner: ItemOwner,
    pub(super) next: i64,
    book: Book,
    /// When it was last checkpointed (or taken on).
    checkpointed: Instant,
}

/// This process's name on the checkpoints it writes: different from any other's.
pub(super) fn writer_id() -> u64 {
    let nanos = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}/{nanos}", std::process::id());
    xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
}

/// How often a transient failure to read a partition's checkpoints is retried.
const RESTORE_ATTEMPTS: u32 = 3;

impl OwnedPartitions {
    /// Takes partitions on, each restored from its last checkpoint or empty. Returns the
    /// work-log offset each applies next.
    pub(super) fn adopt(&mut self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let mut restored = self.restore(partitions);
        let adopted = partitions.iter().map(|&partition| {
            let (mut owner, next, book) = match restored.remove(&partition) {
                Some(Restored {
                    owner, next, book, ..
                }) => (owner, next, book),
                None => (ItemOwner::new(&self.engine), 0, Book::new(self.writer)),
            };
            owner.significance = self.significance;
            let checkpointed = Instant::now();
            let owned = Owned {
                owner,
                next,
                book,
                checkpointed,
            };
            self.owners.insert(partition, owned);
            (partition, next)
        });
        adopted.collect()
    }

    /// The partitions' owners as their last checkpoints left them, where they have one that
    /// reads (the others start empty and read their logs from the start).
    fn restore(&self, partitions: &[i32]) -> BTreeMap<i32, Restored> {
        let Some(checkpoints) = &self.checkpoints else {
            tracing::info!(
                ?partitions,
                "owning item partitions: reading their work logs"
            );
            return BTreeMap::new();
        };
        let failed = |error: &dyn std::fmt::Display, partitions: &[i32]| {
            tracing::error!(?partitions, %error, "item partitions' checkpoints do not read: reading their work logs from the start (work a log no longer holds is missing)");
            self.metrics
                .restored("failed")
                .inc_by(partitions.len() as u64);
        };
        let mut attempt = 1;
        let results = loop {
            match checkpoints.restore(partitions, &self.engine, self.writer) {
                Ok(results) => break results,
                Err(err) if err.is_transient() && attempt < RESTORE_ATTEMPTS => {
                    tracing::warn!(?partitions, error = %err, "reading item partitions' checkpoints; trying again");
                    std::thread::sleep(Duration::from_secs(1));
                    attempt += 1;
                }
                Err(err) => {
                    failed(&err, partitions);
                    return BTreeMap::new();
                }
            }
        };
        let mut restored = BTreeMap::new();
        for (partition, result) in results {
            match result {
                Ok(Some(owner)) => {
                    let (next, records) = (owner.next, owner.records);
                    tracing::info!(
                        partition,
                        next,
                        records,
                        "owning an item partition: restored from its checkpoint"
                    );
                    self.metrics.restored("checkpoint").inc();
                    restored.insert(partition, owner);
                }
                Ok(None) => {
                    tracing::info!(
                        partition,
                        "owning an item partition: no checkpoint, reading its work log"
                    );
                    self.metrics.restored("none").inc();
                }
                Err(err) => failed(&err, &[partition]),
            }
        }
        restored
    }

    /// Checkpoints the owned partitions that applied work since their last checkpoint: all of
    /// them, or (`oldest_only`) the one checkpointed longest ago, so that the owners pause for
    /// one partition's checkpoint at a time.
    pub(super) fn checkpoint(&mut self, oldest_only: bool) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        let mut due: Vec<(&i32, &mut Owned)> = (self.owners.iter_mut())
            .filter(|(_, o)| o.next != o.book.checkpointed_next() || o.book.rewrite_all)
            .collect();
        due.sort_by_key(|(_, owned)| owned.checkpointed);
        due.truncate(if oldest_only { 1 } else { usize::MAX });
        for (&partition, owned) in due {
            owned.checkpointed = Instant::now();
            let book = &mut owned.book;
            match checkpoints.write(partition, &mut owned.owner, book, owned.next) {
                Ok(bytes) => {
                    self.metrics.checkpointed("written").inc();
                    self.metrics.checkpoint_bytes.inc_by(bytes as u64);
                }
                Err(error) => {
                    tracing::warn!(partition, %error, "item checkpoint failed; the next one writes every page");
                    self.metrics.checkpointed("failed").inc();
                }
            }
        }
    }

    pub(super) fn apply(&mut self, message: &impl Message) {
        let (partition, offset) = (message.partition(), message.offset());
        let engine = &self.engine;
        let Some(owned) = self.owners.get_mut(&partition) else {
            return; // adopted first (`OwnerLoop::poll_work`)
        };
        if offset < owned.next {
            return; // applied already: the fetch went back
        }
        if offset > owned.next {
            let missed = offset - owned.next;
            tracing::error!(partition, from = owned.next, to = offset, "item work missed: the log no longer holds it (keep items.work_topic's retention well above items.checkpoint_interval_ms)");
            self.metrics.work_missed.inc_by(missed as u64);
        }
        owned.next = offset + 1;
        let payload = message.payload().unwrap_or_default();
        let skipped = owned.owner.skipped_inputs;
        let applied = WorkBatch::decode(payload)
            .map_err(|err| err.to_string())
            .and_then(|batch| (owned.owner.apply(batch, engine)).map_err(|err| err.to_string()));
        (self.metrics.inputs_skipped).inc_by(owned.owner.skipped_inputs - skipped);
        match applied {
            Ok(()) => self.applied.inc(),
            Err(error) => {
                tracing::warn!(partition, offset, %error, "item work batch refused");
                self.refused.inc()
            }
        };
    }
}

impl OwnedPartitions {
    pub(super) fn new(
        engine: &EngineConfig,
        (significance, metrics): (f32, &ItemMetrics),
        checkpoints: Option<ItemCheckpoints>,
    ) -> OwnedPartitions {
        OwnedPartitions {
            owners: BTreeMap::new(),
            checkpoints,
            writer: writer_id(),
            engine: engine.clone(),
            significance,
            metrics: metrics.clone(),
            applied: metrics.applied(),
            refused: metrics.refused(),
        }
    }
}
