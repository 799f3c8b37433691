//! Which input offsets may be committed: an event's offset is done once every output it caused
//! is acknowledged, and a partition's committable offset only moves over a contiguous run of done
//! offsets, so a commit never skips an event whose outputs are still in flight.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

/// Next offset to read per (topic name, partition): the stored form of the state's positions.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// A partition of a consumed topic, the topic named by its index in the consumed topics: the
/// key of every per-partition table on the hot path. (Stored offsets name the topic instead,
/// see [`Offsets`], so a state survives a change of topic order.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: u16,
    pub partition: i32,
}

/// One input message: the index of its topic in the input topic list, partition and offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Waiter {
    pub topic: u16,
    pub partition: i32,
    pub offset: i64,
}

impl PartitionKey {
    pub fn new(topic: u16, partition: i32) -> PartitionKey {
        PartitionKey { topic, partition }
    }
}

impl Waiter {
    /// The partition the message is from.
    pub fn key(self) -> PartitionKey {
        PartitionKey {
            topic: self.topic,
            partition: self.partition,
        }
    }
}

#[cfg(test)]
impl Waiter {
    /// Offset `offset` of partition 0 of the first input topic.
    pub(crate) fn at(offset: i64) -> Waiter {
        Waiter {
            topic: 0,
            partition: 0,
            offset,
        }
    }
}

/// Next offset per (index in the input topic list, partition): the hot path's form of
/// [`Offsets`], with no topic name to allocate per message.
pub type NextOffsets = BTreeMap<PartitionKey, i64>;

/// The worker of `workers` that owns a partition (its users, its offsets, its checkpoint part).
pub fn worker_of(partition: i32, workers: usize) -> usize {
    partition.unsigned_abs() as usize % workers
}

/// The index of `topic` in the consumed topics, the key of every per-partition table; None for
/// a topic `run` does not consume (never silently another topic's index).
pub fn topic_index(topics: &[String], topic: &str) -> Option<u16> {
    topics.iter().position(|t| t == topic).map(|i| i as u16)
}

/// Stored offsets for the topics in `inputs` (others are no longer consumed and are ignored).
pub fn by_index(offsets: &Offsets, inputs: &[String]) -> NextOffsets {
    offsets
        .iter()
        .filter_map(|((topic, partition), next)| {
            Some((
                PartitionKey::new(topic_index(inputs, topic)?, *partition),
                *next,
            ))
        })
        .collect()
}

/// The stored form of `next`.
pub fn by_name(next: &NextOffsets, inputs: &[String]) -> Offsets {
    next.iter()
        .map(|(key, &offset)| ((inputs[key.topic as usize].clone(), key.partition), offset))
        .collect()
}

#[derive(Default, Debug)]
struct Partition {
    open: OpenOffsets,
    /// The last offset whose outputs, and all earlier ones', are acknowledged.
    done_through: Option<i64>,
    reported: Option<i64>,
}

/// Offset → outputs not yet acknowledged, in offset order. Offsets arrive in order, so this is
/// a queue whose entry for an offset is found by its distance from the front (a search only
/// where the log has gaps), where a search tree took a dozen cache misses per lookup with
/// hundreds of thousands of inputs open.
#[derive(Default, Debug)]
struct OpenOffsets {
    entries: VecDeque<(i64, u32)>,
}

impl OpenOffsets {
    fn position(&self, offset: i64) -> Result<usize, usize> {
        let Some(&(first, _)) = self.entries.front() else {
            return Err(0);
        };
        let guess = usize::try_from(offset - first).ok();
        match guess.and_then(|i| self.entries.get(i).map(|e| (i, e.0))) {
            Some((i, at)) if at == offset => Ok(i),
            _ => self.entries.binary_search_by_key(&offset, |e| e.0),
        }
    }

    /// Sets the offset's count, adding it in order when new.
    fn insert(&mut self, offset: i64, count: u32) {
        if self.entries.back().is_none_or(|&(last, _)| last < offset) {
            self.entries.push_back((offset, count));
            return;
        }
        match self.position(offset) {
            Ok(i) => self.entries[i].1 = count,
            Err(i) => self.entries.insert(i, (offset, count)),
        }
    }

    fn get_mut(&mut self, offset: i64) -> Option<&mut u32> {
        let i = self.position(offset).ok()?;
        Some(&mut self.entries[i].1)
    }

    fn first(&self) -> Option<(i64, u32)> {
        self.entries.front().copied()
    }

    fn pop_first(&mut self) {
        self.entries.pop_front();
    }
}

#[derive(Default, Debug)]
pub struct OffsetTracker {
    partitions: FxHashMap<PartitionKey, Partition>,
    open_events: usize,
}

impl OffsetTracker {
    /// Registers a processed message waiting on `outputs` acknowledgements (0: done already).
    pub fn add(&mut self, waiter: Waiter, outputs: u32) {
        let partition = self.partitions.entry(waiter.key()).or_default();
        partition.open.insert(waiter.offset, outputs);
        self.open_events += 1;
        self.advance(waiter.key());
    }

    /// `waiter`, processed and still open, waits on `more` acknowledgements besides those
    /// it was added with (its deferred work left in several outputs).
    pub fn hold(&mut self, waiter: Waiter, more: u32) {
        let open = self.partitions.get_mut(&waiter.key());
        if let Some(count) = open.and_then(|p| p.open.get_mut(waiter.offset)) {
            *count += more;
        }
    }

    /// One output of `waiter` was acknowledged.
    pub fn resolve(&mut self, waiter: Waiter) {
        if let Some(partition) = self.partitions.get_mut(&waiter.key()) {
            if let Some(count) = partition.open.get_mut(waiter.offset) {
                *count = count.saturating_sub(1);
            }
        }
        self.advance(waiter.key());
    }

