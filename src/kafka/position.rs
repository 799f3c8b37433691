//! Where each partition must continue: the next offset the engine has not applied yet. Kafka's
//! committed offsets may lag it (they follow checkpoints) or, after a rebalance, restart behind
//! it; messages the engine already applied are dropped and the partition is sought back in line.
//!
//! At start-up the state's offsets are the truth (they may lag the group's commits on purpose:
//! a state built by a replay up to a time). After a later assignment, a partition that starts
//! *ahead* of the state was advanced by another member of the group since this one held it: those
//! events are in that member's state, so this one continues from there rather than applying them
//! a second time.
//!
//! Once a partition's messages arrive in line, a jump forward is the log's own gap, never the
//! group's position: transaction markers and aborted transactions (a transactional producer's
//! every commit leaves one offset no consumer receives), compaction, or retention (librdkafka
//! logs the reset it makes). It is accepted as it comes; seeking back would only land at the
//! same message again, after a fetch round-trip for every transaction.

use std::collections::{HashMap, HashSet};

use crate::offsets::{NextOffsets, PartitionKey};

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Process,
    /// Drop it; if `seek_to` is set, seek the partition there first.
    Skip {
        seek_to: Option<i64>,
    },
    /// The state has applied this partition up to `next` - 1, and the log's end is before
    /// that (the caller's check of the watermarks when a seek goes forward): the topic was
    /// recreated, or the broker lost data. Processing on would skip the new log's messages as
    /// already applied.
    LogBehindState {
        next: i64,
        log_start: i64,
        log_end: i64,
    },
}

#[derive(Debug, Default)]
pub struct Positions {
    /// The input topics by index, for logs.
    topics: Vec<String>,
    next: HashMap<PartitionKey, i64>,
    /// Partitions being sought, with the offset of the message that asked for it when the
    /// seek went forward (to where the state ends).
    seeking: HashMap<PartitionKey, Option<i64>>,
    /// Partitions whose first message since the latest assignment has not arrived yet.
    fresh: HashSet<PartitionKey>,
    /// Partitions whose latest message was processed, with no assignment, seek or restore since.
    in_line: HashSet<PartitionKey>,
}

impl Positions {
    /// Starts from the offsets a restored state reflects.
    pub fn from_state(next: &NextOffsets) -> Positions {
        Positions {
            next: next.iter().map(|(k, v)| (*k, *v)).collect(),
            ..Positions::default()
        }
    }

    /// Names the input topics (by index) in what it logs.
    pub fn named(self, topics: &[String]) -> Positions {
        Positions {
            topics: topics.to_vec(),
            ..self
        }
    }

    /// The group assigned partitions again (not the first time): each one's next first message
    /// says where the group stands.
    pub fn reassigned(&mut self) {
        self.fresh = self.next.keys().copied().collect();
        self.seeking.clear();
        self.in_line.clear();
    }

    /// The partition's state was restored up to `next` (from the changelog): continue there,
    /// seeking if the group's position differs.
    pub fn restored(&mut self, key: PartitionKey, next: i64) {
        self.next.insert(key, next);
        self.fresh.remove(&key);
        self.seeking.remove(&key);
        self.in_line.remove(&key);
    }

    /// A message of a partition held for its restore was dropped: with no position known, the
    /// partition must continue from it.
    pub fn held_at(&mut self, key: PartitionKey, offset: i64) {
        self.next.entry(key).or_insert(offset);
        self.in_line.remove(&key);
    }

    /// The next offset the state expects of a partition, if it knows one.
    pub fn next_of(&self, key: PartitionKey) -> Option<i64> {
        self.next.get(&key).copied()
    }

