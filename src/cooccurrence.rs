//! Item co-occurrence and cross-occurrence (view → purchase), bounded per item.
//!
//! Each item keeps at most `2 × counters_per_item` pair counters (the weakest are pruned, as in
//! lossy counting) and a top-K neighbour list maintained on every pair update, so memory grows with
//! the catalog, not its square. Neighbour lists store the pair count; the similarity is recomputed
//! from current marginals when read, so scores do not go stale as items get popular.

use rustc_hash::FxHashMap;

use crate::config::{CoocConfig, Similarity};
use crate::decay::decay_factor;
use crate::profile::RecentItem;
use crate::similarity::{cosine, llr};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    pub item: u32,
    pub count: f32,
    /// Similarity when last updated; only used to decide list membership.
    pub rank_score: f32,
}

#[derive(Clone, Debug, Default)]
struct Row {
    counts: FxHashMap<u32, f32>,
    top: Vec<Neighbor>,
}

/// A sparse table of pair counts `a → b` with bounded rows.
#[derive(Clone, Debug, Default)]
struct PairTable {
    rows: Vec<Row>,
}

impl PairTable {
    fn row_mut(&mut self, item: u32) -> &mut Row {
        let idx = item as usize;
        if idx >= self.rows.len() {
            self.rows.resize_with(idx + 1, Row::default);
        }
        &mut self.rows[idx]
    }

    fn neighbors(&self, item: u32) -> &[Neighbor] {
        self.rows.get(item as usize).map_or(&[], |r| &r.top)
    }

    /// Adds `weight` to the pair and returns its new count.
    fn add(&mut self, a: u32, b: u32, weight: f32, counters: usize) -> f32 {
        let row = self.row_mut(a);
        let count = {
            let slot = row.counts.entry(b).or_insert(0.0);
            *slot += weight;
            *slot
        };
        if row.counts.len() > 2 * counters {
            prune(row, counters);
        }
        count
    }

    fn offer(&mut self, a: u32, candidate: Neighbor, capacity: usize) {
        let top = &mut self.row_mut(a).top;
        if let Some(existing) = top.iter_mut().find(|n| n.item == candidate.item) {
            *existing = candidate;
            return;
        }
        if top.len() < capacity {
            top.push(candidate);
            return;
        }
        let (weakest, floor) = top
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.rank_score))
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .expect("capacity > 0");
        if candidate.rank_score > floor {
            top[weakest] = candidate;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self
                .rows
                .iter()
                .map(|r| r.counts.capacity() * 9 + r.top.capacity() * std::mem::size_of::<Neighbor>())
                .sum::<usize>()
    }
}

/// Keeps the `keep` heaviest counters plus every current neighbour.
fn prune(row: &mut Row, keep: usize) {
    let mut weights: Vec<f32> = row.counts.values().copied().collect();
    let cut = weights.len() - keep;
    let (_, threshold, _) = weights.select_nth_unstable_by(cut, |a, b| a.total_cmp(b));
    let threshold = *threshold;
    let top = &row.top;
    row.counts
        .retain(|item, count| *count >= threshold || top.iter().any(|n| n.item == *item));
}

#[derive(Clone, Debug)]
pub struct Cooccurrence {
    config: CoocConfig,
    cooc: PairTable,
    cross: PairTable,
    /// Weighted number of times each item entered a user's recent list.
    entries: Vec<f32>,
    /// Number of first purchases of each item (the cross-occurrence column marginal).
    purchases: Vec<f32>,
    total_entries: f32,
    total_purchases: f32,
}

/// What the engine tells co-occurrence about one event.
pub struct PairEvent<'a> {
    pub item: u32,
    pub weight: f32,
    pub ts_ms: i64,
    /// The user's recent items before this event, most recent last.
    pub history: &'a [RecentItem],
    /// The item was not in the user's recent list yet.
    pub new_to_user: bool,
    /// This is the user's first purchase of the item.
    pub first_purchase: bool,
}

impl Cooccurrence {
    pub fn new(config: CoocConfig) -> Cooccurrence {
        Cooccurrence {
            config,
            cooc: PairTable::default(),
            cross: PairTable::default(),
            entries: Vec::new(),
            purchases: Vec::new(),
            total_entries: 0.0,
            total_purchases: 0.0,
        }
    }

    fn grow(&mut self, item: u32) {
        let needed = item as usize + 1;
        if self.entries.len() < needed {
            self.entries.resize(needed, 0.0);
            self.purchases.resize(needed, 0.0);
        }
    }

    pub fn observe(&mut self, event: PairEvent<'_>) {
        self.grow(event.item);
        let window = self.config.window_items;
        let start = event.history.len().saturating_sub(window);
        let partners = &event.history[start..];
        if event.new_to_user {
            self.entries[event.item as usize] += event.weight;
            self.total_entries += event.weight;
            for partner in partners.iter().filter(|p| p.item != event.item) {
                let age = event.ts_ms - partner.last_ts_ms;
                let w = event.weight * decay_factor(age, self.config.pair_half_life_ms);
                self.add_cooc(event.item, partner.item, w);
                self.add_cooc(partner.item, event.item, w);
            }
        }
        if event.first_purchase {
            self.purchases[event.item as usize] += 1.0;
            self.total_purchases += 1.0;
            for partner in partners.iter().filter(|p| p.item != event.item) {
                let age = event.ts_ms - partner.last_ts_ms;
                let w = decay_factor(age, self.config.pair_half_life_ms);
                self.add_cross(partner.item, event.item, w);
            }
        }
    }

