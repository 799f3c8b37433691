//! A deterministic synthetic shopper stream: Zipf item popularity, taste clusters over
//! categories, and sessions that run a view → cart → purchase funnel. Used by benchmarks and the
//! demo; the same seed gives the same stream.

use std::collections::VecDeque;

use crate::event::{Event, EventType};
use crate::rng::SplitMix64;

#[derive(Clone, Debug)]
pub struct ShopperConfig {
    pub users: usize,
    pub items: usize,
    pub clusters: usize,
    pub categories_per_cluster: usize,
    /// Zipf exponent of item popularity within a cluster.
    pub zipf_exponent: f64,
    /// Chance that a session's next view strays outside the user's taste cluster.
    pub explore: f64,
    pub cart_rate: f64,
    pub purchase_rate: f64,
    pub start_ms: i64,
    pub seed: u64,
}

impl Default for ShopperConfig {
    fn default() -> Self {
        ShopperConfig {
            users: 10_000,
            items: 50_000,
            clusters: 8,
            categories_per_cluster: 25,
            zipf_exponent: 1.1,
            explore: 0.1,
            cart_rate: 0.1,
            purchase_rate: 0.3,
            start_ms: 1_700_000_000_000,
            seed: 7,
        }
    }
}

/// An endless iterator of events.
impl ShopperConfig {
    /// The category of item `i{item}`: one of its cluster's categories.
    pub fn category_of(&self, item: usize) -> String {
        let cluster = item % self.clusters;
        let category = cluster * self.categories_per_cluster + item % self.categories_per_cluster;
        format!("c{category}")
    }
}

pub struct Shoppers {
    config: ShopperConfig,
    rng: SplitMix64,
    /// Cumulative Zipf weights over a cluster's items (the same shape for every cluster).
    cdf: Vec<f64>,
    clock_ms: i64,
    session: Session,
    next_event: u64,
}

#[derive(Default)]
struct Session {
    user: usize,
    views_left: usize,
    pending: VecDeque<Event>,
}

impl Shoppers {
    pub fn new(config: ShopperConfig) -> Shoppers {
        let per_cluster = (config.items / config.clusters.max(1)).max(1);
        let mut cdf = Vec::with_capacity(per_cluster);
        let mut total = 0.0;
        for rank in 1..=per_cluster {
            total += 1.0 / (rank as f64).powf(config.zipf_exponent);
            cdf.push(total);
        }
        Shoppers {
            rng: SplitMix64::new(config.seed),
            cdf,
            clock_ms: config.start_ms,
            session: Session::default(),
            next_event: 0,
            config,
        }
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick_item(&mut self, cluster: usize) -> usize {
        let target = self.uniform() * self.cdf.last().copied().unwrap_or(1.0);
        let rank = self.cdf.partition_point(|&c| c < target);
        cluster + rank * self.config.clusters
    }

    fn event(&mut self, kind: EventType, user: usize, item: usize) -> Event {
        self.clock_ms += 1 + self.rng.below(20) as i64;
        self.next_event += 1;
        let mut event = Event::new(
            kind,
            &format!("u{user}"),
            &format!("i{item}"),
            self.clock_ms,
        );
        event.event_id = Some(format!("e{}", self.next_event));
        event.category = Some(self.config.category_of(item));
        event.price = Some(5.0 + (item % 200) as f64);
        event
    }

    fn start_session(&mut self) {
        self.session.user = self.rng.below(self.config.users);
        self.session.views_left = 1 + self.rng.below(8);
    }

    fn next_view(&mut self) -> Event {
        let user = self.session.user;
        let taste = user % self.config.clusters;
        let cluster = if self.uniform() < self.config.explore {
            self.rng.below(self.config.clusters)
        } else {
            taste
        };
        let item = self.pick_item(cluster);
        let view = self.event(EventType::View, user, item);
        if self.uniform() < self.config.cart_rate {
            let cart = self.event(EventType::AddToCart, user, item);
            self.session.pending.push_back(cart);
            if self.uniform() < self.config.purchase_rate {
                let mut purchase = self.event(EventType::Purchase, user, item);
                purchase.quantity = Some(1);
                self.session.pending.push_back(purchase);
            }
        }
        view
    }
}

impl Iterator for Shoppers {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if let Some(event) = self.session.pending.pop_front() {
            return Some(event);
        }
        if self.session.views_left == 0 {
            self.start_session();
        }
        self.session.views_left -= 1;
        Some(self.next_view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_deterministic_time_ordered_and_funnel_shaped() {
        let config = ShopperConfig {
            users: 50,
            items: 500,
            ..ShopperConfig::default()
        };
        let a: Vec<Event> = Shoppers::new(config.clone()).take(2000).collect();
        let b: Vec<Event> = Shoppers::new(config).take(2000).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        let count = |kind| a.iter().filter(|e| e.kind == kind).count();
        let (views, carts, buys) = (
            count(EventType::View),
            count(EventType::AddToCart),
            count(EventType::Purchase),
        );
        assert!(
            views > carts && carts > buys && buys > 0,
            "{views} {carts} {buys}"
        );
    }
}
