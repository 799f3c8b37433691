//! Item co-occurrence and cross-occurrence (view → purchase), bounded per item.
//!
//! Pair counts live in bounded [`PairTable`]s, so memory grows with the catalog, not its square.
//! Neighbour lists store the pair count; the similarity is recomputed from current marginals when
//! read, so scores do not go stale as items get popular.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::changed::ChangedItems;
use crate::chunked::ChunkedVec;
use crate::config::{CoocConfig, Similarity};
use crate::decay::decay_factor;
use crate::neighbors::{Bounds, Neighbor, PairTable, Row, SharedRow};
use crate::profile::RecentItem;
use crate::similarity::llr;

/// Per-item occurrence counts with their powers cached, since scoring reads them far more
/// often than events change them. Stored as three sequences (counts, then each power).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "MarginalsRecord", into = "MarginalsRecord")]
struct Marginals {
    /// Each item's count and `pow_from`, read once per list (for the item it starts from).
    items: ChunkedVec<FromSide>,
    /// Each item's `pow_to`, apart: a cosine score reads only this of its partner, once per
    /// neighbour, and a dense column of it stays in cache three times as well.
    pow_to: ChunkedVec<f32>,
    total: f32,
}

#[derive(Clone, Copy, Debug, Default)]
struct FromSide {
    count: f32,
    pow_from: f32,
}

#[derive(Clone, Copy, Debug, Default)]
struct Marginal {
    count: f32,
    /// `count^alpha`, the denominator share of the item the pair starts from.
    pow_from: f32,
    /// `count^(1 - alpha)`, the share of the item the pair leads to.
    pow_to: f32,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MarginalsRecord {
    counts: Vec<f32>,
    pow_from: Vec<f32>,
    pow_to: Vec<f32>,
    total: f32,
}

impl From<MarginalsRecord> for Marginals {
    fn from(record: MarginalsRecord) -> Marginals {
        let columns = record
            .counts
            .iter()
            .zip(&record.pow_from)
            .zip(&record.pow_to);
        let items = columns.map(|((&count, &pow_from), &pow_to)| Marginal {
            count,
            pow_from,
            pow_to,
        });
        let mut marginals = Marginals {
            total: record.total,
            ..Marginals::default()
        };
        for marginal in items {
            marginals.push(marginal);
        }
        marginals
    }
}

impl From<Marginals> for MarginalsRecord {
    fn from(marginals: Marginals) -> MarginalsRecord {
        let column = |of: fn(&FromSide) -> f32| marginals.items.iter().map(of).collect();
        MarginalsRecord {
            counts: column(|m| m.count),
            pow_from: column(|m| m.pow_from),
            pow_to: marginals.pow_to.iter().copied().collect(),
            total: marginals.total,
        }
    }
}

impl Marginal {
    fn of_count(count: f32, alpha: f32) -> Marginal {
        Marginal {
            count,
            pow_from: count.powf(alpha),
            pow_to: count.powf(1.0 - alpha),
        }
    }

    /// The part stored per item, and `pow_to`, stored in its own column.
    fn split(self) -> (FromSide, f32) {
        let from_side = FromSide {
            count: self.count,
            pow_from: self.pow_from,
        };
        (from_side, self.pow_to)
    }
}

impl Marginals {
    fn push(&mut self, marginal: Marginal) {
        let (from_side, pow_to) = marginal.split();
        self.items.push(from_side);
        self.pow_to.push(pow_to);
    }

    /// Writes an item's marginal, the sequences grown to hold it.
    fn put(&mut self, item: u32, marginal: Marginal) {
        let idx = item as usize;
        self.items.grow(idx + 1, FromSide::default());
        self.pow_to.grow(idx + 1, 0.0);
        (self.items[idx], self.pow_to[idx]) = marginal.split();
    }

    fn add(&mut self, item: u32, weight: f32, alpha: f32) {
        let count = self.of(item).count + weight;
        self.put(item, Marginal::of_count(count, alpha));
        self.total += weight;
    }

