//! Online metrics from the stream itself. What was last shown to a user (a published update, a
//! query's answer) stays with the user; each of their next events is judged against it: was
//! the event's item in the list, at which rank, from which sources, and was a purchase of an
//! item recommended to them (a conversion, with its revenue). Bounded per user — the last list
//! (at most `MAX_SHOWN` items) and the last `engine.online.max_engaged` recommended items they
//! went on to touch — and counted per shard, stored with the state.
//!
//! The definition matches prequential evaluation's discovery test (`eval`): a test case is an
//! event on an item new to the user, a hit is that item in the list shown. `eval` ranks just
//! before the event; here the list is the one the user was shown, so the two agree when a list
//! is published after every event and nothing else happens in between.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::OnlineConfig;

/// The most items of a shown list kept (longer lists are judged on their first `MAX_SHOWN`).
pub const MAX_SHOWN: usize = 100;

/// Source bits (see `ranking::Sources`) have this many places.
pub const SOURCE_BITS: usize = 8;

/// What a user was last shown, and which recommended items they went on to touch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    /// The user's time when the list was made: their latest event's time.
    pub at_ms: i64,
    /// (item index, source bits), best first.
    pub items: Vec<(u32, u8)>,
    /// Items of earlier lists the user touched while the list was fresh, oldest first: a
    /// purchase of one within the horizon is a conversion even once a later list left it out.
    pub engaged: VecDeque<Engaged>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Engaged {
    pub item: u32,
    pub sources: u8,
    pub at_ms: i64,
}

/// `Shown` with items by name: what a changelog record carries to the user's new owner, which
/// interns the names in its own order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortableShown {
    at_ms: i64,
    /// (item, source bits), best first.
    items: Vec<(String, u8)>,
    /// Oldest first.
    engaged: Vec<PortableEngaged>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PortableEngaged {
    item: String,
    sources: u8,
    at_ms: i64,
}

impl PortableShown {
    pub fn new(shown: &Shown, item_name: impl Fn(u32) -> String) -> PortableShown {
        let items = shown
            .items
            .iter()
            .map(|&(item, bits)| (item_name(item), bits));
        let engaged = shown.engaged.iter().map(|e| PortableEngaged {
            item: item_name(e.item),
            sources: e.sources,
            at_ms: e.at_ms,
        });
        PortableShown {
            at_ms: shown.at_ms,
            items: items.collect(),
            engaged: engaged.collect(),
        }
    }

    /// This instance's copy, with items interned by `intern`. A record past the limits (a
    /// damaged or hostile one) keeps the first `MAX_SHOWN` listed and the latest engaged.
    pub fn localize(&self, limits: &OnlineConfig, mut intern: impl FnMut(&str) -> u32) -> Shown {
        let listed = self.items.iter().take(MAX_SHOWN);
        let items = listed.map(|(item, bits)| (intern(item), *bits)).collect();
        let latest = self.engaged.len().saturating_sub(limits.max_engaged);
        let engaged = self.engaged[latest..].iter().map(|e| Engaged {
            item: intern(&e.item),
            sources: e.sources,
            at_ms: e.at_ms,
        });
        Shown {
            at_ms: self.at_ms,
            items,
            engaged: engaged.collect(),
        }
    }
}

/// One event of a user as online metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Observed {
    pub item: u32,
    pub ts_ms: i64,
    /// The user had not touched the item (by their bounded recent history).
    pub new_item: bool,
    /// A purchase, and what it is worth (price × quantity; 0 when no price is known).
    pub purchase: Option<f64>,
}

/// Online counters of one shard (or summed over several).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineCounts {
    /// Events of users whose last list was shown within the horizon (judged events).
    pub judged: u64,
    /// Judged events on items new to the user: online HR@N's test cases.
    pub new_item_events: u64,
    /// Those whose item was in the list.
    pub hits: u64,
    /// Sum of 1 / rank over the hits (MRR = this / `new_item_events`).
    pub reciprocal_rank: f64,
    /// Hits whose item the source proposed (an item can have several), by source bit.
    pub hits_by_source: [u64; SOURCE_BITS],
    /// Judged purchases, and what they were worth.
    pub purchases: u64,
    pub purchase_revenue: f64,
    /// Judged purchases of an item in the list or engaged within the horizon, and their worth.
    pub conversions: u64,
    pub attributed_revenue: f64,
    pub conversions_by_source: [u64; SOURCE_BITS],
    /// Items shown by impression events (of items the model knows).
    pub impressions: u64,
    /// Impressed items the user then touched within the horizon, once per impression.
    pub impression_clicks: u64,
}

