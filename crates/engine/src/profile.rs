//! User profiles: what a shopper did, bounded in memory whatever their history length.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::config::ProfileConfig;
use crate::decay::Decayed;
use crate::event::EventType;

/// One distinct item in the user's recent history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecentItem {
    pub item: u32,
    pub strongest: EventType,
    pub events: u32,
    pub last_ts_ms: i64,
    /// Type-weighted, time-decayed interest in the item.
    pub interest: Decayed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "ProfileRecord")]
pub struct UserProfile {
    pub counts: [u64; 4],
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Distinct items, most recently touched last. A deque: the oldest leaves from the front
    /// and a re-touched item (usually a recent one) moves to the back cheaply.
    pub recent: VecDeque<RecentItem>,
    purchased_order: VecDeque<u32>,
    /// An index over `purchased_order`, rebuilt on load rather than stored.
    #[serde(skip)]
    purchased: FxHashSet<u32>,
    /// Category affinity, decayed; the weakest is dropped when full.
    pub categories: Vec<(u32, Decayed)>,
}

/// A profile as stored: everything but the derived purchase index.
#[derive(Deserialize)]
struct ProfileRecord {
    counts: [u64; 4],
    first_seen_ms: i64,
    last_seen_ms: i64,
    recent: VecDeque<RecentItem>,
    purchased_order: VecDeque<u32>,
    categories: Vec<(u32, Decayed)>,
}

impl UserProfile {
    /// The largest item index the profile holds.
    pub fn max_item(&self) -> Option<u32> {
        let recent = self.recent.iter().map(|r| r.item);
        recent.chain(self.purchased_order.iter().copied()).max()
    }

    /// The largest category index the profile holds.
    pub fn max_category(&self) -> Option<u32> {
        self.categories.iter().map(|c| c.0).max()
    }
}

impl From<ProfileRecord> for UserProfile {
    fn from(r: ProfileRecord) -> UserProfile {
        UserProfile {
            purchased: r.purchased_order.iter().copied().collect(),
            counts: r.counts,
            first_seen_ms: r.first_seen_ms,
            last_seen_ms: r.last_seen_ms,
            recent: r.recent,
            purchased_order: r.purchased_order,
            categories: r.categories,
        }
    }
}

/// A profile another instance can read: items and categories by name, not by this
/// instance's interned indices (each instance interns in the order it sees them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortableProfile {
    pub counts: [u64; 4],
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub recent: Vec<PortableRecent>,
    pub purchased: Vec<String>,
    pub categories: Vec<(String, Decayed)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortableRecent {
    pub item: String,
    pub strongest: EventType,
    pub events: u32,
    pub last_ts_ms: i64,
    pub interest: Decayed,
}

impl UserProfile {
    /// This profile with names for indices.
    pub fn to_portable(
        &self,
        item: impl Fn(u32) -> String,
        category: impl Fn(u32) -> String,
    ) -> PortableProfile {
        PortableProfile {
            counts: self.counts,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            recent: self
                .recent
                .iter()
                .map(|r| PortableRecent {
                    item: item(r.item),
                    strongest: r.strongest,
                    events: r.events,
                    last_ts_ms: r.last_ts_ms,
                    interest: r.interest,
                })
                .collect(),
            purchased: self.purchased_order.iter().map(|&i| item(i)).collect(),
            categories: self
                .categories
                .iter()
                .map(|(c, d)| (category(*c), *d))
                .collect(),
        }
    }

    /// A portable profile in this instance's indices (`item` and `category` intern names).
    pub fn from_portable(
        portable: &PortableProfile,
        mut item: impl FnMut(&str) -> u32,
        mut category: impl FnMut(&str) -> u32,
    ) -> UserProfile {
        ProfileRecord {
            counts: portable.counts,
            first_seen_ms: portable.first_seen_ms,
            last_seen_ms: portable.last_seen_ms,
            recent: portable
                .recent
                .iter()
                .map(|r| RecentItem {
                    item: item(&r.item),
                    strongest: r.strongest,
                    events: r.events,
                    last_ts_ms: r.last_ts_ms,
                    interest: r.interest,
                })
                .collect(),
            purchased_order: portable.purchased.iter().map(|i| item(i)).collect(),
            categories: portable
                .categories
                .iter()
                .map(|(c, d)| (category(c), *d))
                .collect(),
        }
        .into()
    }

    pub fn new(ts_ms: i64) -> UserProfile {
        UserProfile {
            counts: [0; 4],
            first_seen_ms: ts_ms,
            last_seen_ms: ts_ms,
            recent: VecDeque::new(),
            purchased_order: VecDeque::new(),
            purchased: FxHashSet::default(),
            categories: Vec::new(),
        }
    }

    pub fn events(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn recent_position(&self, item: u32) -> Option<usize> {
        self.recent.iter().rposition(|r| r.item == item)
    }

    pub fn has_purchased(&self, item: u32) -> bool {
        self.purchased.contains(&item)
    }

    pub fn purchased(&self) -> impl Iterator<Item = u32> + '_ {
        self.purchased_order.iter().copied()
    }

    /// Folds one event into the profile.
    pub fn record(&mut self, observation: Observation, config: &ProfileConfig) {
        let Observation {
            item,
            kind,
            ts_ms,
            weight,
            category,
        } = observation;
        self.counts[kind.index()] += 1;
        self.first_seen_ms = self.first_seen_ms.min(ts_ms);
        self.last_seen_ms = self.last_seen_ms.max(ts_ms);
        self.touch_recent(item, kind, ts_ms, weight, config);
        if kind == EventType::Purchase {
            self.remember_purchase(item, config.max_purchased_items);
        }
        if let Some(category) = category {
            self.add_category(category, weight, ts_ms, config);
        }
    }

