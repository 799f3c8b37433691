//! A deterministic order over several partitions for replays: always the head with the smallest
//! (timestamp, partition key, offset) among partitions that have not ended. Kafka hands over
//! partitions interleaved however fetches arrive; merging by time makes two replays of the same
//! topic apply events in the same order, whatever the partition count.
//!
//! It holds at most one message per partition: the edge fills the partition `next_step` names.

use std::collections::BTreeMap;

pub use crate::offsets::PartitionKey;

/// What the edge should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<T> {
    /// Apply this message.
    Emit(PartitionKey, T),
    /// Read the next message of this partition (or learn that it ended).
    Fill(PartitionKey),
    /// Every partition ended.
    Done,
}

struct Head<T> {
    timestamp_ms: i64,
    offset: i64,
    message: T,
}

enum Slot<T> {
    Empty,
    Full(Head<T>),
    Ended,
}

pub struct Merge<T> {
    slots: BTreeMap<PartitionKey, Slot<T>>,
}

impl<T> Merge<T> {
    pub fn new(partitions: impl IntoIterator<Item = PartitionKey>) -> Merge<T> {
        Merge {
            slots: partitions.into_iter().map(|k| (k, Slot::Empty)).collect(),
        }
    }

    /// The partition's next message; a message without a timestamp sorts first.
    pub fn push(&mut self, key: PartitionKey, timestamp_ms: Option<i64>, offset: i64, message: T) {
        let slot = self.slots.get_mut(&key).expect("a merged partition");
        debug_assert!(matches!(slot, Slot::Empty), "one message at a time");
        *slot = Slot::Full(Head {
            timestamp_ms: timestamp_ms.unwrap_or(i64::MIN),
            offset,
            message,
        });
    }

    /// The partition has nothing more for this replay.
    pub fn end(&mut self, key: PartitionKey) {
        self.slots.insert(key, Slot::Ended);
    }

    pub fn next_step(&mut self) -> Step<T> {
        let mut best: Option<(i64, PartitionKey, i64)> = None;
        for (&key, slot) in &self.slots {
            match slot {
                Slot::Empty => return Step::Fill(key),
                Slot::Ended => {}
                Slot::Full(head) => {
                    let rank = (head.timestamp_ms, key, head.offset);
                    if best.is_none_or(|b| rank < b) {
                        best = Some(rank);
                    }
                }
            }
        }
        let Some((_, key, _)) = best else {
            return Step::Done;
        };
        match std::mem::replace(self.slots.get_mut(&key).expect("present"), Slot::Empty) {
            Slot::Full(head) => Step::Emit(key, head.message),
            _ => unreachable!("the best slot is full"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a merge over in-memory partitions of (timestamp, payload); returns the payloads.
    fn merged(partitions: &[(PartitionKey, Vec<(i64, &'static str)>)]) -> Vec<&'static str> {
        let mut merge = Merge::new(partitions.iter().map(|(k, _)| *k));
        let mut cursors: BTreeMap<PartitionKey, usize> = BTreeMap::new();
        let mut out = Vec::new();
        loop {
            match merge.next_step() {
                Step::Emit(_, payload) => out.push(payload),
                Step::Fill(key) => {
                    let messages = &partitions.iter().find(|(k, _)| *k == key).unwrap().1;
                    let cursor = cursors.entry(key).or_default();
                    match messages.get(*cursor) {
                        Some(&(ts, payload)) => merge.push(key, Some(ts), *cursor as i64, payload),
                        None => merge.end(key),
                    }
                    *cursor += 1;
                }
                Step::Done => return out,
            }
        }
    }

    #[test]
    fn partitions_merge_by_time_then_partition() {
        let out = merged(&[
            (PartitionKey::new(0, 1), vec![(10, "b10"), (30, "b30")]),
            (
                PartitionKey::new(0, 0),
                vec![(10, "a10"), (20, "a20"), (40, "a40")],
            ),
            (PartitionKey::new(1, 0), vec![]),
        ]);
        assert_eq!(out, ["a10", "b10", "a20", "b30", "a40"]);
    }

    #[test]
    fn each_partition_keeps_its_own_order_even_when_time_goes_back() {
        let out = merged(&[
            (PartitionKey::new(0, 0), vec![(50, "late"), (5, "early")]),
            (PartitionKey::new(0, 1), vec![(10, "x")]),
        ]);
        assert_eq!(out, ["x", "late", "early"]);
    }

    #[test]
    fn nothing_to_merge_is_done_at_once() {
        assert!(merged(&[]).is_empty());
        let mut merge: Merge<()> = Merge::new([PartitionKey::new(0, 0)]);
        merge.end(PartitionKey::new(0, 0));
        assert_eq!(merge.next_step(), Step::Done);
    }
}