    fn advance(&mut self, key: PartitionKey) {
        let Some(partition) = self.partitions.get_mut(&key) else {
            return;
        };
        while let Some((offset, count)) = partition.open.first() {
            if count > 0 {
                break;
            }
            partition.open.pop_first();
            partition.done_through = Some(offset);
            self.open_events -= 1;
        }
    }

    /// Partitions whose committable offset moved since the last call, with their last done
    /// offset. Kafka's committed offset is that plus one.
    pub fn take_advanced(&mut self) -> Vec<(PartitionKey, i64)> {
        let mut advanced = Vec::new();
        for (&key, partition) in self.partitions.iter_mut() {
            if partition.done_through != partition.reported {
                if let Some(offset) = partition.done_through {
                    advanced.push((key, offset));
                }
                partition.reported = partition.done_through;
            }
        }
        advanced.sort_unstable();
        advanced
    }

    /// Messages processed whose outputs are not all acknowledged.
    pub fn open_events(&self) -> usize {
        self.open_events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_convert_between_names_and_indices() {
        let inputs = ["a".to_string(), "b".to_string()];
        let stored: Offsets = [(("b".to_string(), 3), 9), (("gone".to_string(), 0), 1)]
            .into_iter()
            .collect();
        let next = by_index(&stored, &inputs);
        assert_eq!(next, [(PartitionKey::new(1, 3), 9)].into_iter().collect());
        assert_eq!(
            by_name(&next, &inputs),
            [(("b".to_string(), 3), 9)].into_iter().collect()
        );
    }

    #[test]
    fn an_unknown_topic_has_no_index() {
        let consumed = ["events".to_string(), "catalog".to_string()];
        assert_eq!(topic_index(&consumed, "catalog"), Some(1));
        assert_eq!(topic_index(&consumed, "other"), None, "never topic 0's");
    }

    #[test]
    fn commits_only_over_a_contiguous_run_of_done_offsets() {
        let mut tracker = OffsetTracker::default();
        tracker.add(Waiter::at(10), 1);
        tracker.add(Waiter::at(11), 0);
        tracker.add(Waiter::at(12), 2);
        assert!(tracker.take_advanced().is_empty(), "10 is still in flight");
        tracker.resolve(Waiter::at(12));
        tracker.resolve(Waiter::at(10));
        assert_eq!(tracker.take_advanced(), vec![(PartitionKey::new(0, 0), 11)]);
        assert_eq!(tracker.open_events(), 1);
        tracker.resolve(Waiter::at(12));
        assert_eq!(tracker.take_advanced(), vec![(PartitionKey::new(0, 0), 12)]);
        assert!(tracker.take_advanced().is_empty(), "reported once");
        assert_eq!(tracker.open_events(), 0);
    }

    /// The tracker as a search tree of open offsets, as it was first written: the reference.
    #[derive(Default)]
    struct Reference {
        open: BTreeMap<i64, u32>,
        done_through: Option<i64>,
    }

    impl Reference {
        fn advance(&mut self) {
            while let Some((&offset, &count)) = self.open.first_key_value() {
                if count > 0 {
                    break;
                }
                self.open.pop_first();
                self.done_through = Some(offset);
            }
        }
    }

    proptest::proptest! {
        /// Offsets mostly in order, with gaps (compaction, transaction markers) and now and then
        /// one from before (a partition read again); acknowledgements in any order.
        #[test]
        fn the_queue_of_open_offsets_commits_what_a_search_tree_commits(
            steps in proptest::collection::vec((0u8..10, 0i64..4, 0u32..3), 1..300)
        ) {
            let mut tracker = OffsetTracker::default();
            let mut reference = Reference::default();
            let mut next = 0i64;
            for (kind, jump, outputs) in steps {
                let open: Vec<i64> = reference.open.iter().filter(|(_, &c)| c > 0).map(|(&o, _)| o).collect();
                match kind {
                    0..=4 => {
                        let offset = if kind == 0 { next - 2 * jump } else { next + jump };
                        next = next.max(offset + 1);
                        tracker.add(Waiter::at(offset), outputs);
                        reference.open.insert(offset, outputs);
                    }
                    5 if !open.is_empty() => {
                        let offset = open[jump as usize % open.len()];
                        tracker.hold(Waiter::at(offset), outputs);
                        *reference.open.get_mut(&offset).unwrap() += outputs;
                    }
                    _ if !open.is_empty() => {
                        let offset = open[(jump as usize * 7 + outputs as usize) % open.len()];
                        tracker.resolve(Waiter::at(offset));
                        let count = reference.open.get_mut(&offset).unwrap();
                        *count = count.saturating_sub(1);
                    }
                    _ => {}
                }
                reference.advance();
                let expected: Vec<(PartitionKey, i64)> = reference.done_through.map(|o| (PartitionKey::new(0, 0), o)).into_iter().collect();
                let advanced = tracker.take_advanced();
                proptest::prop_assert!(advanced.is_empty() || advanced == expected, "{advanced:?} vs {expected:?}");
                let done_through = tracker.partitions.get(&PartitionKey::new(0, 0)).and_then(|p| p.done_through);
                proptest::prop_assert_eq!(done_through, reference.done_through);
            }
        }
    }

    #[test]
    fn partitions_advance_independently() {
        let mut tracker = OffsetTracker::default();
        let other = Waiter {
            topic: 0,
            partition: 1,
            offset: 5,
        };
        tracker.add(Waiter::at(0), 1);
        tracker.add(other, 0);
        assert_eq!(tracker.take_advanced(), vec![(PartitionKey::new(0, 1), 5)]);
    }
}