    fn touch_recent(
        &mut self,
        item: u32,
        kind: EventType,
        ts_ms: i64,
        weight: f32,
        config: &ProfileConfig,
    ) {
        let mut entry = match self.recent_position(item) {
            Some(pos) => self.recent.remove(pos).expect("position is in range"),
            None => RecentItem {
                item,
                strongest: kind,
                events: 0,
                last_ts_ms: ts_ms,
                interest: Decayed::default(),
            },
        };
        entry.strongest = entry.strongest.max(kind);
        entry.events += 1;
        entry.last_ts_ms = entry.last_ts_ms.max(ts_ms);
        entry.interest.add(weight, ts_ms, config.half_life_ms);
        self.recent.push_back(entry);
        if self.recent.len() > config.max_recent_items {
            self.recent.pop_front();
        }
    }

    fn remember_purchase(&mut self, item: u32, limit: usize) {
        if !self.purchased.insert(item) {
            return;
        }
        self.purchased_order.push_back(item);
        if self.purchased_order.len() > limit {
            if let Some(oldest) = self.purchased_order.pop_front() {
                self.purchased.remove(&oldest);
            }
        }
    }

    fn add_category(&mut self, category: u32, weight: f32, ts_ms: i64, config: &ProfileConfig) {
        let half_life = config.half_life_ms;
        if let Some((_, affinity)) = self.categories.iter_mut().find(|(c, _)| *c == category) {
            affinity.add(weight, ts_ms, half_life);
            return;
        }
        let mut affinity = Decayed::default();
        affinity.add(weight, ts_ms, half_life);
        if self.categories.len() < config.max_categories {
            self.categories.push((category, affinity));
            return;
        }
        let weakest = self
            .categories
            .iter()
            .enumerate()
            .min_by(|a, b| {
                let va = a.1 .1.value_at(ts_ms, half_life);
                let vb = b.1 .1.value_at(ts_ms, half_life);
                va.total_cmp(&vb)
            })
            .map(|(i, _)| i)
            .expect("categories is full, so not empty");
        self.categories[weakest] = (category, affinity);
    }

    /// The category with the highest decayed affinity at `ts_ms`.
    pub fn top_category(&self, ts_ms: i64, half_life_ms: i64) -> Option<u32> {
        self.categories
            .iter()
            .max_by(|a, b| {
                a.1.value_at(ts_ms, half_life_ms)
                    .total_cmp(&b.1.value_at(ts_ms, half_life_ms))
                    .then(b.0.cmp(&a.0))
            })
            .map(|(c, _)| *c)
    }

    /// Approximate heap bytes held by this profile.
    pub fn heap_bytes(&self) -> usize {
        self.recent.capacity() * std::mem::size_of::<RecentItem>()
            + self.purchased_order.capacity() * 4
            + self.purchased.capacity() * 5
            + self.categories.capacity() * std::mem::size_of::<(u32, Decayed)>()
    }
}

/// One event as the profile sees it: ids already interned.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    pub item: u32,
    pub kind: EventType,
    pub ts_ms: i64,
    pub weight: f32,
    pub category: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ProfileConfig {
        ProfileConfig {
            max_recent_items: 3,
            max_purchased_items: 2,
            max_categories: 2,
            half_life_ms: 1000,
        }
    }

    fn see(
        profile: &mut UserProfile,
        item: u32,
        kind: EventType,
        ts_ms: i64,
        category: Option<u32>,
    ) {
        let observation = Observation {
            item,
            kind,
            ts_ms,
            weight: 1.0,
            category,
        };
        profile.record(observation, &config());
    }

    #[test]
    fn recent_items_are_distinct_bounded_and_keep_the_strongest_type() {
        let mut p = UserProfile::new(0);
        see(&mut p, 1, EventType::AddToCart, 0, None);
        see(&mut p, 2, EventType::View, 1, None);
        see(&mut p, 1, EventType::View, 2, None);
        let items: Vec<u32> = p.recent.iter().map(|r| r.item).collect();
        assert_eq!(items, vec![2, 1]);
        assert_eq!(p.recent[1].strongest, EventType::AddToCart);
        assert_eq!(p.recent[1].events, 2);
        for item in 3..6 {
            see(&mut p, item, EventType::View, 3, None);
        }
        assert_eq!(p.recent.len(), 3);
        assert_eq!(p.counts[EventType::View.index()], 5);
        assert_eq!((p.first_seen_ms, p.last_seen_ms), (0, 3));
    }

    #[test]
    fn purchases_are_bounded_and_forget_the_oldest() {
        let mut p = UserProfile::new(0);
        for item in [7, 8, 7, 9] {
            see(&mut p, item, EventType::Purchase, 0, None);
        }
        assert!(!p.has_purchased(7));
        assert!(p.has_purchased(8) && p.has_purchased(9));
        assert_eq!(p.purchased().collect::<Vec<_>>(), vec![8, 9]);
    }

    #[test]
    fn category_affinity_decays_and_the_weakest_is_replaced() {
        let mut p = UserProfile::new(0);
        for item in 0..5 {
            see(&mut p, item, EventType::View, 0, Some(10));
        }
        see(&mut p, 5, EventType::View, 2000, Some(20));
        assert_eq!(
            p.top_category(2000, 1000),
            Some(10),
            "5 decayed by 4 = 1.25 > 1"
        );
        see(&mut p, 6, EventType::View, 2000, Some(20));
        assert_eq!(p.top_category(2000, 1000), Some(20));
        see(&mut p, 7, EventType::View, 3000, Some(30));
        let kept: Vec<u32> = p.categories.iter().map(|(c, _)| *c).collect();
        assert_eq!(kept, vec![30, 20]);
    }
}
