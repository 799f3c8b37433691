//! `[items]`: item-owned scale-out. Off by default: one process learns its item side itself
//! and needs no internal topics. With both topics set, each instance sends its users' item-side
//! work to the items' owners, owns the item partitions the group gives it, and ranks against
//! the read model every owner publishes (see docs/architecture.md).

use serde::{Deserialize, Serialize};

use streamrec_engine::config::{invalid, positive, InvalidSetting};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ItemsConfig {
    /// Item-side work, one record per item partition with work (the topic's partitions are the
    /// item partitions); the owners form the group `<kafka.group_id>.items` over it.
    pub work_topic: String,
    /// The read model: owners publish item views and lists here (compacted, keyed by item and
    /// kind, partitioned like `work_topic`); every instance follows all of it.
    pub records_topic: String,
    /// The owners' checkpoints (compacted, partitioned like `work_topic`): a partition's new
    /// owner restores from it and reads the work log only from where it ends. Empty: owners do
    /// not checkpoint, and a partition's new owner reads its whole work log.
    pub changelog_topic: String,
    /// Owners checkpoint what changed at most this often (ms): how much work log a partition's
    /// next owner re-reads, and so the least retention the work topic needs.
    pub checkpoint_interval_ms: u64,
    /// Work waits at most this long (ms) on the user side before it is sent.
    pub work_interval_ms: u64,
    /// ...or until this many pieces of work wait (bounds a record's size).
    pub max_batch_ops: usize,
    /// Owners publish what changed at most this often (ms): the read model's lag.
    pub publish_interval_ms: u64,
    /// A view waits until its item moved by more than this share of its last view (0: after
    /// every change).
    pub significance: f32,
    /// `/readyz` says not ready while this instance's owners are more than this many work
    /// batches behind their partitions' ends (a partition just given, read from its last
    /// checkpoint or its start; a stuck or slow owner).
    pub ready_lag: u64,
}

impl Default for ItemsConfig {
    fn default() -> Self {
        ItemsConfig {
            work_topic: String::new(),
            records_topic: String::new(),
            changelog_topic: String::new(),
            checkpoint_interval_ms: 10_000,
            work_interval_ms: 100,
            max_batch_ops: 4096,
            publish_interval_ms: 1000,
            significance: 0.05,
            ready_lag: 1000,
        }
    }
}

impl ItemsConfig {
    /// Whether item-owned scale-out is on.
    pub fn owned(&self) -> bool {
        !self.work_topic.is_empty()
    }

    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.work_topic.is_empty() != self.records_topic.is_empty() {
            return Err(invalid(
                "items.records_topic",
                "must be set together with items.work_topic (both or neither)",
            ));
        }
        if self.owned() && self.work_topic == self.records_topic {
            return Err(invalid(
                "items.records_topic",
                "must differ from items.work_topic",
            ));
        }
        if !self.changelog_topic.is_empty() && !self.owned() {
            return Err(invalid(
                "items.changelog_topic",
                "needs items.work_topic (owners are what it checkpoints)",
            ));
        }
        let internal = [&self.work_topic, &self.records_topic];
        if self.owned() && internal.contains(&&self.changelog_topic) {
            return Err(invalid(
                "items.changelog_topic",
                "must differ from items.work_topic and items.records_topic",
            ));
        }
        positive(
            "items.checkpoint_interval_ms",
            self.checkpoint_interval_ms as i64,
        )?;
        positive("items.work_interval_ms", self.work_interval_ms as i64)?;
        if !(16..=65_536).contains(&self.max_batch_ops) {
            return Err(invalid("items.max_batch_ops", "must be in 16..=65536"));
        }
        positive("items.publish_interval_ms", self.publish_interval_ms as i64)?;
        if !(0.0..1.0).contains(&self.significance) {
            return Err(invalid("items.significance", "must be in 0.0..1.0"));
        }
        Ok(())
    }
}