impl OnlineCounts {
    pub fn add(&mut self, other: &OnlineCounts) {
        self.judged += other.judged;
        self.new_item_events += other.new_item_events;
        self.hits += other.hits;
        self.reciprocal_rank += other.reciprocal_rank;
        self.purchases += other.purchases;
        self.purchase_revenue += other.purchase_revenue;
        self.conversions += other.conversions;
        self.attributed_revenue += other.attributed_revenue;
        self.impressions += other.impressions;
        self.impression_clicks += other.impression_clicks;
        for bit in 0..SOURCE_BITS {
            self.hits_by_source[bit] += other.hits_by_source[bit];
            self.conversions_by_source[bit] += other.conversions_by_source[bit];
        }
    }

    /// Online HR@N: hits per event on an item new to the user.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits as f64, self.new_item_events as f64)
    }

    pub fn mrr(&self) -> f64 {
        ratio(self.reciprocal_rank, self.new_item_events as f64)
    }

    /// The click-through rate: clicks per impressed item.
    pub fn click_through_rate(&self) -> f64 {
        ratio(self.impression_clicks as f64, self.impressions as f64)
    }

    /// Conversions per judged purchase.
    pub fn conversion_rate(&self) -> f64 {
        ratio(self.conversions as f64, self.purchases as f64)
    }

    /// Judges `event` against what its user was last shown, and counts it (the engine judges
    /// once and counts in several tallies; see `OnlineTally::count`).
    #[cfg(test)]
    pub fn judge(&mut self, shown: &mut Shown, event: Observed, limits: &OnlineConfig) {
        if let Some(judgement) = shown.judge(event, limits) {
            self.count(&judgement);
        }
    }

    /// Counts a judged event.
    pub fn count(&mut self, judgement: &Judgement) {
        self.judged += 1;
        if judgement.new_item {
            self.new_item_events += 1;
            if let Some((rank, bits)) = judgement.hit {
                self.hits += 1;
                self.reciprocal_rank += 1.0 / (rank as f64 + 1.0);
                count_bits(&mut self.hits_by_source, bits);
            }
        }
        if let Some(worth) = judgement.purchase {
            self.purchases += 1;
            self.purchase_revenue += worth;
            if let Some(bits) = judgement.converted {
                self.conversions += 1;
                self.attributed_revenue += worth;
                count_bits(&mut self.conversions_by_source, bits);
            }
        }
    }
}

/// A shard's online counters: every judged event's, and each experiment variant's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineTally {
    pub total: OnlineCounts,
    /// One per (experiment, variant) of the config, in its order (`experiments::arms`).
    pub variants: Vec<VariantCounts>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantCounts {
    pub experiment: String,
    pub variant: String,
    pub counts: OnlineCounts,
}

impl OnlineTally {
    /// Counts a judged event in the total and in each of `arms` (indices into `variants`).
    pub fn count(&mut self, judgement: &Judgement, arms: impl Iterator<Item = usize>) {
        self.each(arms, |counts| counts.count(judgement));
    }

    /// `shown` items were impressed on a user in each of `arms`.
    pub fn count_impressions(&mut self, shown: u64, arms: impl Iterator<Item = usize>) {
        self.each(arms, |counts| counts.impressions += shown);
    }

    /// A user in each of `arms` touched an item shown to them.
    pub fn count_click(&mut self, arms: impl Iterator<Item = usize>) {
        self.each(arms, |counts| counts.impression_clicks += 1);
    }

    /// Applies `change` to the total and to each of `arms` (indices into `variants`).
    fn each(&mut self, arms: impl Iterator<Item = usize>, change: impl Fn(&mut OnlineCounts)) {
        change(&mut self.total);
        for arm in arms {
            if let Some(variant) = self.variants.get_mut(arm) {
                change(&mut variant.counts);
            }
        }
    }

    /// Lays `variants` out as `arms` (experiment, variant names) are, keeping the counts of
    /// the ones still there: an experiment left out of the config takes its counts with it.
    pub fn align(&mut self, arms: &[(String, String)]) {
        let mut old = std::mem::take(&mut self.variants);
        self.variants = (arms.iter())
            .map(|(experiment, variant)| {
                let kept = old
                    .iter()
                    .position(|v| &v.experiment == experiment && &v.variant == variant);
                let counts = kept.map(|i| old.swap_remove(i).counts);
                VariantCounts {
                    experiment: experiment.clone(),
                    variant: variant.clone(),
                    counts: counts.unwrap_or_default(),
                }
            })
            .collect();
    }

    /// Sums `other` into this tally (variants matched by name, new ones appended).
    pub fn add(&mut self, other: &OnlineTally) {
        self.total.add(&other.total);
        for theirs in &other.variants {
            let same = |v: &&mut VariantCounts| {
                v.experiment == theirs.experiment && v.variant == theirs.variant
            };
            match self.variants.iter_mut().find(same) {
                Some(ours) => ours.counts.add(&theirs.counts),
                None => self.variants.push(theirs.clone()),
            }
        }
    }
}

