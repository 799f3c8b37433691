//! Per-key coalescing of outputs: at most one update per key per interval, the last state wins.
//! Time is whatever the caller passes in (wall time in the pipeline), so this stays testable.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use crate::offsets::Waiter;

/// An update owed for one key: the input messages waiting on it and what caused it last.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pending {
    pub waiters: Vec<Waiter>,
    pub cause_event_id: Option<String>,
    /// Kafka timestamp of the latest cause, for end-to-end latency.
    pub cause_ts_ms: Option<i64>,
}

/// What `offer` decided.
#[derive(Debug, PartialEq)]
pub enum Offer {
    /// Emit now.
    Now(Pending),
    /// Folded into an update emitted later by `due` or `drain`.
    Deferred,
}

#[derive(Debug)]
pub struct Coalescer {
    interval_ms: i64,
    last_sent: FxHashMap<String, i64>,
    /// (sent at, key), to forget keys whose interval has passed.
    sent_order: VecDeque<(i64, String)>,
    pending: FxHashMap<String, Pending>,
    /// (due at, sequence) → key; the sequence keeps equal due times in arrival order.
    due: BTreeMap<(i64, u64), String>,
    sequence: u64,
}

impl Coalescer {
    pub fn new(interval_ms: i64) -> Coalescer {
        Coalescer {
            interval_ms,
            last_sent: FxHashMap::default(),
            sent_order: VecDeque::new(),
            pending: FxHashMap::default(),
            due: BTreeMap::new(),
            sequence: 0,
        }
    }

    pub fn offer(
        &mut self,
        key: &str,
        waiter: Waiter,
        cause_event_id: Option<&str>,
        cause_ts_ms: Option<i64>,
        now_ms: i64,
    ) -> Offer {
        if let Some(pending) = self.pending.get_mut(key) {
            pending.waiters.push(waiter);
            // Most inputs of a busy key land here: the cause is copied into the held one's
            // buffer rather than allocated for each of them.
            match (&mut pending.cause_event_id, cause_event_id) {
                (Some(held), Some(cause)) => cause.clone_into(held),
                (held, cause) => *held = cause.map(str::to_owned),
            }
            pending.cause_ts_ms = cause_ts_ms;
            return Offer::Deferred;
        }
        let update = Pending {
            waiters: vec![waiter],
            cause_event_id: cause_event_id.map(str::to_owned),
            cause_ts_ms,
        };
        match self.last_sent.get(key) {
            Some(&sent) if self.interval_ms > 0 && now_ms - sent < self.interval_ms => {
                self.sequence += 1;
                self.due
                    .insert((sent + self.interval_ms, self.sequence), key.to_owned());
                self.pending.insert(key.to_owned(), update);
                Offer::Deferred
            }
            _ => {
                self.mark_sent(key, now_ms);
                Offer::Now(update)
            }
        }
    }

    fn mark_sent(&mut self, key: &str, now_ms: i64) {
        if self.interval_ms == 0 {
            return;
        }
        self.last_sent.insert(key.to_owned(), now_ms);
        self.sent_order.push_back((now_ms, key.to_owned()));
    }

