//! Exact dedup within a window bounded in both entry count and event time.
//!
//! The key is the `event_id` when the producer sent one, else a hash of (user, item, type, ts).
//! Keys are 128-bit hashes: exact in practice (a false match needs a 2^-64-scale collision) at a
//! fixed 16 bytes a key whatever the id lengths.
//!
//! The time horizon is per input stream (partition): a key leaves the window when its own
//! stream's time has moved `window_ms` past it, so a partition far ahead (a backlog elsewhere, a
//! replay) never ages the keys of a lagging one. The count bound is shared: past it, the key that
//! arrived first, on whichever stream, goes.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::chunked::ChunkedDeque;
use crate::config::DedupConfig;
use crate::event::Event;
use crate::rng::hash128;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "WindowRecord")]
pub struct DedupWindow {
    config: DedupConfig,
    /// An index over every stream's keys, rebuilt on load rather than stored.
    #[serde(skip)]
    seen: FxHashSet<u128>,
    streams: BTreeMap<u64, StreamKeys>,
    /// Keys ever added: each key's arrival number orders evictions across streams.
    arrivals: u64,
    /// Keys over all streams, counted again on load rather than stored.
    #[serde(skip)]
    len: usize,
}

/// One stream's keys in arrival order, with their event time and arrival number; chunked, so
/// a checkpoint's cut shares them rather than copying up to `max_entries` keys.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StreamKeys {
    order: ChunkedDeque<(u128, i64, u64)>,
    latest_ts_ms: i64,
}

impl StreamKeys {
    fn empty() -> StreamKeys {
        StreamKeys {
            order: ChunkedDeque::default(),
            latest_ts_ms: i64::MIN,
        }
    }

    fn push(&mut self, key: u128, ts_ms: i64, arrival: u64) {
        self.latest_ts_ms = self.latest_ts_ms.max(ts_ms);
        self.order.push_back((key, ts_ms, arrival));
    }
}

/// A window as stored: everything but the derived index.
#[derive(Deserialize)]
struct WindowRecord {
    config: DedupConfig,
    streams: BTreeMap<u64, StreamKeys>,
    arrivals: u64,
}

impl From<WindowRecord> for DedupWindow {
    fn from(r: WindowRecord) -> DedupWindow {
        let keys = r.streams.values().flat_map(|s| s.order.iter());
        let seen: FxHashSet<u128> = keys.map(|(key, _, _)| *key).collect();
        DedupWindow {
            len: r.streams.values().map(|s| s.order.len()).sum(),
            seen,
            config: r.config,
            streams: r.streams,
            arrivals: r.arrivals,
        }
    }
}

/// A key as a partition carries it to its next owner, with the event time it expires by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CarriedKey {
    pub key: u128,
    pub ts_ms: i64,
}