    /// Recomputes every cached power for a new `alpha`.
    fn follow_alpha(&mut self, alpha: f32) {
        for (from_side, pow_to) in self.items.iter_mut().zip(self.pow_to.iter_mut()) {
            (*from_side, *pow_to) = Marginal::of_count(from_side.count, alpha).split();
        }
    }

    /// Sets an item's count to a value published by its owner.
    fn set(&mut self, item: u32, count: f32, alpha: f32) {
        self.total += count - self.of(item).count;
        self.put(item, Marginal::of_count(count, alpha));
    }

    /// An item's count and `pow_from` (its `pow_to` is `pow_to_of`).
    #[inline]
    fn of(&self, item: u32) -> FromSide {
        self.items.get(item as usize).copied().unwrap_or_default()
    }

    #[inline]
    fn pow_to_of(&self, item: u32) -> f32 {
        self.pow_to.get(item as usize).copied().unwrap_or_default()
    }

    fn heap_bytes(&self) -> usize {
        self.items.heap_bytes() + self.pow_to.heap_bytes()
    }
}

/// The asymmetric cosine of a pair count and its denominator `n_a^α · n_b^(1−α)`.
#[inline]
fn cosine(count: f32, denominator: f32) -> f32 {
    if denominator > 0.0 {
        count / denominator
    } else {
        0.0
    }
}

/// Scores of pairs from one item: its marginal is read once, not once per partner.
struct PairsFrom<'a> {
    similarity: Similarity,
    from: FromSide,
    total: f32,
    to: &'a Marginals,
}

impl PairsFrom<'_> {
    /// Scores of `a → b` where `a` counts in `from` and `b` in `to`: asymmetric cosine
    /// `c / (n_a^α · n_b^(1−α))` or LLR.
    fn new<'a>(
        similarity: Similarity,
        from: &Marginals,
        a: u32,
        to: &'a Marginals,
    ) -> PairsFrom<'a> {
        PairsFrom {
            similarity,
            from: from.of(a),
            total: from.total,
            to,
        }
    }

    #[inline]
    fn score(&self, b: u32, count: f32) -> f32 {
        self.score_as(self.similarity, b, count)
    }

    #[inline]
    fn score_as(&self, similarity: Similarity, b: u32, count: f32) -> f32 {
        match similarity {
            Similarity::Cosine => cosine(count, self.from.pow_from * self.to.pow_to_of(b)),
            Similarity::Llr => llr(count, self.from.count, self.to.of(b).count, self.total),
        }
    }

    /// `f` of each neighbour and its score, a loop per similarity.
    #[inline]
    fn for_each(&self, neighbors: &[Neighbor], mut f: impl FnMut(u32, f32)) {
        match self.similarity {
            Similarity::Cosine => self.for_each_cosine(neighbors, f),
            Similarity::Llr => {
                for n in neighbors {
                    f(n.item, self.score_as(Similarity::Llr, n.item, n.count));
                }
            }
        }
    }

    /// Cosine scores a block of neighbours at a time: a block's divisions do not depend on
    /// each other, so they run as vector divisions (one at a time, they were a fifth of
    /// gathering). Each score is `score`'s, bit for bit.
    #[inline]
    fn for_each_cosine(&self, neighbors: &[Neighbor], mut f: impl FnMut(u32, f32)) {
        const BLOCK: usize = 8;
        for block in neighbors.chunks(BLOCK) {
            let (mut counts, mut denominators) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
            for (i, n) in block.iter().enumerate() {
                counts[i] = n.count;
                denominators[i] = self.from.pow_from * self.to.pow_to_of(n.item);
            }
            let mut scores = [0.0f32; BLOCK];
            for i in 0..BLOCK {
                scores[i] = cosine(counts[i], denominators[i]);
            }
            for (n, score) in block.iter().zip(scores) {
                f(n.item, score);
            }
        }
    }
}

