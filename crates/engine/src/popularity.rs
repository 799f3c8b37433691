//! Popularity and trending with exponential time decay.
//!
//! Uses forward decay: an event at time t adds `w · 2^((t − landmark)/half_life)`, so stored
//! scores never need decaying and stay comparable across items. The landmark moves forward
//! (rescaling every score) before the exponent could overflow.

use crate::chunked::ChunkedVec;
use crate::config::PopularityConfig;

const MAX_EXPONENT: f64 = 64.0;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Popularity {
    config: PopularityConfig,
    landmark_ms: Option<i64>,
    scores: ChunkedVec<f64>,
    /// Unordered list of the highest-scoring items, at most `trending_size`.
    top: Vec<u32>,
    in_top: ChunkedVec<bool>,
    /// A lower bound of the weakest score in `top`: scores only grow, so a stale floor is safe
    /// and most events (items far from trending) are turned away without scanning the list.
    floor: f64,
}

impl Popularity {
    pub fn new(config: PopularityConfig) -> Popularity {
        Popularity {
            config,
            landmark_ms: None,
            scores: ChunkedVec::new(),
            top: Vec::new(),
            in_top: ChunkedVec::new(),
            floor: 0.0,
        }
    }

    /// Takes the running settings in place of those the state was stored with: a shorter
    /// trending list keeps its best items; scores made stay as they were.
    pub fn follow(&mut self, config: &PopularityConfig) {
        if *config == self.config {
            return;
        }
        self.config = config.clone();
        if self.top.len() > config.trending_size {
            let keep: Vec<u32> = (self.trending(config.trending_size).into_iter())
                .map(|(item, _)| item)
                .collect();
            for &dropped in self.top.iter().filter(|item| !keep.contains(item)) {
                self.in_top[dropped as usize] = false;
            }
            self.top = keep;
        }
        self.floor = 0.0; // a lower bound under any list
    }

    pub fn observe(&mut self, item: u32, weight: f32, ts_ms: i64) {
        let scale = self.scale_at(item, ts_ms);
        self.scores[item as usize] += weight as f64 * scale;
        self.offer(item);
    }

    /// The factor a value at `ts_ms` takes relative to the landmark (moving the landmark
    /// first if the factor would overflow), with the item's slots grown.
    fn scale_at(&mut self, item: u32, ts_ms: i64) -> f64 {
        let idx = item as usize;
        self.scores.grow(idx + 1, 0.0);
        self.in_top.grow(idx + 1, false);
        let landmark = *self.landmark_ms.get_or_insert(ts_ms);
        let exponent = (ts_ms - landmark) as f64 / self.config.half_life_ms as f64;
        if exponent > MAX_EXPONENT {
            self.rebase(ts_ms);
            return 1.0;
        }
        exponent.exp2()
    }

    fn rebase(&mut self, new_landmark_ms: i64) {
        let old = self.landmark_ms.expect("rebase after the first event");
        let factor = (-((new_landmark_ms - old) as f64) / self.config.half_life_ms as f64).exp2();
        self.scores.iter_mut().for_each(|s| *s *= factor);
        self.floor *= factor;
        self.landmark_ms = Some(new_landmark_ms);
    }

    fn offer(&mut self, item: u32) {
        if self.in_top[item as usize] {
            return;
        }
        if self.top.len() < self.config.trending_size {
            self.top.push(item);
            self.in_top[item as usize] = true;
            return;
        }
        if self.scores[item as usize] <= self.floor {
            return;
        }
        let (weakest, floor) = self
            .top
            .iter()
            .enumerate()
            .map(|(i, &t)| (i, self.scores[t as usize]))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .expect("trending_size > 0");
        self.floor = floor;
        if self.scores[item as usize] > floor {
            self.in_top[self.top[weakest] as usize] = false;
            self.top[weakest] = item;
            self.in_top[item as usize] = true;
        }
    }

    /// The item's score with the landmark it is relative to (`None` before any event).
    pub fn published(&self, item: u32) -> (f64, Option<i64>) {
        (self.score(item), self.landmark_ms)
    }

    /// Sets an item's score to one published by its owner relative to `landmark_ms`.
    pub fn install(&mut self, item: u32, score: f64, landmark_ms: i64) {
        let scale = self.scale_at(item, landmark_ms);
        self.scores[item as usize] = score * scale;
        self.offer(item);
    }

    /// Changes whenever scores are rescaled: a floor remembered under another epoch is void.
    pub fn epoch(&self) -> i64 {
        self.landmark_ms.unwrap_or(i64::MIN)
    }

    /// The item's forward-decayed score (comparable across items at any time; 0 if unseen).
    pub fn score(&self, item: u32) -> f64 {
        self.scores.get(item as usize).copied().unwrap_or(0.0)
    }

    /// The trending items, best first (ties by item index), with scores relative to the best.
    pub fn trending(&self, limit: usize) -> Vec<(u32, f32)> {
        let mut ranked: Vec<(u32, f64)> = self
            .top
            .iter()
            .map(|&i| (i, self.scores[i as usize]))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(limit);
        let best = ranked.first().map_or(1.0, |r| r.1.max(f64::MIN_POSITIVE));
        ranked
            .into_iter()
            .map(|(i, s)| (i, (s / best) as f32))
            .collect()
    }

    /// The trending items in no particular order, scored relative to the best (no sort: this is
    /// on every request's path).
    pub fn trending_unordered(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        let best = self
            .top
            .iter()
            .map(|&i| self.scores[i as usize])
            .fold(f64::MIN_POSITIVE, f64::max);
        self.top
            .iter()
            .map(move |&i| (i, (self.scores[i as usize] / best) as f32))
    }

    pub fn heap_bytes(&self) -> usize {
        self.scores.heap_bytes() + self.in_top.heap_bytes() + self.top.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn popularity(size: usize) -> Popularity {
        Popularity::new(PopularityConfig {
            half_life_ms: 1000,
            trending_size: size,
        })
    }

    #[test]
    fn recent_interest_beats_old_interest() {
        let mut p = popularity(10);
        for _ in 0..3 {
            p.observe(1, 1.0, 0);
        }
        p.observe(2, 1.0, 2000);
        p.observe(2, 1.0, 2000);
        let trending = p.trending(10);
        assert_eq!(
            trending[0].0, 2,
            "2 events now beat 3 events two half-lives ago"
        );
        assert!((trending[1].1 - 0.375).abs() < 1e-6);
    }

    #[test]
    fn the_list_is_bounded_and_keeps_the_best() {
        let mut p = popularity(2);
        for (item, times) in [(1, 1), (2, 5), (3, 3), (4, 1)] {
            for _ in 0..times {
                p.observe(item, 1.0, 0);
            }
        }
        let items: Vec<u32> = p.trending(5).iter().map(|t| t.0).collect();
        assert_eq!(items, vec![2, 3]);
    }

    #[test]
    fn rebasing_keeps_the_order_over_long_spans() {
        let mut p = popularity(5);
        let year = 365 * 24 * 3600 * 1000i64;
        p.observe(1, 1.0, 0);
        for step in 1..=20 {
            p.observe(2, 1.0, step * year / 10);
            p.observe(3, 2.0, step * year / 10);
        }
        let trending = p.trending(5);
        assert_eq!(trending[0].0, 3);
        assert!(trending.iter().all(|t| t.1.is_finite()));
    }
}