    pub fn check(&mut self, key: PartitionKey, offset: i64) -> Verdict {
        let partition = key.partition;
        let topic = topic_name(&self.topics, key);
        let Some(&next) = self.next.get(&key) else {
            return self.accept(key, offset);
        };
        if self.fresh.remove(&key) && offset > next {
            tracing::info!(
                topic,
                partition,
                state = next,
                group = offset,
                "another member advanced this partition; continuing where it stopped"
            );
            return self.accept(key, offset);
        }
        if offset == next {
            return self.accept(key, offset);
        }
        if offset > next && self.in_line.contains(&key) {
            tracing::debug!(
                topic,
                partition,
                expected = next,
                got = offset,
                "offsets the log does not deliver (a transaction marker, compaction); continuing"
            );
            return self.accept(key, offset);
        }
        let seeking = self.seeking.get(&key).copied();
        if let Some(Some(from)) = seeking {
            if offset <= from {
                // Sought forward from `from` and landed before it: either the seek was out of
                // range and the reset policy went to the log's start, or this message was
                // fetched again from the group's position (a rebalance, a stale fetch). Only
                // the log's end tells them apart: seek again, and the caller checks it.
                tracing::info!(
                    topic,
                    partition,
                    offset,
                    next,
                    "landed before the seek; seeking again"
                );
                self.seeking.insert(key, Some(offset));
                return Verdict::Skip {
                    seek_to: Some(next),
                };
            }
        }
        let already_seeking = seeking.is_some();
        if offset > next && already_seeking {
            // Sought back and still ahead: the log does not deliver those offsets. Retention
            // removed them (librdkafka warns of the reset it made), or they are transaction
            // markers, aborted transactions or compacted away.
            tracing::info!(
                topic,
                partition,
                expected = next,
                got = offset,
                "offsets the log does not deliver; continuing after them"
            );
            return self.accept(key, offset);
        }
        if already_seeking {
            return Verdict::Skip { seek_to: None };
        }
        // Out of line from here until a message is taken (a partition seeking is never in line).
        self.in_line.remove(&key);
        self.seeking.insert(key, (offset < next).then_some(offset));
        Verdict::Skip {
            seek_to: Some(next),
        }
    }

    /// Takes the message: the partition continues after it, in line.
    fn accept(&mut self, key: PartitionKey, offset: i64) -> Verdict {
        self.seeking.remove(&key);
        self.next.insert(key, offset + 1);
        self.in_line.insert(key);
        Verdict::Process
    }
}

