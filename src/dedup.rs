//! Exact dedup within a window bounded in both entry count and event time.
//!
//! The key is the `event_id` when the producer sent one, else a hash of (user, item, type, ts).
//! Keys are 128-bit hashes: exact in practice (a false match needs a 2^-64-scale collision) at a
//! fixed 16 bytes a key whatever the id lengths.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::config::DedupConfig;
use crate::event::Event;
use crate::rng::hash128;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "WindowRecord")]
pub struct DedupWindow {
    config: DedupConfig,
    /// An index over `order`, rebuilt on load rather than stored.
    #[serde(skip)]
    seen: FxHashSet<u128>,
    /// Keys in arrival order with their event time, for eviction.
    order: VecDeque<(u128, i64)>,
    latest_ts_ms: i64,
}

/// A window as stored: everything but the derived index.
#[derive(Deserialize)]
struct WindowRecord {
    config: DedupConfig,
    order: VecDeque<(u128, i64)>,
    latest_ts_ms: i64,
}

impl From<WindowRecord> for DedupWindow {
    fn from(r: WindowRecord) -> DedupWindow {
        DedupWindow {
            seen: r.order.iter().map(|(key, _)| *key).collect(),
            config: r.config,
            order: r.order,
            latest_ts_ms: r.latest_ts_ms,
        }
    }
}

/// The dedup key of an event.
pub fn dedup_key(event: &Event) -> u128 {
    match &event.event_id {
        Some(id) => hash128(&[b"id", id.as_bytes()]),
        None => hash128(&[
            b"fields",
            event.user_id.as_bytes(),
            event.item_id.as_bytes(),
            event.kind.as_str().as_bytes(),
            &event.ts_ms.to_le_bytes(),
        ]),
    }
}

impl DedupWindow {
    pub fn new(config: DedupConfig) -> DedupWindow {
        DedupWindow {
            config,
            seen: FxHashSet::default(),
            order: VecDeque::new(),
            latest_ts_ms: i64::MIN,
        }
    }

    /// Records the event; returns false if its key is already in the window (a duplicate).
    pub fn first_sighting(&mut self, event: &Event) -> bool {
        let key = dedup_key(event);
        if self.seen.contains(&key) {
            return false;
        }
        self.latest_ts_ms = self.latest_ts_ms.max(event.ts_ms);
        self.seen.insert(key);
        self.order.push_back((key, event.ts_ms));
        self.evict();
        true
    }

    fn evict(&mut self) {
        let horizon = self.latest_ts_ms.saturating_sub(self.config.window_ms);
        while let Some(&(key, ts)) = self.order.front() {
            if self.order.len() <= self.config.max_entries && ts >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use proptest::prelude::*;

    fn window(max_entries: usize, window_ms: i64) -> DedupWindow {
        DedupWindow::new(DedupConfig {
            max_entries,
            window_ms,
        })
    }

    #[test]
    fn same_fields_without_id_are_duplicates() {
        let mut dedup = window(10, 1000);
        let event = Event::new(EventType::View, "u", "i", 5);
        assert!(dedup.first_sighting(&event));
        assert!(!dedup.first_sighting(&event));
        assert!(dedup.first_sighting(&Event::new(EventType::Purchase, "u", "i", 5)));
    }

    #[test]
    fn event_id_wins_over_fields() {
        let mut dedup = window(10, 1000);
        let mut a = Event::new(EventType::View, "u", "i", 5);
        a.event_id = Some("e1".into());
        let mut b = Event::new(EventType::View, "u", "other", 6);
        b.event_id = Some("e1".into());
        assert!(dedup.first_sighting(&a));
        assert!(!dedup.first_sighting(&b));
    }

    #[test]
    fn window_forgets_by_time_and_by_count() {
        let mut dedup = window(3, 100);
        let old = Event::new(EventType::View, "u", "old", 0);
        assert!(dedup.first_sighting(&old));
        assert!(dedup.first_sighting(&Event::new(EventType::View, "u", "x", 150)));
        assert!(dedup.first_sighting(&old), "expired by event time");
        let mut count_limited = window(2, 1_000_000);
        for item in ["a", "b", "c"] {
            assert!(count_limited.first_sighting(&Event::new(EventType::View, "u", item, 1)));
        }
        assert_eq!(count_limited.len(), 2);
        assert!(count_limited.first_sighting(&Event::new(EventType::View, "u", "a", 1)));
    }

    proptest! {
        #[test]
        fn replaying_a_stream_finds_only_duplicates_and_memory_stays_bounded(
            items in proptest::collection::vec((0u8..20, 0i64..50), 1..200)
        ) {
            let mut dedup = window(16, 1_000_000);
            let events: Vec<Event> = items
                .iter()
                .map(|(item, ts)| Event::new(EventType::View, "u", &item.to_string(), *ts))
                .collect();
            let first: Vec<bool> = events.iter().map(|e| dedup.first_sighting(e)).collect();
            prop_assert!(dedup.len() <= 16);
            // Applying the same event twice in a row: the second is always a duplicate.
            for event in &events {
                dedup.first_sighting(event);
                prop_assert!(!dedup.first_sighting(event));
            }
            prop_assert!(first.iter().any(|&f| f));
        }
    }
}
