//! How often buyers buy the same item again, by category, learned from the stream: a
//! consumable may come back after its purchase, a durable good does not.
//!
//! Each worker counts its own users' purchases: they are a sample of the shop's buyers, so no
//! count is shared between workers or instances. A category's rate leans on the shop's until
//! the category has purchases of its own (a prior of `RankingConfig::repurchase_prior`
//! purchases at the shop's rate).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::RankingConfig;
use crate::online::ratio;

/// Categories counted apart; purchases in any further category count only for the shop.
pub const MAX_CATEGORIES: usize = 65_536;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counts {
    purchases: u64,
    rebuys: u64,
}

impl Counts {
    fn record(&mut self, rebuy: bool) {
        self.purchases += 1;
        self.rebuys += u64::from(rebuy);
    }
}

/// Purchases and re-purchases of the same item, for the shop and per category. Ordered by
/// category so that equal tallies encode equally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuyTally {
    shop: Counts,
    categories: BTreeMap<u32, Counts>,
}

impl RebuyTally {
    /// Counts a purchase: `rebuy` when the buyer had bought the item before.
    pub fn record(&mut self, category: Option<u32>, rebuy: bool) {
        self.shop.record(rebuy);
        let Some(category) = category else {
            return;
        };
        let room = self.categories.len() < MAX_CATEGORIES;
        match self.categories.entry(category) {
            Entry::Occupied(mut counts) => counts.get_mut().record(rebuy),
            Entry::Vacant(slot) if room => slot.insert(Counts::default()).record(rebuy),
            Entry::Vacant(_) => {}
        }
    }

    /// Purchases counted, and how many of them re-bought an item.
    pub fn shop(&self) -> (u64, u64) {
        (self.shop.purchases, self.shop.rebuys)
    }

    /// The share of purchases that re-buy an item, in `category` (the shop's without one).
    pub fn rate(&self, category: Option<u32>, prior: f32) -> f32 {
        let shop = share(self.shop.rebuys as f32, self.shop.purchases as f32);
        let Some(counts) = category.and_then(|c| self.categories.get(&c)) else {
            return shop;
        };
        let rebuys = counts.rebuys as f32 + prior * shop;
        share(rebuys, counts.purchases as f32 + prior)
    }

    /// How much a bought item of `category` may count again in a ranking: its re-buy rate times
    /// the weight, or `None` when it must not come back at all.
    pub fn comeback(&self, category: Option<u32>, ranking: &RankingConfig) -> Option<f32> {
        if ranking.repurchase_weight == 0.0 {
            return None;
        }
        let rate = self.rate(category, ranking.repurchase_prior);
        (rate >= ranking.repurchase_min_rate).then(|| (rate * ranking.repurchase_weight).min(1.0))
    }
}

/// `part / whole` in f32 (the division in f64 rounds to the same f32).
fn share(part: f32, whole: f32) -> f32 {
    ratio(f64::from(part), f64::from(whole)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(weight: f32) -> RankingConfig {
        RankingConfig {
            repurchase_weight: weight,
            repurchase_min_rate: 0.01,
            repurchase_prior: 20.0,
            ..RankingConfig::default()
        }
    }

    /// `purchases` purchases in `category`, `rebuys` of them re-buys.
    fn bought(tally: &mut RebuyTally, category: u32, purchases: u32, rebuys: u32) {
        for n in 0..purchases {
            tally.record(Some(category), n < rebuys);
        }
    }

    #[test]
    fn nothing_comes_back_before_any_rebuy() {
        let mut tally = RebuyTally::default();
        assert_eq!(tally.comeback(Some(1), &ranking(1.0)), None);
        bought(&mut tally, 1, 500, 0);
        assert_eq!(tally.comeback(Some(1), &ranking(1.0)), None);
    }

    #[test]
    fn a_rebought_category_comes_back_at_its_rate() {
        let mut tally = RebuyTally::default();
        bought(&mut tally, 1, 1_000, 100);
        let rate = tally.rate(Some(1), 20.0);
        assert!((rate - 0.1).abs() < 1e-6, "{rate}");
        assert_eq!(tally.comeback(Some(1), &ranking(1.0)), Some(rate));
        assert_eq!(tally.comeback(Some(1), &ranking(0.5)), Some(rate * 0.5));
        assert_eq!(tally.comeback(Some(1), &ranking(0.0)), None);
    }

    #[test]
    fn a_category_never_rebought_stays_out_in_a_shop_of_rebuys() {
        let mut tally = RebuyTally::default();
        bought(&mut tally, 1, 1_000, 100);
        bought(&mut tally, 2, 400, 0);
        assert_eq!(tally.comeback(Some(2), &ranking(1.0)), None);
    }

    #[test]
    fn a_new_category_leans_on_the_shop() {
        let mut tally = RebuyTally::default();
        bought(&mut tally, 1, 1_000, 100);
        bought(&mut tally, 2, 1, 0);
        let shop = tally.rate(None, 20.0);
        let new = tally.rate(Some(2), 20.0);
        assert!(new < shop && new > 0.9 * shop, "{new} against {shop}");
        assert_eq!(tally.rate(Some(3), 20.0), shop);
    }

    #[test]
    fn categories_beyond_the_bound_count_for_the_shop_only() {
        let mut tally = RebuyTally::default();
        for category in 0..MAX_CATEGORIES as u32 + 10 {
            tally.record(Some(category), false);
        }
        assert_eq!(tally.categories.len(), MAX_CATEGORIES);
        assert_eq!(tally.shop.purchases, MAX_CATEGORIES as u64 + 10);
    }
}