/// The pair tables' rows are not serialised with the rest: each item's rows go in the item's
/// own record (see `engine::records`), written when they change.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Cooccurrence {
    config: CoocConfig,
    #[serde(skip)]
    cooc: PairTable,
    #[serde(skip)]
    cross: PairTable,
    /// Weighted number of times each item entered a user's recent list.
    entries: Marginals,
    /// Number of first purchases of each item (the cross-occurrence column marginal).
    purchases: Marginals,
}

/// A neighbour list `(item, pair count)`, in no particular order.
pub type Listed = Vec<(u32, f32)>;

/// What the engine tells co-occurrence about one event.
pub struct PairEvent<'a> {
    pub item: u32,
    pub weight: f32,
    pub ts_ms: i64,
    /// The user's recent items before this event, most recent last.
    pub history: &'a VecDeque<RecentItem>,
    /// The item was not in the user's recent list yet.
    pub new_to_user: bool,
    /// This is the user's first purchase of the item.
    pub first_purchase: bool,
}

/// One count an event adds, addressed to the item whose state it changes (the first item of
/// a pair owns the pair's row).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PairOp {
    /// The item entered a user's recent list (its co-occurrence marginal).
    Entered { item: u32, weight: f32 },
    /// `row` and `partner` were in a user's recent list together.
    Pair { row: u32, partner: u32, weight: f32 },
    /// A user bought the item for the first time (its cross-occurrence marginal).
    Purchased { item: u32 },
    /// A user who had viewed `viewed` bought `bought`.
    Cross {
        viewed: u32,
        bought: u32,
        weight: f32,
    },
}

impl PairOp {
    /// The item whose state the count changes.
    pub fn item(&self) -> u32 {
        match *self {
            PairOp::Entered { item, .. } | PairOp::Purchased { item } => item,
            PairOp::Pair { row, .. } => row,
            PairOp::Cross { viewed, .. } => viewed,
        }
    }
}

/// The counts one event adds, in the order they are applied: the item's entry and its pairs
/// with each partner of the user's window (both rows), then its first purchase and the
/// partners' cross rows. Only the event and the user's window decide them.
pub fn pair_ops(config: &CoocConfig, event: PairEvent<'_>, mut emit: impl FnMut(PairOp)) {
    let partners = || partners(config, &event);
    let item = event.item;
    if event.new_to_user {
        emit(PairOp::Entered {
            item,
            weight: event.weight,
        });
        let count = partners().count();
        for (index, partner) in partners().enumerate() {
            let age = event.ts_ms - partner.last_ts_ms;
            let steps_back = (count - 1 - index) as i32;
            let position = config.position_decay.powi(steps_back);
            let weight = event.weight * decay_factor(age, config.pair_half_life_ms) * position;
            let partner = partner.item;
            emit(PairOp::Pair {
                row: item,
                partner,
                weight: weight * config.backward_weight,
            });
            emit(PairOp::Pair {
                row: partner,
                partner: item,
                weight,
            });
        }
    }
    if event.first_purchase {
        emit(PairOp::Purchased { item });
        for partner in partners() {
            let age = event.ts_ms - partner.last_ts_ms;
            let weight = decay_factor(age, config.pair_half_life_ms);
            emit(PairOp::Cross {
                viewed: partner.item,
                bought: item,
                weight,
            });
        }
    }
}

/// The event's partners: the user's last `window_items` recent items other than its own.
fn partners<'a>(
    config: &CoocConfig,
    event: &PairEvent<'a>,
) -> impl Iterator<Item = &'a RecentItem> {
    let start = event.history.len().saturating_sub(config.window_items);
    let item = event.item;
    event.history.range(start..).filter(move |p| p.item != item)
}

impl Cooccurrence {
    pub fn new(config: CoocConfig) -> Cooccurrence {
        Cooccurrence {
            config,
            cooc: PairTable::default(),
            cross: PairTable::default(),
            entries: Marginals::default(),
            purchases: Marginals::default(),
        }
    }

    pub fn config(&self) -> &CoocConfig {
        &self.config
    }