    fn add_cooc(&mut self, a: u32, b: u32, weight: f32) {
        let count = self.cooc.add(a, b, weight, self.config.counters_per_item);
        let rank_score = self.cooc_score(a, b, count);
        let candidate = Neighbor {
            item: b,
            count,
            rank_score,
        };
        self.cooc.offer(a, candidate, self.config.neighbors_per_item);
    }

    fn add_cross(&mut self, viewed: u32, bought: u32, weight: f32) {
        let count = self.cross.add(viewed, bought, weight, self.config.counters_per_item);
        let rank_score = self.cross_score(viewed, bought, count);
        let candidate = Neighbor {
            item: bought,
            count,
            rank_score,
        };
        self.cross.offer(viewed, candidate, self.config.neighbors_per_item);
    }

    fn marginal(values: &[f32], item: u32) -> f32 {
        values.get(item as usize).copied().unwrap_or(0.0)
    }

    /// Similarity of `a → b` given their pair count, with current marginals.
    pub fn cooc_score(&self, a: u32, b: u32, count: f32) -> f32 {
        let na = Self::marginal(&self.entries, a);
        let nb = Self::marginal(&self.entries, b);
        match self.config.similarity {
            Similarity::Cosine => cosine(count, na, nb),
            Similarity::Llr => llr(count, na, nb, self.total_entries),
        }
    }

    /// Similarity of "viewers of `viewed` bought `bought`".
    pub fn cross_score(&self, viewed: u32, bought: u32, count: f32) -> f32 {
        let na = Self::marginal(&self.entries, viewed);
        let nb = Self::marginal(&self.purchases, bought);
        match self.config.similarity {
            Similarity::Cosine => cosine(count, na, nb),
            Similarity::Llr => llr(count, na, nb, self.total_entries),
        }
    }

    /// Neighbours of `item` with fresh similarity scores.
    pub fn similar(&self, item: u32) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.cooc
            .neighbors(item)
            .iter()
            .map(move |n| (n.item, self.cooc_score(item, n.item, n.count)))
    }

    /// Items that viewers of `item` went on to buy, with fresh scores.
    pub fn bought_after(&self, item: u32) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.cross
            .neighbors(item)
            .iter()
            .map(move |n| (n.item, self.cross_score(item, n.item, n.count)))
    }

    /// The stored pair count, for tests and inspection.
    pub fn pair_count(&self, a: u32, b: u32) -> f32 {
        self.cooc
            .rows
            .get(a as usize)
            .and_then(|r| r.counts.get(&b))
            .copied()
            .unwrap_or(0.0)
    }

    pub fn counters(&self, item: u32) -> usize {
        self.cooc.rows.get(item as usize).map_or(0, |r| r.counts.len())
    }

    pub fn heap_bytes(&self) -> usize {
        self.cooc.heap_bytes() + self.cross.heap_bytes() + self.entries.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decay::Decayed;
    use crate::event::EventType;

    fn recent(item: u32, ts: i64) -> RecentItem {
        RecentItem {
            item,
            strongest: EventType::View,
            events: 1,
            last_ts_ms: ts,
            interest: Decayed::default(),
        }
    }

    fn config(neighbors: usize, counters: usize) -> CoocConfig {
        CoocConfig {
            window_items: 2,
            pair_half_life_ms: 1000,
            neighbors_per_item: neighbors,
            counters_per_item: counters,
            similarity: Similarity::Cosine,
        }
    }

    fn view(c: &mut Cooccurrence, item: u32, ts: i64, history: &[RecentItem]) {
        c.observe(PairEvent {
            item,
            weight: 1.0,
            ts_ms: ts,
            history,
            new_to_user: true,
            first_purchase: false,
        });
    }

    #[test]
    fn pairs_only_with_the_last_m_items_and_decay_with_time() {
        let mut c = Cooccurrence::new(config(5, 10));
        let history = [recent(1, 0), recent(2, 0), recent(3, 1000)];
        view(&mut c, 4, 1000, &history);
        assert_eq!(c.pair_count(4, 1), 0.0, "outside the window of 2");
        assert!((c.pair_count(4, 2) - 0.5).abs() < 1e-6, "one half-life old");
        assert!((c.pair_count(3, 4) - 1.0).abs() < 1e-6);
        let similar: Vec<u32> = c.similar(4).map(|(i, _)| i).collect();
        assert_eq!(similar.len(), 2);
        assert!(similar.contains(&2) && similar.contains(&3));
    }

    #[test]
    fn cross_occurrence_is_kept_apart_and_directed() {
        let mut c = Cooccurrence::new(config(5, 10));
        let history = [recent(1, 0)];
        c.observe(PairEvent {
            item: 9,
            weight: 4.0,
            ts_ms: 0,
            history: &history,
            new_to_user: false,
            first_purchase: true,
        });
        assert_eq!(c.bought_after(1).map(|(i, _)| i).collect::<Vec<_>>(), vec![9]);
        assert_eq!(c.bought_after(9).count(), 0);
        assert_eq!(c.similar(1).count(), 0, "no plain co-occurrence without a new entry");
    }

    #[test]
    fn neighbour_lists_and_counters_stay_bounded() {
        let mut c = Cooccurrence::new(config(3, 4));
        view(&mut c, 0, 0, &[]);
        for other in 1..200u32 {
            // Item 0 co-occurs with many items; item 1..5 much more often.
            let weight_rounds = if other < 5 { 5 } else { 1 };
            for _ in 0..weight_rounds {
                view(&mut c, other, 0, &[recent(0, 0)]);
            }
        }
        assert!(c.counters(0) <= 8);
        let neighbors: Vec<u32> = c.similar(0).map(|(i, _)| i).collect();
        assert_eq!(neighbors.len(), 3);
        assert!(neighbors.iter().all(|&n| n < 5), "strong pairs survive: {neighbors:?}");
    }
}
