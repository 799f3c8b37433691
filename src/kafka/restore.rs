//! A partition's way in after an assignment, when user state follows partitions through the
//! changelog: **held** (paused at the assignment) → **reading** its changelog partition (on a
//! blocking thread) → **installing** its users (the worker writes them to the store) → flowing
//! again from where the restored state ends. A revoke drops the partition from whatever phase
//! it is in: a read or an install already under way finishes, but nothing resumes it, and a
//! later assignment starts it over from held.
//!
//! The rebalance callbacks hold and drop; the run loop reads, installs and resumes. Partition p
//! of every input topic shares changelog partition p, so the machine is keyed by number.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::health::Health;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Held,
    Reading,
    Installing,
}

/// The partitions on their way in, shared by the consumer's callbacks and the run loop.
#[derive(Clone)]
pub struct Restores {
    /// The input topics (user state follows their partitions; the catalog's is not restored).
    inputs: Arc<Vec<String>>,
    phases: Arc<Mutex<BTreeMap<i32, Phase>>>,
    /// `phases`' size, read on every message without the lock.
    count: Arc<AtomicUsize>,
    /// Where `/readyz` reads which partitions are not flowing yet.
    health: Arc<Health>,
}

impl Restores {
    pub fn new(inputs: Vec<String>, health: Arc<Health>) -> Restores {
        Restores {
            inputs: Arc::new(inputs),
            phases: Arc::default(),
            count: Arc::default(),
            health,
        }
    }

    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// An assignment: pauses its input partitions and holds them (again, if a revoke
    /// interrupted an earlier restore).
    pub fn hold<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        assigned: &TopicPartitionList,
    ) {
        let (paused, partitions) = self.of_inputs(assigned);
        if let Err(err) = consumer.pause(&paused) {
            tracing::warn!(error = %err, "cannot pause partitions for their restore");
        }
        self.update(|phases| {
            for &partition in &partitions {
                phases.insert(partition, Phase::Held);
            }
        });
        tracing::info!(
            ?partitions,
            "partitions held until restored from the changelog"
        );
    }

    /// A revoke: the partitions leave the machine, whatever their phase.
    pub fn revoked(&self, revoked: &TopicPartitionList) {
        let (_, partitions) = self.of_inputs(revoked);
        self.update(|phases| {
            for partition in &partitions {
                phases.remove(partition);
            }
        });
    }

    /// Held → reading: the partitions whose changelog read may start.
    pub fn start_reading(&self) -> Vec<i32> {
        let mut started = Vec::new();
        self.update(|phases| {
            for (&partition, phase) in phases.iter_mut() {
                if *phase == Phase::Held {
                    *phase = Phase::Reading;
                    started.push(partition);
                }
            }
        });
        started
    }

    /// Reading → installing, once its read is done; false when the read is stale (the
    /// partition was revoked, or revoked and held again, meanwhile): drop it.
    pub fn read(&self, partition: i32) -> bool {
        self.advance(partition, Phase::Reading, Some(Phase::Installing))
    }

    /// Installing → flowing; false when the partition was revoked meanwhile: do not resume it.
    pub fn installed(&self, partition: i32) -> bool {
        self.advance(partition, Phase::Installing, None)
    }

    /// Whether messages of `topic`/`partition` wait for a restore: one atomic load while none
    /// does (the hot path), the lock only during restores.
    pub fn holds(&self, topic: &str, partition: i32) -> bool {
        self.count.load(Ordering::Relaxed) > 0
            && self.inputs.iter().any(|t| t == topic)
            && self
                .phases
                .lock()
                .expect("not poisoned")
                .contains_key(&partition)
    }

    /// Lets a restored partition flow again, each input topic from `next_of(topic)` (none:
    /// from where the consumer stands). Should a seek not take, the positions seek again when
    /// the next message arrives out of line.
    pub fn resume<C: ConsumerContext + 'static>(
        &self,
        consumer: &StreamConsumer<C>,
        partition: i32,
        next_of: impl Fn(&str) -> Option<i64>,
    ) {
        let mut held = TopicPartitionList::new();
        for topic in self.inputs.iter() {
            held.add_partition(topic, partition);
            let Some(next) = next_of(topic) else { continue };
            let at = Offset::Offset(next);
            if let Err(err) = consumer.seek(topic, partition, at, Duration::from_secs(10)) {
                tracing::warn!(topic, partition, next, error = %err, "cannot seek a restored partition");
            }
        }
        if let Err(err) = consumer.resume(&held) {
            tracing::warn!(partition, error = %err, "cannot resume a restored partition");
        }
    }

    fn advance(&self, partition: i32, from: Phase, to: Option<Phase>) -> bool {
        let mut moved = false;
        self.update(|phases| {
            if phases.get(&partition) == Some(&from) {
                moved = true;
                match to {
                    Some(to) => phases.insert(partition, to),
                    None => phases.remove(&partition),
                };
            }
        });
        moved
    }

    /// Changes the phases, then publishes their count and the set `/readyz` shows.
    fn update(&self, change: impl FnOnce(&mut BTreeMap<i32, Phase>)) {
        let mut phases = self.phases.lock().expect("not poisoned");
        change(&mut phases);
        self.count.store(phases.len(), Ordering::Relaxed);
        self.health.set_restoring(phases.keys().copied().collect());
    }

    /// The input topics' partitions in `list`, and their numbers.
    fn of_inputs(&self, list: &TopicPartitionList) -> (TopicPartitionList, Vec<i32>) {
        let mut inputs = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for element in list.elements() {
            if self.inputs.iter().any(|t| t == element.topic()) {
                inputs.add_partition(element.topic(), element.partition());
                partitions.push(element.partition());
            }
        }
        partitions.sort_unstable();
        partitions.dedup();
        (inputs, partitions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restores() -> Restores {
        Restores::new(vec!["events".into()], Arc::default())
    }

    fn list(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition("events", p);
            list.add_partition("catalog", p);
        }
        list
    }

    /// `hold` without a consumer to pause.
    fn held(restores: &Restores, partitions: &[i32]) {
        restores.update(|phases| {
            for &p in partitions {
                phases.insert(p, Phase::Held);
            }
        });
    }

    #[test]
    fn a_partition_goes_held_reading_installing_flowing() {
        let r = restores();
        held(&r, &[0, 2]);
        assert!(r.holds("events", 2) && !r.holds("catalog", 2) && !r.holds("events", 1));
        assert_eq!(r.health.restoring(), [0, 2]);
        assert_eq!(r.start_reading(), [0, 2]);
        assert!(r.start_reading().is_empty(), "each read starts once");
        assert!(r.read(2));
        assert!(r.installed(2));
        assert!(!r.holds("events", 2));
        assert_eq!(r.health.restoring(), [0]);
    }

    #[test]
    fn a_revoke_drops_a_partition_from_any_phase_and_a_stale_read_is_not_installed() {
        let r = restores();
        held(&r, &[0, 1, 2]);
        r.start_reading();
        assert!(r.read(1));
        r.revoked(&list(&[0, 1, 2]));
        assert!(r.health.restoring().is_empty());
        assert!(!r.read(0), "revoked while reading");
        assert!(!r.installed(1), "revoked while installing: not resumed");

        // Revoked and assigned again while its first read was under way: the first read is
        // stale, the second one counts.
        held(&r, &[2]);
        assert!(!r.read(2));
        assert_eq!(r.start_reading(), [2]);
        assert!(r.read(2) && r.installed(2));
    }
}
