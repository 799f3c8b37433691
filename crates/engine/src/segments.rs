//! Trending items per shopper segment (users sharing the configured attribute values, e.g.
//! region and age band): the cold-start signal for a user whose history is too short to say
//! much but whose profile says who they are.
//!
//! Each segment keeps a bounded weighted Space-Saving summary with forward-decayed weights: at
//! most `4 × segment_trending_size` counters, so memory does not grow with the catalog.

use serde::{Deserialize, Serialize};

use crate::chunked::ChunkedVec;
use crate::config::ContentConfig;
use crate::intern::Interner;

const MAX_EXPONENT: f64 = 64.0;

/// One segment's heavy hitters: (item, decayed weight).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Summary {
    counters: Vec<(u32, f64)>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Segments {
    names: Interner,
    summaries: ChunkedVec<Summary>,
    landmark_ms: Option<i64>,
    half_life_ms: i64,
}

/// A user's segment name from their attributes: `key=value` for each configured attribute,
/// joined by `|`; `None` when the user has none of them.
pub fn segment_name(attributes: &[(Box<str>, Box<str>)], config: &ContentConfig) -> Option<String> {
    let parts: Vec<String> = config
        .segment_attributes
        .iter()
        .filter_map(|key| {
            let (_, value) = attributes.iter().find(|(k, _)| **k == **key)?;
            Some(format!("{key}={value}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("|"))
}

impl Segments {
    pub fn new(half_life_ms: i64) -> Segments {
        Segments {
            names: Interner::default(),
            summaries: ChunkedVec::new(),
            landmark_ms: None,
            half_life_ms,
        }
    }

    /// Takes the running half-life in place of the stored one, for events from now on.
    pub fn follow_half_life(&mut self, half_life_ms: i64) {
        self.half_life_ms = half_life_ms;
    }

    /// What a checkpoint stores, shared in chunks (see `Interner::stored_copy`).
    pub fn stored_copy(&self) -> Segments {
        Segments {
            names: self.names.stored_copy(),
            summaries: self.summaries.clone(),
            landmark_ms: self.landmark_ms,
            half_life_ms: self.half_life_ms,
        }
    }

    /// The segment's index, made on first sight while fewer than `max_segments` exist.
    pub fn intern(&mut self, name: &str, max_segments: usize) -> Option<u32> {
        if let Some(id) = self.names.get(name) {
            return Some(id);
        }
        if self.names.len() >= max_segments {
            return None;
        }
        self.summaries.push(Summary::default());
        Some(self.names.intern(name))
    }

    /// The segment's index, if it exists (a reader never makes one).
    pub fn find(&self, name: &str) -> Option<u32> {
        self.names.get(name)
    }

    pub fn name(&self, segment: u32) -> &str {
        self.names.name(segment)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn observe(&mut self, segment: u32, item: u32, weight: f32, ts_ms: i64, size: usize) {
        let landmark = *self.landmark_ms.get_or_insert(ts_ms);
        let mut exponent = (ts_ms - landmark) as f64 / self.half_life_ms as f64;
        if exponent > MAX_EXPONENT {
            self.rebase(ts_ms);
            exponent = 0.0;
        }
        let added = weight as f64 * exponent.exp2();
        let counters = &mut self.summaries[segment as usize].counters;
        if let Some(counter) = counters.iter_mut().find(|c| c.0 == item) {
            counter.1 += added;
        } else if counters.len() < 4 * size {
            counters.push((item, added));
        } else {
            // Space-Saving: the newcomer takes the weakest counter's place and count.
            let weakest = counters
                .iter_mut()
                .min_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .expect("size > 0");
            *weakest = (item, weakest.1 + added);
        }
    }

    fn rebase(&mut self, new_landmark_ms: i64) {
        let old = self.landmark_ms.expect("rebase after the first event");
        let factor = (-((new_landmark_ms - old) as f64) / self.half_life_ms as f64).exp2();
        for summary in self.summaries.iter_mut() {
            summary.counters.iter_mut().for_each(|c| c.1 *= factor);
        }
        self.landmark_ms = Some(new_landmark_ms);
    }

    /// The segment's `size` strongest items, scored relative to its best, in no order.
    pub fn trending(&self, segment: u32, size: usize) -> Vec<(u32, f32)> {
        let mut counters = self.summaries[segment as usize].counters.clone();
        if counters.len() > size {
            counters
                .select_nth_unstable_by(size - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            counters.truncate(size);
        }
        let best = counters
            .iter()
            .map(|c| c.1)
            .fold(f64::MIN_POSITIVE, f64::max);
        counters
            .into_iter()
            .map(|(item, w)| (item, (w / best) as f32))
            .collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.names.heap_bytes()
            + self
                .summaries
                .iter()
                .map(|s| s.counters.capacity() * 16 + 24)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_configured_attributes_in_config_order() {
        let config = ContentConfig::default();
        let attributes: Vec<(Box<str>, Box<str>)> = vec![
            ("age_band".into(), "25-34".into()),
            ("gender".into(), "f".into()),
            ("region".into(), "EU".into()),
        ];
        assert_eq!(
            segment_name(&attributes, &config).as_deref(),
            Some("region=EU|age_band=25-34")
        );
        assert_eq!(segment_name(&attributes[1..2], &config), None);
    }

    #[test]
    fn each_segment_trends_on_its_own_and_segments_are_capped() {
        let mut segments = Segments::new(3_600_000);
        let eu = segments.intern("region=EU", 2).unwrap();
        let us = segments.intern("region=US", 2).unwrap();
        assert_eq!(segments.intern("region=APAC", 2), None, "cap");
        for n in 0..40 {
            segments.observe(eu, 1 + n % 2, 1.0, 1_000 + n as i64, 2);
            segments.observe(us, 7, 1.0, 1_000 + n as i64, 2);
        }
        for n in 0..30 {
            segments.observe(eu, 100 + n, 1.0, 2_000, 2); // one-offs churn the weakest slots
        }
        let mut eu_top: Vec<u32> = segments.trending(eu, 2).iter().map(|t| t.0).collect();
        eu_top.sort_unstable();
        assert_eq!(eu_top, [1, 2]);
        assert_eq!(segments.trending(us, 2), [(7, 1.0)]);
    }
}
