//! The metrics of item-owned scale-out: what this instance's owners applied and published,
//! and what its follower installed. Counters shared with the owners' and the follower's
//! threads (a `Counter` clone counts into the same family).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::families::add;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct ItemMetrics {
    /// Work batches this instance's workers sent to the owners, and their payload bytes.
    pub work_sent: Counter,
    pub work_sent_bytes: Counter,
    /// Work batches the owners applied, or refused (undecodable or failing their check).
    pub work_batches: Family<OutcomeLabel, Counter>,
    /// Inputs whose work reached an owner again (re-read after a crash) and was skipped.
    pub inputs_skipped: Counter,
    /// Item partitions this instance's owners hold.
    pub partitions_owned: Gauge,
    /// Work batches between the owners' positions and their partitions' ends.
    pub work_lag: Gauge,
    /// Records published, by kind (view, lists), and their payload bytes.
    pub records_published: Family<KindLabel, Counter>,
    pub record_bytes: Counter,
    /// Records the records topic did not take (the item's next change publishes it again).
    pub records_failed: Counter,
    /// Records the follower installed into this instance's read model, or refused.
    pub records_installed: Counter,
    pub records_refused: Counter,
    /// Neighbours left out of installed lists because no record had named them yet.
    pub unknown_neighbours: Counter,
    /// Owners' checkpoints, by outcome (written, failed), and the bytes written.
    pub checkpoints: Family<OutcomeLabel, Counter>,
    pub checkpoint_bytes: Counter,
    /// Item partitions taken on, by how: restored from a checkpoint, none found (read from
    /// the log's start), or failed (unreadable checkpoints: read from the log's start).
    pub restores: Family<OutcomeLabel, Counter>,
    /// Work batches an owner never saw: its partition's log no longer held them.
    pub work_missed: Counter,
    /// Catalog listings this instance's catalog follower applied to its read model.
    pub listings_followed: Counter,
}

impl ItemMetrics {
    pub fn applied(&self) -> Counter {
        self.work_batches
            .get_or_create(&OutcomeLabel { outcome: "applied" })
            .clone()
    }

    pub fn refused(&self) -> Counter {
        self.work_batches
            .get_or_create(&OutcomeLabel { outcome: "refused" })
            .clone()
    }

    pub fn checkpointed(&self, outcome: &'static str) -> Counter {
        self.checkpoints
            .get_or_create(&OutcomeLabel { outcome })
            .clone()
    }

    pub fn restored(&self, outcome: &'static str) -> Counter {
        self.restores
            .get_or_create(&OutcomeLabel { outcome })
            .clone()
    }

    pub fn published(&self, kind: &'static str) -> Counter {
        self.records_published
            .get_or_create(&KindLabel { kind })
            .clone()
    }

    /// Registers every family; returns their full names.
    pub fn register(&self, registry: &mut Registry) -> Vec<String> {
        // Every label a family will have, from the start: a rate over a missing series is no
        // rate, and parsers drop families without samples.
        let _ = (self.applied(), self.refused());
        let _ = (self.published("view"), self.published("lists"));
        let _ = (self.checkpointed("written"), self.checkpointed("failed"));
        let _ = ["checkpoint", "none", "failed"].map(|outcome| self.restored(outcome));
        let mut families = Vec::new();
        let mut to = (registry, &mut families);
        add(
            &mut to,
            "item_work_sent_batches",
            "Item work batches this instance's workers sent to the items' owners",
            &self.work_sent,
        );
        add(
            &mut to,
            "item_work_sent_bytes",
            "Payload bytes of the item work batches this instance's workers sent",
            &self.work_sent_bytes,
        );
        add(
            &mut to,
            "item_work_batches",
            "Item work batches the owners applied or refused, by outcome",
            &self.work_batches,
        );
        add(
            &mut to,
            "item_work_inputs_skipped",
            "Inputs whose item work reached an owner again (re-read after a crash) and was skipped",
            &self.inputs_skipped,
        );
        add(
            &mut to,
            "item_partitions_owned",
            "Item partitions this instance's owners hold",
            &self.partitions_owned,
        );
        add(
            &mut to,
            "item_work_lag",
            "Item work batches between the owners' positions and their partitions' ends",
            &self.work_lag,
        );
        add(
            &mut to,
            "item_records_published",
            "Item records the owners published, by kind (view, lists)",
            &self.records_published,
        );
        add(
            &mut to,
            "item_record_bytes",
            "Payload bytes of the item records the owners published",
            &self.record_bytes,
        );
        add(
            &mut to,
            "item_records_failed",
            "Item records the records topic did not take",
            &self.records_failed,
        );
        add(
            &mut to,
            "item_records_installed",
            "Item records installed into this instance's read model",
            &self.records_installed,
        );
        add(
            &mut to,
            "item_records_refused",
            "Item records refused: undecodable or failing their check",
            &self.records_refused,
        );
        add(
            &mut to,
            "item_unknown_neighbours",
            "Neighbours left out of installed lists: no record had named them yet",
            &self.unknown_neighbours,
        );
        add(
            &mut to,
            "item_checkpoints",
            "Item owners' checkpoints, by outcome (written, failed)",
            &self.checkpoints,
        );
        add(
            &mut to,
            "item_checkpoint_bytes",
            "Bytes of the item owners' checkpoints written",
            &self.checkpoint_bytes,
        );
        add(
            &mut to,
            "item_partition_restores",
            "Item partitions taken on, by outcome (checkpoint, none, failed)",
            &self.restores,
        );
        add(
            &mut to,
            "item_work_missed",
            "Item work batches an owner never saw: its partition's log no longer held them",
            &self.work_missed,
        );
        add(
            &mut to,
            "catalog_listings_followed",
            "Catalog listings read from every catalog partition into this instance's read model",
            &self.listings_followed,
        );
        families
    }
}