/// What one event says about the list its user was shown.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judgement {
    /// A test case of online HR@N: an item new to the user.
    pub new_item: bool,
    /// A new item in the list: its rank (0 = first) and sources.
    pub hit: Option<(usize, u8)>,
    /// A purchase, and what it is worth.
    pub purchase: Option<f64>,
    /// A purchase of an item in the list or engaged within the horizon: its sources.
    pub converted: Option<u8>,
}

impl Shown {
    /// Judges `event` against this list, noting a listed item the user touched; None when
    /// the list is older than the horizon.
    pub fn judge(&mut self, event: Observed, limits: &OnlineConfig) -> Option<Judgement> {
        if event.ts_ms - self.at_ms > limits.horizon_ms {
            return None;
        }
        let in_list = self.items.iter().position(|&(item, _)| item == event.item);
        let sources = in_list.map(|rank| self.items[rank].1);
        let converted = event.purchase.and_then(|_| {
            sources.or_else(|| self.engaged_within(event.item, event.ts_ms, limits.horizon_ms))
        });
        if let Some(bits) = sources {
            self.engage(event.item, bits, event.ts_ms, limits.max_engaged);
        }
        Some(Judgement {
            new_item: event.new_item,
            hit: in_list.zip(sources).filter(|_| event.new_item),
            purchase: event.purchase,
            converted,
        })
    }

    /// A list shown at the user's time `at_ms`, keeping what they engaged with before.
    pub fn replace(&mut self, at_ms: i64, items: impl Iterator<Item = (u32, u8)>) {
        self.at_ms = at_ms;
        self.items.clear();
        self.items.extend(items.take(MAX_SHOWN));
    }

    /// Bytes on the heap: the box, the list and the engaged items.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Shown>()
            + self.items.capacity() * std::mem::size_of::<(u32, u8)>()
            + self.engaged.capacity() * std::mem::size_of::<Engaged>()
    }

    /// The largest item index the lists hold (a record naming more is refused on load).
    pub fn max_item(&self) -> Option<u32> {
        let listed = self.items.iter().map(|&(item, _)| item);
        listed.chain(self.engaged.iter().map(|e| e.item)).max()
    }

    fn engaged_within(&self, item: u32, ts_ms: i64, horizon_ms: i64) -> Option<u8> {
        let recent = self.engaged.iter().rev();
        let mut within = recent.filter(|e| ts_ms - e.at_ms <= horizon_ms);
        within.find(|e| e.item == item).map(|e| e.sources)
    }

    fn engage(&mut self, item: u32, sources: u8, at_ms: i64, max: usize) {
        self.engaged.retain(|e| e.item != item);
        self.engaged.push_back(Engaged {
            item,
            sources,
            at_ms,
        });
        while self.engaged.len() > max {
            self.engaged.pop_front();
        }
    }
}

/// The two-proportion z statistic of `b` against `a` (successes, trials), pooled: how many
/// standard errors b's rate lies above a's; |z| > 1.96 is significant at 5 % (two-sided).
/// 0 when either has no trials or neither varies.
pub fn two_proportion_z((a_hits, a_trials): (u64, u64), (b_hits, b_trials): (u64, u64)) -> f64 {
    if a_trials == 0 || b_trials == 0 {
        return 0.0;
    }
    let (na, nb) = (a_trials as f64, b_trials as f64);
    let pooled = (a_hits + b_hits) as f64 / (na + nb);
    let error = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if error > 0.0 {
        (b_hits as f64 / nb - a_hits as f64 / na) / error
    } else {
        0.0
    }
}

fn count_bits(counts: &mut [u64; SOURCE_BITS], bits: u8) {
    for (bit, count) in counts.iter_mut().enumerate() {
        *count += u64::from(bits & (1 << bit) != 0);
    }
}

