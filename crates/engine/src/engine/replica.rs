//! Item-model replication between instances: every `apply` on the instance that owns the user
//! can record what it did to the shared, item-side model (a [`ModelUpdate`]), and every other
//! instance applies that update to its own replica. Ids travel by name: each replica interns
//! items in its own order.
//!
//! The merge rule: co-occurrence and popularity replay the observation itself (the pair
//! increments it causes depend only on the event and the user's window of partners, which
//! travel with it), so replicas that apply the same updates hold the same counts; item factors
//! are **summed deltas** — the owner's SGD steps move its replica at once, and the others add
//! the same change when the update reaches them, later and in another order than the owner.
//! What that lag costs in quality is measured by `eval --instances N`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::item_side::{ItemSide, LiveItems, Seen};
use super::{apply_listing, intern_item, Engine, ItemModel};
use crate::catalog::CatalogUpdate;
use crate::config::EngineConfig;
use crate::cooccurrence::PairEvent;
use crate::decay::Decayed;
use crate::event::{Event, EventType};
use crate::profile::RecentItem;

/// What travels on the `model-updates` topic: what an event did to the item side, or a catalog
/// listing the publishing instance consumed (each catalog partition goes to one instance of the
/// group; the others learn the listing this way).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ReplicaUpdate {
    Learned(ModelUpdate),
    Listing(CatalogUpdate),
}

impl ReplicaUpdate {
    /// The item it is about: the message key.
    pub fn item_id(&self) -> &str {
        match self {
            ReplicaUpdate::Learned(update) => &update.item_id,
            ReplicaUpdate::Listing(update) => update.item_id(),
        }
    }
}

/// What one applied event did to the item-side model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelUpdate {
    pub item_id: String,
    pub category: Option<String>,
    pub weight: f32,
    pub ts_ms: i64,
    /// The user's co-occurrence window before the event: (item id, last time).
    pub partners: Vec<(String, i64)>,
    pub new_to_user: bool,
    pub first_purchase: bool,
    /// (item id, change of its vector): the event's item and its sampled negatives.
    pub factor_deltas: Vec<(String, Vec<f32>)>,
}

impl ModelUpdate {
    pub(super) fn begin(
        items: &ItemModel,
        event: &Event,
        pair: &PairEvent,
        config: &EngineConfig,
    ) -> ModelUpdate {
        let window = config.cooccurrence.window_items;
        let start = pair.history.len().saturating_sub(window);
        ModelUpdate {
            item_id: event.item_id.clone(),
            category: event.category.clone(),
            weight: pair.weight,
            ts_ms: event.ts_ms,
            partners: pair
                .history
                .range(start..)
                .map(|p| (items.ids.name(p.item).to_owned(), p.last_ts_ms))
                .collect(),
            new_to_user: pair.new_to_user,
            first_purchase: pair.first_purchase,
            factor_deltas: Vec::new(),
        }
    }
}

impl Engine {
    /// Makes `apply` record a [`ModelUpdate`] per learned event (off by default).
    pub fn publish_model_updates(&mut self, on: bool) {
        self.shard.replicate = on;
    }

    /// Makes `apply` learn only the user side and return the item side as work for the items'
    /// owners (`Effects::item_work`) instead of applying it: this engine's item model becomes a
    /// read model, which only interns the items and categories it meets (off by default).
    pub fn defer_item_work(&mut self, on: bool) {
        self.shard.defer = on;
    }

    /// Applies another instance's update to this replica of the item model. User-side state
    /// is not touched (it lives with the instance that owns the user).
    pub fn apply_model_update(&mut self, update: &ModelUpdate) {
        let mut items = self
            .items
            .write()
            .expect("a worker panicked while updating the item model");
        apply_learned(&mut items, update, &self.config);
    }
}

/// Applies another instance's update to an item model (a replica shared by workers is locked
/// by the caller). Catalog triggers fire only on the instance that consumed the listing.
pub fn apply_update(items: &mut ItemModel, update: &ReplicaUpdate, config: &EngineConfig) {
    match update {
        ReplicaUpdate::Learned(learned) => apply_learned(items, learned, config),
        ReplicaUpdate::Listing(listing) => {
            apply_listing(items, listing, config);
        }
    }
}

fn apply_learned(items: &mut ItemModel, update: &ModelUpdate, config: &EngineConfig) {
    let (item, _) = intern_item(items, &update.item_id, config);
    if let Some(name) = &update.category {
        let category = items.categories.intern(name);
        LiveItems::new(items, config).category(item, category);
    }
    let history: VecDeque<RecentItem> = update
        .partners
        .iter()
        .map(|(id, last_ts_ms)| RecentItem {
            item: intern_item(items, id, config).0,
            strongest: EventType::View,
            events: 1,
            last_ts_ms: *last_ts_ms,
            interest: Decayed::default(),
        })
        .collect();
    items.cooccurrence.observe(PairEvent {
        item,
        weight: update.weight,
        ts_ms: update.ts_ms,
        history: &history,
        new_to_user: update.new_to_user,
        first_purchase: update.first_purchase,
    });
    for (id, delta) in &update.factor_deltas {
        let (target, _) = intern_item(items, id, config);
        for (value, change) in items.factors.get_mut(target).iter_mut().zip(delta) {
            *value += change;
        }
    }
    // Segment trending stays with the instance that knows the user's segment.
    let seen = Seen {
        item,
        weight: update.weight,
        ts_ms: update.ts_ms,
        segment: None,
    };
    LiveItems::new(items, config).seen(seen);
    items.latest_ts_ms = items.latest_ts_ms.max(update.ts_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ranking::Filters;

    fn events() -> Vec<Event> {
        let mut events = Vec::new();
        for n in 0..40i64 {
            let user = format!("u{}", n % 4);
            let mut event = Event::new(EventType::View, &user, &format!("i{}", n % 7), 1_000 + n);
            event.category = Some(format!("c{}", n % 3));
            events.push(event);
        }
        events
    }

    /// With everything delivered, a replica fed only updates holds the owner's item model:
    /// the same neighbours, trending and vectors.
    #[test]
    fn a_replica_fed_every_update_matches_the_owner() {
        let mut owner = Engine::new(EngineConfig::default());
        owner.publish_model_updates(true);
        let mut replica = Engine::new(EngineConfig::default());
        for event in events() {
            for update in owner.apply(&event).effects.model_updates {
                replica.apply_model_update(&update);
            }
        }
        for id in ["i0", "i3", "i6"] {
            let (o, r) = (
                owner.item_index(id).unwrap(),
                replica.item_index(id).unwrap(),
            );
            let names = |engine: &Engine, item| {
                engine.item_ids(engine.similar_items(item, 5).into_iter().map(|s| s.0))
            };
            assert_eq!(names(&owner, o), names(&replica, r), "neighbours of {id}");
            let (ov, rv) = (
                owner.read().factors.get(o).to_vec(),
                replica.read().factors.get(r).to_vec(),
            );
            for (a, b) in ov.iter().zip(&rv) {
                assert!((a - b).abs() < 1e-5, "vector of {id}: {ov:?} vs {rv:?}");
            }
        }
        let trending = |engine: &Engine| {
            let list = engine.recommend("stranger", 5, &Filters::default());
            engine.item_ids(list.iter().map(|s| s.item))
        };
        assert_eq!(trending(&owner), trending(&replica));
        assert_eq!(replica.user_count(), 0, "no user state travels");
    }
}