/// The input topic's name for logs (only a position the consumer never reported lacks one).
fn topic_name(topics: &[String], key: PartitionKey) -> &str {
    topics.get(key.topic as usize).map_or("?", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::by_index;
    use crate::store::Offsets;

    #[test]
    fn already_applied_messages_are_dropped_with_one_seek() {
        let state: Offsets = [(("t".to_string(), 0), 10)].into_iter().collect();
        let mut p = Positions::from_state(&by_index(&state, &["t".to_string()]));
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 7),
            Verdict::Skip { seek_to: Some(10) }
        );
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 8),
            Verdict::Skip { seek_to: None }
        );
        assert_eq!(p.check(PartitionKey::new(0, 0), 10), Verdict::Process);
        assert_eq!(p.check(PartitionKey::new(0, 0), 11), Verdict::Process);
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 5),
            Verdict::Skip { seek_to: Some(12) },
            "a rebalance rewound it"
        );
    }

    #[test]
    fn a_partition_another_member_advanced_continues_from_there() {
        let inputs = ["t".to_string(), "other".to_string()];
        let state: Offsets = [(("t".to_string(), 1), 10)].into_iter().collect();
        let mut p = Positions::from_state(&by_index(&state, &inputs));
        assert_eq!(
            p.check(PartitionKey::new(0, 1), 20),
            Verdict::Skip { seek_to: Some(10) },
            "at start-up the state is the truth"
        );
        assert_eq!(p.check(PartitionKey::new(0, 1), 10), Verdict::Process);
        assert_eq!(
            p.check(PartitionKey::new(1, 0), 3),
            Verdict::Process,
            "no state: start anywhere"
        );
        p.reassigned();
        assert_eq!(
            p.check(PartitionKey::new(0, 1), 30),
            Verdict::Process,
            "another member got to 30"
        );
        assert_eq!(
            p.check(PartitionKey::new(0, 1), 5),
            Verdict::Skip { seek_to: Some(31) }
        );
        p.reassigned();
        assert_eq!(
            p.check(PartitionKey::new(0, 1), 12),
            Verdict::Skip { seek_to: Some(31) },
            "behind the state: already applied here"
        );
    }

    #[test]
    fn a_message_fetched_again_after_a_forward_seek_seeks_again_rather_than_stop() {
        let state: Offsets = [(("t".to_string(), 0), 5_000)].into_iter().collect();
        let mut p = Positions::from_state(&by_index(&state, &["t".to_string()]));
        // A recreated topic: its first message is at 0, far behind the state.
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 0),
            Verdict::Skip {
                seek_to: Some(5_000)
            }
        );
        // Fetched before the seek took effect: still the old run of messages.
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 1),
            Verdict::Skip { seek_to: None }
        );
        // Back before the seek's start: an out-of-range seek reset to the log's start, or the
        // same message fetched again after a rebalance. Seek again (the caller checks the
        // log's end on every forward seek), once per landing.
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 0),
            Verdict::Skip {
                seek_to: Some(5_000)
            }
        );
        assert_eq!(
            p.check(PartitionKey::new(0, 0), 1),
            Verdict::Skip { seek_to: None }
        );
        assert_eq!(p.check(PartitionKey::new(0, 0), 5_000), Verdict::Process);
    }

    #[test]
    fn a_gap_in_line_is_the_logs_own_and_is_crossed_without_a_seek() {
        let state: Offsets = [(("t".to_string(), 1), 10)].into_iter().collect();
        let mut p = Positions::from_state(&by_index(&state, &["t".to_string()]));
        let key = PartitionKey::new(0, 1);
        assert_eq!(p.check(key, 10), Verdict::Process);
        // A transactional producer's commit marker at 11, an aborted transaction at 13..=15
        // and its marker at 16: read_committed delivers 12, then 17.
        assert_eq!(p.check(key, 12), Verdict::Process);
        assert_eq!(p.check(key, 17), Verdict::Process);
        assert_eq!(p.next_of(key), Some(18));
        assert_eq!(
            p.check(key, 5),
            Verdict::Skip { seek_to: Some(18) },
            "fetched again from behind: still already applied"
        );
    }

    #[test]
    fn a_gap_out_of_line_is_sought_back_once_then_accepted() {
        let state: Offsets = [(("t".to_string(), 1), 10)].into_iter().collect();
        let key = PartitionKey::new(0, 1);
        // At start-up: the group's position may be ahead of the state on purpose.
        let mut p = Positions::from_state(&by_index(&state, &["t".to_string()]));
        assert_eq!(p.check(key, 20), Verdict::Skip { seek_to: Some(10) });
        assert_eq!(
            p.check(key, 20),
            Verdict::Process,
            "retention removed 10..20"
        );
        // After a seek, a restore or a hold, the next message is not in line either.
        let restored = |p: &mut Positions| p.restored(PartitionKey::new(0, 1), 21);
        let held = |p: &mut Positions| p.held_at(PartitionKey::new(0, 1), 25);
        for (leave_line, next) in [(restored as fn(&mut Positions), 21), (held, 11)] {
            let mut p = Positions::from_state(&by_index(&state, &["t".to_string()]));
            assert_eq!(p.check(key, 10), Verdict::Process);
            leave_line(&mut p);
            assert_eq!(
                p.check(key, 30),
                Verdict::Skip {
                    seek_to: Some(next)
                }
            );
        }
        let mut p = Positions::from_state(&by_index(&state, &["t".to_string()]));
        assert_eq!(p.check(key, 10), Verdict::Process);
        assert_eq!(p.check(key, 3), Verdict::Skip { seek_to: Some(11) });
        assert_eq!(p.check(key, 4), Verdict::Skip { seek_to: None });
        assert_eq!(
            p.check(key, 30),
            Verdict::Process,
            "sought forward from behind and landed past it: the log lacks 11..30"
        );
    }
}