/// `a / b`, 0 when `b` is not positive (a share of nothing is none).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: OnlineConfig = OnlineConfig {
        horizon_ms: 1_000,
        max_engaged: 2,
    };

    /// A list travels by name and comes back equal; a record past the limits (a damaged or
    /// hostile one) keeps the first `MAX_SHOWN` listed and the latest engaged, and names only
    /// what it keeps.
    #[test]
    fn a_portable_list_comes_back_within_the_limits() {
        let name = |item: u32| format!("i{item}");
        let mut original = shown(7, &[(3, 1), (5, 2)]);
        original.engage(9, 4, 6, LIMITS.max_engaged);
        let portable = PortableShown::new(&original, name);
        let interned = std::cell::Cell::new(0);
        let intern = |id: &str| {
            interned.set(interned.get() + 1);
            id[1..].parse().unwrap()
        };
        assert_eq!(portable.localize(&LIMITS, intern), original);

        let long: Vec<(u32, u8)> = (0..MAX_SHOWN as u32 + 50).map(|i| (i, 1)).collect();
        let mut hostile = PortableShown::new(&shown(7, &[]), name);
        hostile.items = long.iter().map(|&(i, b)| (name(i), b)).collect();
        for at_ms in 0..5 {
            hostile.engaged.push(PortableEngaged {
                item: name(1_000 + at_ms as u32),
                sources: 1,
                at_ms,
            });
        }
        interned.set(0);
        let local = hostile.localize(&LIMITS, intern);
        assert_eq!(local.items, long[..MAX_SHOWN]);
        let engaged: Vec<u32> = local.engaged.iter().map(|e| e.item).collect();
        assert_eq!(engaged, [1_003, 1_004]);
        assert_eq!(interned.get(), MAX_SHOWN + 2);
    }

    fn shown(at_ms: i64, items: &[(u32, u8)]) -> Shown {
        let mut shown = Shown::default();
        shown.replace(at_ms, items.iter().copied());
        shown
    }

    fn view(item: u32, ts_ms: i64, new_item: bool) -> Observed {
        Observed {
            item,
            ts_ms,
            new_item,
            purchase: None,
        }
    }

    fn purchase(item: u32, ts_ms: i64, worth: f64) -> Observed {
        Observed {
            purchase: Some(worth),
            ..view(item, ts_ms, false)
        }
    }

    #[test]
    fn the_z_statistic_matches_a_worked_example() {
        // 200 of 1000 against 250 of 1000: pooled 0.225, error 0.018675, z = 2.6774.
        let z = two_proportion_z((200, 1000), (250, 1000));
        assert!((z - 2.6774).abs() < 1e-4, "{z}");
        assert_eq!(two_proportion_z((0, 0), (5, 10)), 0.0);
        assert_eq!(two_proportion_z((0, 10), (0, 10)), 0.0);
    }

    #[test]
    fn a_new_item_in_the_list_is_a_hit_at_its_rank_with_its_sources() {
        let mut counts = OnlineCounts::default();
        let mut list = shown(100, &[(7, 0b01), (9, 0b10)]);
        counts.judge(&mut list, view(9, 150, true), &LIMITS);
        counts.judge(&mut list, view(3, 160, true), &LIMITS);
        assert_eq!(
            (counts.judged, counts.new_item_events, counts.hits),
            (2, 2, 1)
        );
        assert_eq!(counts.reciprocal_rank, 0.5);
        assert_eq!(counts.hits_by_source[..2], [0, 1]);
        assert_eq!(counts.hit_rate(), 0.5);
    }

    #[test]
    fn an_item_the_user_had_touched_is_judged_but_not_a_test_case() {
        let mut counts = OnlineCounts::default();
        let mut list = shown(100, &[(7, 1)]);
        counts.judge(&mut list, view(7, 150, false), &LIMITS);
        assert_eq!(
            (counts.judged, counts.new_item_events, counts.hits),
            (1, 0, 0)
        );
    }

    #[test]
    fn a_list_older_than_the_horizon_judges_nothing() {
        let mut counts = OnlineCounts::default();
        let mut list = shown(100, &[(7, 1)]);
        counts.judge(&mut list, view(7, 1_101, true), &LIMITS);
        assert_eq!(counts, OnlineCounts::default());
    }

    #[test]
    fn a_purchase_of_an_item_engaged_earlier_converts_within_the_horizon() {
        let mut counts = OnlineCounts::default();
        let mut list = shown(100, &[(7, 0b100)]);
        counts.judge(&mut list, view(7, 150, true), &LIMITS);
        // The next list leaves 7 out (seen); buying it still converts, with 7's sources.
        list.replace(150, [(8, 1)].into_iter());
        counts.judge(&mut list, purchase(7, 900, 30.0), &LIMITS);
        assert_eq!((counts.purchases, counts.conversions), (1, 1));
        assert_eq!(counts.attributed_revenue, 30.0);
        assert_eq!(counts.conversions_by_source[2], 1);
        // Past the horizon from the engagement, a purchase is judged but not attributed.
        list.replace(900, [(8, 1)].into_iter());
        counts.judge(&mut list, purchase(7, 1_200, 30.0), &LIMITS);
        assert_eq!((counts.purchases, counts.conversions), (2, 1));
        assert_eq!(counts.purchase_revenue, 60.0);
    }

    #[test]
    fn engaged_items_are_bounded_oldest_out() {
        let mut counts = OnlineCounts::default();
        let mut list = shown(0, &[(1, 1), (2, 1), (3, 1)]);
        for item in 1..=3 {
            counts.judge(&mut list, view(item, 10, true), &LIMITS);
        }
        let kept: Vec<u32> = list.engaged.iter().map(|e| e.item).collect();
        assert_eq!(kept, vec![2, 3]);
    }
}
