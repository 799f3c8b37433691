//! Where each partition must continue: the next offset the engine has not applied yet. Kafka's
//! committed offsets may lag it (they follow checkpoints) or, after a rebalance, restart behind
//! it; messages the engine already applied are dropped and the partition is sought back in line.

use std::collections::{HashMap, HashSet};

use crate::store::Offsets;

/// What to do with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Process,
    /// Drop it; if `seek_to` is set, seek the partition there first.
    Skip {
        seek_to: Option<i64>,
    },
}

#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<(String, i32), i64>,
    seeking: HashSet<(String, i32)>,
}

impl Positions {
    /// Starts from the offsets a restored state reflects.
    pub fn from_state(offsets: &Offsets) -> Positions {
        Positions {
            next: offsets.clone().into_iter().collect(),
            seeking: HashSet::new(),
        }
    }

    pub fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Verdict {
        let key = (topic.to_owned(), partition);
        let Some(&next) = self.next.get(&key) else {
            self.next.insert(key, offset + 1);
            return Verdict::Process;
        };
        if offset == next {
            self.seeking.remove(&key);
            self.next.insert(key, offset + 1);
            return Verdict::Process;
        }
        let already_seeking = self.seeking.contains(&key);
        if offset > next && already_seeking {
            // Sought back and still ahead: the log no longer holds those offsets (retention).
            tracing::warn!(
                topic,
                partition,
                expected = next,
                got = offset,
                "offsets gone from the log; continuing after them"
            );
            self.seeking.remove(&key);
            self.next.insert(key, offset + 1);
            return Verdict::Process;
        }
        let seek_to = (!already_seeking).then_some(next);
        self.seeking.insert(key);
        Verdict::Skip { seek_to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_applied_messages_are_dropped_with_one_seek() {
        let state: Offsets = [(("t".to_string(), 0), 10)].into_iter().collect();
        let mut p = Positions::from_state(&state);
        assert_eq!(p.check("t", 0, 7), Verdict::Skip { seek_to: Some(10) });
        assert_eq!(p.check("t", 0, 8), Verdict::Skip { seek_to: None });
        assert_eq!(p.check("t", 0, 10), Verdict::Process);
        assert_eq!(p.check("t", 0, 11), Verdict::Process);
        assert_eq!(
            p.check("t", 0, 5),
            Verdict::Skip { seek_to: Some(12) },
            "a rebalance rewound it"
        );
    }

    #[test]
    fn a_gap_is_sought_back_once_then_accepted() {
        let state: Offsets = [(("t".to_string(), 1), 10)].into_iter().collect();
        let mut p = Positions::from_state(&state);
        assert_eq!(p.check("t", 1, 20), Verdict::Skip { seek_to: Some(10) });
        assert_eq!(
            p.check("t", 1, 20),
            Verdict::Process,
            "retention removed 10..20"
        );
        assert_eq!(
            p.check("other", 0, 3),
            Verdict::Process,
            "no state: start anywhere"
        );
    }
}