    /// Takes the running settings in place of those the state was stored with: counts already
    /// made stay as they were counted, and new ones follow the new settings.
    pub fn follow(&mut self, config: &CoocConfig) {
        if config.alpha != self.config.alpha {
            self.entries.follow_alpha(config.alpha);
            self.purchases.follow_alpha(config.alpha);
        }
        self.config = config.clone();
    }

    /// Reads the rows that the event's pairs will write (see `PairTable::touch`).
    pub fn touch(&self, event: &PairEvent<'_>) {
        if !event.new_to_user {
            return;
        }
        let rows = partners(&self.config, event).map(|p| p.item);
        std::hint::black_box(self.cooc.touch(rows, event.item));
    }

    /// Reads the first neighbour of each item's list, so that walking the lists later finds
    /// them cached (see `PairTable::touch`).
    pub fn touch_lists(&self, items: impl Iterator<Item = u32>) {
        let first = items.filter_map(|item| self.cooc.neighbors(item).first());
        std::hint::black_box(first.fold(0, |acc, n| acc ^ n.item));
    }

    /// Counts one event's pairs at once (one model learning alone).
    pub fn observe(&mut self, event: PairEvent<'_>) {
        let config = self.config.clone();
        pair_ops(&config, event, |op| self.apply(op));
    }

