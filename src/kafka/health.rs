//! What a running pipeline shows of itself: partitions held, brokers reachable, topics missing,
//! restores and replication under way — read by `/readyz`, the metrics and callers that must
//! not produce before the group has formed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Shared, lock-free state of a running pipeline.
#[derive(Debug, Default)]
pub struct Health {
    pub(super) assignments: AtomicUsize,
    /// Other instances' item-model updates published before this one started and not applied
    /// yet (0 once caught up, or without replication).
    model_behind: AtomicU64,
    /// Item records published before this instance started and not installed yet (0 once
    /// caught up, or without item-owned scale-out).
    records_behind: AtomicU64,
    /// Catalog listings published before this instance started and not applied yet (0 once
    /// caught up, or when the catalog is not followed).
    catalog_behind: AtomicU64,
    /// Item work batches between this instance's owners and their partitions' ends.
    owners_behind: AtomicU64,
    /// Partitions assigned and not flowing yet: their users are restored from the changelog
    /// (published by `restore::Restores`).
    restoring: Mutex<Vec<i32>>,
    /// The partitions this member holds, by topic (their count is `/readyz`'s and the
    /// metrics'; the query API routes by them).
    held: Mutex<BTreeMap<String, BTreeSet<i32>>>,
    /// Consumed topics that do not exist (checked at start).
    missing_topics: Mutex<Vec<String>>,
    /// Every broker unreachable (librdkafka said so) and none seen up since.
    brokers_down: AtomicBool,
}

impl Health {
    pub fn brokers_down(&self) -> bool {
        self.brokers_down.load(Ordering::Relaxed)
    }

    pub(super) fn set_brokers_down(&self, down: bool) {
        if self.brokers_down.swap(down, Ordering::Relaxed) && !down {
            tracing::info!("brokers reachable again");
        }
    }

    /// Consumed topics found missing at start (empty once all exist).
    pub fn missing_topics(&self) -> Vec<String> {
        self.missing_topics.lock().expect("not poisoned").clone()
    }

    pub(super) fn set_missing_topics(&self, topics: Vec<String>) {
        *self.missing_topics.lock().expect("not poisoned") = topics;
    }

    pub fn model_behind(&self) -> u64 {
        self.model_behind.load(Ordering::Relaxed)
    }

    pub(super) fn set_model_behind(&self, behind: u64) {
        self.model_behind.store(behind, Ordering::Relaxed);
    }

    pub fn records_behind(&self) -> u64 {
        self.records_behind.load(Ordering::Relaxed)
    }

    pub(super) fn set_records_behind(&self, behind: u64) {
        self.records_behind.store(behind, Ordering::Relaxed);
    }

    pub fn catalog_behind(&self) -> u64 {
        self.catalog_behind.load(Ordering::Relaxed)
    }

    pub(super) fn set_catalog_behind(&self, behind: u64) {
        self.catalog_behind.store(behind, Ordering::Relaxed);
    }

    pub fn owners_behind(&self) -> u64 {
        self.owners_behind.load(Ordering::Relaxed)
    }

    pub(super) fn set_owners_behind(&self, behind: u64) {
        self.owners_behind.store(behind, Ordering::Relaxed);
    }

    /// Partitions waiting for their users' state from the changelog.
    pub fn restoring(&self) -> Vec<i32> {
        self.restoring.lock().expect("not poisoned").clone()
    }

    /// Whether the partition waits for its users' state from the changelog.
    pub fn is_restoring(&self, partition: i32) -> bool {
        self.restoring
            .lock()
            .expect("not poisoned")
            .contains(&partition)
    }

    pub(super) fn set_restoring(&self, partitions: Vec<i32>) {
        *self.restoring.lock().expect("not poisoned") = partitions;
    }

    /// Whether this member holds the topic's partition now.
    pub fn holds(&self, topic: &str, partition: i32) -> bool {
        let held = self.held.lock().expect("not poisoned");
        held.get(topic).is_some_and(|p| p.contains(&partition))
    }

    /// The partitions of `topic` this member holds, in order.
    pub fn held_partitions(&self, topic: &str) -> Vec<i32> {
        let held = self.held.lock().expect("not poisoned");
        held.get(topic)
            .map_or(Vec::new(), |p| p.iter().copied().collect())
    }

    /// A rebalance gave (`true`) or took these partitions; `whole`: the rebalance is eager, so
    /// they are the whole new assignment, or all of it revoked, not an increment.
    pub(super) fn change_held<'a>(
        &self,
        given: bool,
        whole: bool,
        partitions: impl Iterator<Item = (&'a str, i32)>,
    ) {
        let mut held = self.held.lock().expect("not poisoned");
        if whole {
            held.clear();
        }
        for (topic, partition) in partitions {
            if given {
                held.entry(topic.to_owned()).or_default().insert(partition);
            } else if let Some(of_topic) = held.get_mut(topic) {
                of_topic.remove(&partition);
            }
        }
    }

    /// Partitions held, over all consumed topics.
    pub fn assigned_partitions(&self) -> usize {
        let held = self.held.lock().expect("not poisoned");
        held.values().map(BTreeSet::len).sum()
    }

    /// How many assignments this member has received (0 before the group formed).
    pub fn assignments(&self) -> usize {
        self.assignments.load(Ordering::Relaxed)
    }
}