    /// Updates whose interval has passed, in due order, at most `limit` of them (the rest
    /// stay due: `owes`).
    pub fn due(&mut self, now_ms: i64, limit: usize) -> Vec<(String, Pending)> {
        let mut ready = Vec::new();
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > now_ms || ready.len() >= limit {
                break;
            }
            let key = entry.remove();
            if let Some(pending) = self.pending.remove(&key) {
                self.mark_sent(&key, now_ms);
                ready.push((key, pending));
            }
        }
        self.forget_quiet_keys(now_ms);
        ready
    }

    /// Whether an update is due at `now_ms`.
    pub fn owes(&self, now_ms: i64) -> bool {
        self.due
            .first_key_value()
            .is_some_and(|(at, _)| at.0 <= now_ms)
    }

    /// Every owed update, due or not (shutdown).
    pub fn drain(&mut self) -> Vec<(String, Pending)> {
        let keys: Vec<String> = std::mem::take(&mut self.due).into_values().collect();
        keys.into_iter()
            .filter_map(|key| self.pending.remove(&key).map(|p| (key, p)))
            .collect()
    }

    fn forget_quiet_keys(&mut self, now_ms: i64) {
        while let Some((sent, _)) = self.sent_order.front() {
            if now_ms - sent < self.interval_ms {
                break;
            }
            let (sent, key) = self.sent_order.pop_front().expect("front exists");
            if self.last_sent.get(&key) == Some(&sent) && !self.pending.contains_key(&key) {
                self.last_sent.remove(&key);
            }
        }
    }

    /// Whether an output for `key` is owed.
    pub fn is_pending(&self, key: &str) -> bool {
        self.pending.contains_key(key)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Keys remembered for rate limiting (bounded by keys updated within one interval).
    #[cfg(test)]
    pub fn remembered_len(&self) -> usize {
        self.last_sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_interval_emits_every_time() {
        let mut c = Coalescer::new(0);
        for offset in 0..3 {
            assert!(matches!(
                c.offer("u", Waiter::at(offset), None, None, 5),
                Offer::Now(_)
            ));
        }
        assert_eq!(c.remembered_len(), 0);
    }

    #[test]
    fn at_most_one_update_per_interval_and_the_last_cause_wins() {
        let mut c = Coalescer::new(100);
        assert!(matches!(
            c.offer("u", Waiter::at(1), Some("e1"), None, 0),
            Offer::Now(_)
        ));
        assert_eq!(
            c.offer("u", Waiter::at(2), Some("e2"), None, 10),
            Offer::Deferred
        );
        assert_eq!(
            c.offer("u", Waiter::at(3), Some("e3"), Some(7), 20),
            Offer::Deferred
        );
        assert!(c.due(99, usize::MAX).is_empty());
        let ready = c.due(100, usize::MAX);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].1.waiters, vec![Waiter::at(2), Waiter::at(3)]);
        assert_eq!(ready[0].1.cause_event_id.as_deref(), Some("e3"));
        assert_eq!(
            c.offer("u", Waiter::at(4), None, None, 150),
            Offer::Deferred,
            "sent at 100"
        );
        assert_eq!(c.drain().len(), 1);
        assert_eq!(c.pending_len(), 0);
    }

    #[test]
    fn due_order_follows_due_time_not_arrival() {
        let mut c = Coalescer::new(1000);
        c.offer("a", Waiter::at(1), None, None, 0);
        c.offer("b", Waiter::at(2), None, None, 500);
        c.offer("b", Waiter::at(3), None, None, 600);
        c.offer("a", Waiter::at(4), None, None, 700);
        let keys: Vec<String> = c
            .due(1000, usize::MAX)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["a"]);
        let keys: Vec<String> = c
            .due(1500, usize::MAX)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["b"]);
    }

    #[test]
    fn a_limited_step_leaves_the_rest_due_in_order() {
        let mut c = Coalescer::new(100);
        for user in 0..5 {
            let key = format!("u{user}");
            c.offer(&key, Waiter::at(user), None, None, 0);
            c.offer(&key, Waiter::at(10 + user), None, None, user);
        }
        let keys = |ready: Vec<(String, Pending)>| -> Vec<String> {
            ready.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(c.due(200, 2)), vec!["u0", "u1"]);
        assert!(c.owes(200));
        assert_eq!(keys(c.due(200, 2)), vec!["u2", "u3"]);
        assert_eq!(keys(c.due(200, 2)), vec!["u4"]);
        assert!(!c.owes(200));
    }

    #[test]
    fn quiet_keys_are_forgotten_so_memory_stays_bounded() {
        let mut c = Coalescer::new(10);
        for user in 0..100 {
            c.offer(&format!("u{user}"), Waiter::at(user), None, None, user);
        }
        c.due(200, usize::MAX);
        assert_eq!(c.remembered_len(), 0);
    }
}