    /// Applies one count of an event, in the order `pair_ops` gives them.
    pub fn apply(&mut self, op: PairOp) {
        let alpha = self.config.alpha;
        match op {
            PairOp::Entered { item, weight } => self.entries.add(item, weight, alpha),
            PairOp::Pair {
                row,
                partner,
                weight,
            } => self.add_cooc(row, partner, weight),
            PairOp::Purchased { item } => self.purchases.add(item, 1.0, alpha),
            PairOp::Cross {
                viewed,
                bought,
                weight,
            } => self.add_cross(viewed, bought, weight),
        }
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            counters: self.config.counters_per_item,
            capacity: self.config.neighbors_per_item,
        }
    }

    fn add_cooc(&mut self, a: u32, b: u32, weight: f32) {
        let similarity = self.config.similarity;
        let pairs = PairsFrom::new(similarity, &self.entries, a, &self.entries);
        let bounds = self.bounds();
        self.cooc
            .add(a, b, weight, bounds, |b, count| pairs.score(b, count));
    }

    fn add_cross(&mut self, viewed: u32, bought: u32, weight: f32) {
        let similarity = self.config.similarity;
        let pairs = PairsFrom::new(similarity, &self.entries, viewed, &self.purchases);
        let bounds = self.bounds();
        self.cross.add(viewed, bought, weight, bounds, |b, count| {
            pairs.score(b, count)
        });
    }

    /// Neighbours of `item` with fresh similarity scores.
    pub fn similar(&self, item: u32) -> impl Iterator<Item = (u32, f32)> + '_ {
        let (pairs, neighbors) = self.similar_pairs(item);
        (neighbors.iter()).map(move |n| (n.item, pairs.score(n.item, n.count)))
    }

    /// Calls `f` with each neighbour of `item` and its fresh score, as `similar` yields them;
    /// the similarity is chosen once, outside the loop over the neighbours.
    #[inline]
    pub fn for_each_similar(&self, item: u32, f: impl FnMut(u32, f32)) {
        let (pairs, neighbors) = self.similar_pairs(item);
        pairs.for_each(neighbors, f);
    }

    /// Calls `f` with each item viewers of `item` went on to buy and its fresh score.
    #[inline]
    pub fn for_each_bought_after(&self, item: u32, f: impl FnMut(u32, f32)) {
        let (pairs, neighbors) = self.bought_after_pairs(item);
        pairs.for_each(neighbors, f);
    }

    /// Items that viewers of `item` went on to buy, with fresh scores.
    pub fn bought_after(&self, item: u32) -> impl Iterator<Item = (u32, f32)> + '_ {
        let (pairs, neighbors) = self.bought_after_pairs(item);
        (neighbors.iter()).map(move |n| (n.item, pairs.score(n.item, n.count)))
    }

    /// `item`'s co-occurrence neighbours and how to score them.
    #[inline]
    fn similar_pairs(&self, item: u32) -> (PairsFrom<'_>, &[Neighbor]) {
        let similarity = self.config.similarity;
        let pairs = PairsFrom::new(similarity, &self.entries, item, &self.entries);
        (pairs, self.cooc.neighbors(item))
    }

    /// `item`'s cross-occurrence neighbours (bought after it) and how to score them.
    #[inline]
    fn bought_after_pairs(&self, item: u32) -> (PairsFrom<'_>, &[Neighbor]) {
        let similarity = self.config.similarity;
        let pairs = PairsFrom::new(similarity, &self.entries, item, &self.purchases);
        (pairs, self.cross.neighbors(item))
    }

    /// The stored pair count, for tests and inspection.
    pub fn pair_count(&self, a: u32, b: u32) -> f32 {
        self.cooc.count(a, b)
    }

    pub fn counters(&self, item: u32) -> usize {
        self.cooc.counters(item)
    }

    pub fn heap_bytes(&self) -> usize {
        self.cooc.heap_bytes()
            + self.cross.heap_bytes()
            + self.entries.heap_bytes()
            + self.purchases.heap_bytes()
    }

    /// The item's rows (co-occurrence, then cross-occurrence).
    pub fn rows(&self, item: u32) -> (Option<&Row>, Option<&Row>) {
        (self.cooc.row(item), self.cross.row(item))
    }

    /// The item's marginals: weighted entries into recent lists, and first purchases.
    pub fn marginals(&self, item: u32) -> (f32, f32) {
        (self.entries.of(item).count, self.purchases.of(item).count)
    }

    /// The item's neighbour lists: similar, bought after.
    pub fn lists(&self, item: u32) -> (Listed, Listed) {
        let listed = |table: &PairTable| {
            let neighbors = table.neighbors(item).iter();
            neighbors.map(|n| (n.item, n.count)).collect()
        };
        (listed(&self.cooc), listed(&self.cross))
    }

    /// Sets the item's marginals to the values its owner published.
    pub fn install_marginals(&mut self, item: u32, entries: f32, purchases: f32) {
        let alpha = self.config.alpha;
        self.entries.set(item, entries, alpha);
        self.purchases.set(item, purchases, alpha);
    }

    /// Puts the item's lists, as its owner published them, in place of its rows.
    pub fn install_lists(&mut self, item: u32, similar: &[(u32, f32)], bought: &[(u32, f32)]) {
        let row = |list: &[(u32, f32)]| (!list.is_empty()).then(|| Arc::new(Row::listed(list)));
        self.cooc.install(item, row(similar));
        self.cross.install(item, row(bought));
    }

    /// Puts an item's stored rows in place.
    pub fn install_rows(&mut self, item: u32, (cooc, cross): (SharedRow, SharedRow)) {
        self.cooc.install(item, cooc);
        self.cross.install(item, cross);
    }

    /// Adds the items whose rows changed since the last `clear_changed` to `into`.
    pub fn changed_into(&self, into: &mut ChangedItems) {
        into.union_with(self.cooc.changed());
        into.union_with(self.cross.changed());
    }

    pub fn clear_changed(&mut self) {
        self.cooc.clear_changed();
        self.cross.clear_changed();
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
            alpha: 0.5,
            backward_weight: 1.0,
            position_decay: 1.0,
        }
    }

    #[test]
    fn scores_of_a_list_in_blocks_equal_scores_one_at_a_time() {
        let mut marginals = Marginals::default();
        let mut rng = crate::rng::SplitMix64::new(3);
        // Item 0 is never counted: its denominator is 0, so its score is too.
        for item in 1..40 {
            marginals.add(item, 1.0 + rng.below(50) as f32 / 7.0, 0.3);
        }
        // 19 neighbours: two whole blocks and a part of one.
        let neighbors: Vec<Neighbor> = (0..19)
            .map(|i| Neighbor {
                item: i * 2,
                count: 0.5 + rng.below(20) as f32 / 3.0,
                rank_score: 0.0,
            })
            .collect();
        let pairs = PairsFrom::new(Similarity::Cosine, &marginals, 5, &marginals);
        let mut blocked = Vec::new();
        pairs.for_each(&neighbors, |item, score| {
            blocked.push((item, score.to_bits()))
        });
        let one_at_a_time: Vec<(u32, u32)> = (neighbors.iter())
            .map(|n| (n.item, pairs.score(n.item, n.count).to_bits()))
            .collect();
        assert_eq!(blocked, one_at_a_time);
        assert_eq!(blocked[0].1, 0, "an uncounted partner scores 0");
    }

    fn view(c: &mut Cooccurrence, item: u32, ts: i64, history: &[RecentItem]) {
        c.observe(PairEvent {
            item,
            weight: 1.0,
            ts_ms: ts,
            history: &history.iter().cloned().collect(),
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
    fn a_pair_weighs_more_forward_and_less_the_further_apart() {
        let mut c = Cooccurrence::new(CoocConfig {
            window_items: 3,
            backward_weight: 0.5,
            position_decay: 0.5,
            ..config(5, 10)
        });
        let history = [recent(1, 0), recent(2, 0), recent(3, 0)];
        view(&mut c, 4, 0, &history);
        let counts =
            [(3, 4), (4, 3), (2, 4), (4, 2), (1, 4), (4, 1)].map(|(a, b)| c.pair_count(a, b));
        assert_eq!(counts, [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]);
    }

    /// Ranking reads neighbours through the callbacks: they must score as the iterators do,
    /// bit for bit, under either similarity.
    #[test]
    fn callbacks_score_neighbours_as_the_iterators_do() {
        for similarity in [Similarity::Cosine, Similarity::Llr] {
            let mut c = Cooccurrence::new(CoocConfig {
                similarity,
                ..config(5, 10)
            });
            for ts in 0..6 {
                let history = [recent(ts as u32 % 3, ts), recent(7, ts)];
                view(&mut c, 3 + ts as u32 % 2, ts, &history);
                c.observe(PairEvent {
                    item: 9,
                    weight: 2.0,
                    ts_ms: ts,
                    history: &history.iter().cloned().collect(),
                    new_to_user: false,
                    first_purchase: true,
                });
            }
            let bits = |scored: Vec<(u32, f32)>| -> Vec<(u32, u32)> {
                scored.into_iter().map(|(i, s)| (i, s.to_bits())).collect()
            };
            for item in [0, 3, 7] {
                let (mut similar, mut bought) = (Vec::new(), Vec::new());
                c.for_each_similar(item, |n, s| similar.push((n, s)));
                c.for_each_bought_after(item, |n, s| bought.push((n, s)));
                assert!(!similar.is_empty(), "{similarity:?} {item}");
                assert_eq!(bits(similar), bits(c.similar(item).collect()));
                assert_eq!(bits(bought), bits(c.bought_after(item).collect()));
            }
        }
    }

    #[test]
    fn cross_occurrence_is_kept_apart_and_directed() {
        let mut c = Cooccurrence::new(config(5, 10));
        let history: VecDeque<RecentItem> = [recent(1, 0)].into_iter().collect();
        c.observe(PairEvent {
            item: 9,
            weight: 4.0,
            ts_ms: 0,
            history: &history,
            new_to_user: false,
            first_purchase: true,
        });
        assert_eq!(
            c.bought_after(1).map(|(i, _)| i).collect::<Vec<_>>(),
            vec![9]
        );
        assert_eq!(c.bought_after(9).count(), 0);
        assert_eq!(
            c.similar(1).count(),
            0,
            "no plain co-occurrence without a new entry"
        );
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
        assert!(
            neighbors.iter().all(|&n| n < 5),
            "strong pairs survive: {neighbors:?}"
        );
    }
}