/// A stream's keys that arrived since a mark (see `DedupWindow::keys_after`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeysCut {
    pub keys: Vec<CarriedKey>,
    /// The arrival number of the stream's latest key.
    pub through: u64,
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
    /// Takes the running settings in place of those the window was stored with; a smaller
    /// bound applies from the next key on.
    pub fn follow(&mut self, config: &DedupConfig) {
        self.config = config.clone();
    }

    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// A copy of what is stored, without the lookup index (rebuilt on load): what a checkpoint's
    /// cut takes. The keys are shared in chunks, so it costs microseconds at any size.
    pub fn stored_copy(&self) -> DedupWindow {
        DedupWindow {
            config: self.config.clone(),
            seen: FxHashSet::default(),
            streams: self.streams.clone(),
            arrivals: self.arrivals,
            len: 0,
        }
    }

    pub fn new(config: DedupConfig) -> DedupWindow {
        DedupWindow {
            config,
            seen: FxHashSet::default(),
            streams: BTreeMap::new(),
            arrivals: 0,
            len: 0,
        }
    }

    /// Records the event, which arrived on `stream`; returns false if its key is already in the
    /// window (a duplicate, whichever stream the first copy came on).
    pub fn first_sighting(&mut self, stream: u64, event: &Event) -> bool {
        if !self.remember(stream, dedup_key(event), event.ts_ms) {
            return false;
        }
        self.keep_bounds(stream);
        true
    }

    /// Adds `key` as `stream`'s latest arrival; false if a stream already holds it.
    fn remember(&mut self, stream: u64, key: u128, ts_ms: i64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.arrivals += 1;
        self.len += 1;
        let keys = self.streams.entry(stream).or_insert_with(StreamKeys::empty);
        keys.push(key, ts_ms, self.arrivals);
        true
    }

    /// Applies both bounds after `stream` took keys.
    fn keep_bounds(&mut self, stream: u64) {
        self.expire(stream);
        while self.len > self.config.max_entries {
            self.evict_first_arrival();
        }
    }

    /// Forgets the stream's keys its own time has moved `window_ms` past.
    fn expire(&mut self, stream: u64) {
        let Some(keys) = self.streams.get_mut(&stream) else {
            return;
        };
        let horizon = keys.latest_ts_ms.saturating_sub(self.config.window_ms);
        while let Some(&(key, ts, _)) = keys.order.front() {
            if ts >= horizon {
                break;
            }
            keys.order.pop_front();
            self.seen.remove(&key);
            self.len -= 1;
        }
    }

    /// Forgets the key that arrived first (streams are few: a scan of their fronts is cheap).
    fn evict_first_arrival(&mut self) {
        let oldest = self
            .streams
            .iter()
            .filter_map(|(&stream, keys)| keys.order.front().map(|f| (f.2, stream)))
            .min();
        let Some((_, stream)) = oldest else {
            return;
        };
        let keys = self.streams.get_mut(&stream).expect("found above");
        if let Some((key, _, _)) = keys.order.pop_front() {
            self.seen.remove(&key);
            self.len -= 1;
        }
    }

    /// `stream`'s keys that arrived after arrival number `after` (0: all), the latest `max` of
    /// them, oldest first, each with its event time; and the arrival number they run through,
    /// the `after` of the next cut. What a partition carries to its next owner, a cut at a time.
    pub fn keys_after(&self, stream: u64, after: u64, max: usize) -> KeysCut {
        let Some(keys) = self.streams.get(&stream) else {
            return KeysCut {
                keys: Vec::new(),
                through: after,
            };
        };
        let through = keys.order.back().map_or(after, |&(_, _, arrival)| arrival);
        // Arrival numbers grow along the queue: the new keys are its tail.
        let latest = keys.order.iter_last(max);
        let new = latest.skip_while(|&&(_, _, arrival)| arrival <= after);
        let mut carried = Vec::with_capacity(max.min(keys.order.len()));
        carried.extend(new.map(|&(key, ts_ms, _)| CarriedKey { key, ts_ms }));
        KeysCut {
            keys: carried,
            through: through.max(after),
        }
    }

    /// Takes `keys` (oldest first, as `keys_after` gives them) as `stream`'s keys in place of
    /// those it had: a partition restored from its previous owner then drops the duplicates
    /// that owner would have. They count as new arrivals under both bounds; a key another
    /// stream already holds stays there.
    pub fn adopt(&mut self, stream: u64, keys: &[CarriedKey]) {
        if let Some(replaced) = self.streams.remove(&stream) {
            for (key, _, _) in replaced.order.iter() {
                self.seen.remove(key);
            }
            self.len -= replaced.order.len();
        }
        self.streams.insert(stream, StreamKeys::empty());
        for &CarriedKey { key, ts_ms } in keys {
            self.remember(stream, key, ts_ms);
        }
        self.keep_bounds(stream);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        assert!(dedup.first_sighting(0, &event));
        assert!(!dedup.first_sighting(0, &event));
        assert!(dedup.first_sighting(0, &Event::new(EventType::Purchase, "u", "i", 5)));
    }

    #[test]
    fn event_id_wins_over_fields() {
        let mut dedup = window(10, 1000);
        let mut a = Event::new(EventType::View, "u", "i", 5);
        a.event_id = Some("e1".into());
        let mut b = Event::new(EventType::View, "u", "other", 6);
        b.event_id = Some("e1".into());
        assert!(dedup.first_sighting(0, &a));
        assert!(!dedup.first_sighting(0, &b));
    }

    #[test]
    fn window_forgets_by_time_and_by_count() {
        let mut dedup = window(3, 100);
        let old = Event::new(EventType::View, "u", "old", 0);
        assert!(dedup.first_sighting(0, &old));
        assert!(dedup.first_sighting(0, &Event::new(EventType::View, "u", "x", 150)));
        assert!(dedup.first_sighting(0, &old), "expired by event time");
        let mut count_limited = window(2, 1_000_000);
        for item in ["a", "b", "c"] {
            assert!(count_limited.first_sighting(0, &Event::new(EventType::View, "u", item, 1)));
        }
        assert_eq!(count_limited.len(), 2);
        assert!(count_limited.first_sighting(0, &Event::new(EventType::View, "u", "a", 1)));
    }

    #[test]
    fn a_stream_far_ahead_does_not_age_another_streams_keys() {
        let mut dedup = window(100, 1_000);
        let cart = Event::new(EventType::AddToCart, "u", "i", 10_000);
        assert!(dedup.first_sighting(1, &cart));
        let hours_ahead = Event::new(EventType::View, "v", "j", 10_000 + 7_200_000);
        assert!(dedup.first_sighting(0, &hours_ahead));
        assert!(
            !dedup.first_sighting(1, &cart),
            "stream 1's time has not moved"
        );
        assert!(dedup.first_sighting(1, &Event::new(EventType::View, "u", "k", 11_500)));
        assert!(
            dedup.first_sighting(1, &cart),
            "now stream 1's own time passed it"
        );
    }

    #[test]
    fn the_count_bound_evicts_the_first_arrival_across_streams() {
        let mut dedup = window(2, 1_000_000);
        let events: Vec<Event> = ["a", "b", "c"]
            .iter()
            .map(|item| Event::new(EventType::View, "u", item, 1))
            .collect();
        assert!(dedup.first_sighting(5, &events[0]));
        assert!(dedup.first_sighting(3, &events[1]));
        assert!(dedup.first_sighting(4, &events[2]));
        assert_eq!(dedup.len(), 2);
        assert!(!dedup.first_sighting(3, &events[1]));
        assert!(
            dedup.first_sighting(5, &events[0]),
            "the first arrival went"
        );
    }

    #[test]
    fn a_stored_window_catches_the_same_duplicates() {
        let mut dedup = window(10, 1000);
        let event = Event::new(EventType::View, "u", "i", 5);
        dedup.first_sighting(2, &event);
        let bytes = bincode::serde::encode_to_vec(&dedup, bincode::config::standard()).unwrap();
        let (mut back, _): (DedupWindow, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert!(!back.first_sighting(2, &event));
        assert_eq!(back.len(), 1);
    }

    fn viewed(item: &str, ts: i64) -> Event {
        Event::new(EventType::View, "u", item, ts)
    }

    /// A partition's next owner, given the previous owner's latest keys, drops the duplicates
    /// the previous owner would have, and only those.
    #[test]
    fn adopted_keys_catch_the_duplicates_of_the_previous_owner() {
        let mut previous = window(100, 1_000);
        for (item, ts) in [("a", 10), ("b", 20), ("c", 30)] {
            previous.first_sighting(7, &viewed(item, ts));
        }
        previous.first_sighting(8, &viewed("other stream", 30));
        let carried = previous.keys_after(7, 0, 2).keys;
        assert_eq!(carried.len(), 2, "at most the bound, the latest");
        assert_eq!(carried[1].ts_ms, 30, "oldest first");

        let mut next = window(100, 1_000);
        next.first_sighting(7, &viewed("stale local key", 5));
        next.adopt(7, &carried);
        assert_eq!(next.len(), 2, "the stream's keys were replaced");
        assert!(!next.first_sighting(7, &viewed("c", 30)));
        assert!(!next.first_sighting(7, &viewed("b", 20)));
        assert!(next.first_sighting(7, &viewed("a", 10)), "beyond the bound");
        assert!(next.first_sighting(7, &viewed("stale local key", 5)));
        assert_eq!(
            next.keys_after(9, 3, 10),
            KeysCut {
                keys: Vec::new(),
                through: 3
            },
            "a stream never seen"
        );
    }

    /// Each cut carries what arrived since the one before, so a quiet partition's cuts stay
    /// small however full its window is.
    #[test]
    fn a_cut_after_a_mark_holds_only_the_keys_since() {
        let mut dedup = window(100, 1_000);
        for (item, ts) in [("a", 10), ("b", 20)] {
            dedup.first_sighting(7, &viewed(item, ts));
        }
        let first = dedup.keys_after(7, 0, 10);
        assert_eq!(first.keys.len(), 2);
        dedup.first_sighting(8, &viewed("other stream", 25));
        assert_eq!(
            dedup.keys_after(7, first.through, 10).keys,
            [],
            "nothing new"
        );
        for (item, ts) in [("c", 30), ("d", 40), ("e", 50)] {
            dedup.first_sighting(7, &viewed(item, ts));
        }
        let second = dedup.keys_after(7, first.through, 2);
        let times: Vec<i64> = second.keys.iter().map(|k| k.ts_ms).collect();
        assert_eq!(times, [40, 50], "the latest of the new ones, oldest first");
        assert_eq!(dedup.keys_after(7, second.through, 10).keys, []);
    }

    #[test]
    fn adopted_keys_keep_both_bounds() {
        let carried: Vec<CarriedKey> = (0..10)
            .map(|i| CarriedKey {
                key: i,
                ts_ms: i as i64 * 100,
            })
            .collect();
        let mut by_count = window(4, 1_000_000);
        by_count.adopt(1, &carried);
        assert_eq!(by_count.len(), 4);
        assert_eq!(by_count.keys_after(1, 0, 10).keys, carried[6..]);
        let mut by_time = window(100, 250);
        by_time.adopt(1, &carried);
        assert_eq!(
            by_time.keys_after(1, 0, 10).keys,
            carried[7..],
            "900 - 250 = 650"
        );
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
            let first: Vec<bool> = events.iter().map(|e| dedup.first_sighting(0, e)).collect();
            prop_assert!(dedup.len() <= 16);
            // Applying the same event twice in a row: the second is always a duplicate.
            for event in &events {
                dedup.first_sighting(0, event);
                prop_assert!(!dedup.first_sighting(0, event));
            }
            prop_assert!(first.iter().any(|&f| f));
        }
    }
}
