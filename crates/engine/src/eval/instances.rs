//! Several streamrec instances simulated in one process, for `eval --instances N`: users are
//! partitioned across instances as Kafka partitions them across members (by a hash of the
//! user id), each instance owns its users' state and a replica of the item model, and item-model
//! updates reach the other replicas in batches, every `sync_every` events — the lag of the
//! `model-updates` topic.

use rustc_hash::FxHashSet;

use crate::catalog::CatalogUpdate;
use crate::config::EngineConfig;
use crate::engine::{Engine, ModelUpdate};
use crate::event::Event;

pub struct Instances {
    engines: Vec<Engine>,
    /// Updates not delivered yet, with the instance that made them.
    pending: Vec<(usize, ModelUpdate)>,
    sync_every: usize,
    since_sync: usize,
}

impl Instances {
    pub fn new(count: usize, sync_every: usize, config: &EngineConfig) -> Instances {
        let engines = (0..count.max(1))
            .map(|_| {
                let mut engine = Engine::new(config.clone());
                engine.publish_model_updates(count > 1);
                engine
            })
            .collect();
        Instances {
            engines,
            pending: Vec::new(),
            sync_every: sync_every.max(1),
            since_sync: 0,
        }
    }

    pub fn engine(&self, index: usize) -> &Engine {
        &self.engines[index]
    }

    /// The instance that owns a user (its partition's member).
    pub fn index_of(&self, user_id: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()) % self.engines.len() as u64) as usize
    }

    /// Every instance reads the whole catalog topic.
    pub fn apply_catalog(&mut self, update: &CatalogUpdate) {
        for engine in &mut self.engines {
            engine.apply_catalog(update);
        }
    }

    /// The owner learns; its item-model updates wait for the next sync.
    pub fn apply(&mut self, event: &Event) {
        let index = self.index_of(&event.user_id);
        let engine = &mut self.engines[index];
        let updates = engine.apply(event).effects.model_updates;
        self.pending.extend(updates.into_iter().map(|u| (index, u)));
        self.since_sync += 1;
        if self.since_sync >= self.sync_every {
            self.sync();
        }
    }

    /// Delivers every pending update to every replica but its origin's.
    pub fn sync(&mut self) {
        self.since_sync = 0;
        for (origin, update) in self.pending.drain(..) {
            for (index, engine) in self.engines.iter_mut().enumerate() {
                if index != origin {
                    engine.apply_model_update(&update);
                }
            }
        }
    }

    /// Users over all instances; items as the first replica knows them.
    pub fn user_count(&self) -> usize {
        self.engines.iter().map(Engine::user_count).sum()
    }

    /// Distinct items among (instance, item index) pairs.
    pub fn distinct_items(&self, items: &FxHashSet<(usize, u32)>) -> usize {
        if self.engines.len() == 1 {
            return items.len();
        }
        let names: FxHashSet<String> = items
            .iter()
            .map(|&(instance, item)| self.engines[instance].item_id(item))
            .collect();
        names.len()
    }

    pub fn count(&self) -> usize {
        self.engines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    #[test]
    fn users_stay_with_one_instance_and_items_reach_every_replica_at_each_sync() {
        let mut instances = Instances::new(3, 4, &EngineConfig::default());
        let users: Vec<String> = (0..12).map(|n| format!("u{n}")).collect();
        for (n, user) in users.iter().enumerate() {
            instances.apply(&Event::new(
                EventType::View,
                user,
                &format!("i{n}"),
                n as i64,
            ));
        }
        assert_eq!(
            instances.user_count(),
            12,
            "each user on exactly one instance"
        );
        let owners: FxHashSet<usize> = users.iter().map(|u| instances.index_of(u)).collect();
        assert!(owners.len() > 1, "users spread over instances");
        for engine in &instances.engines {
            assert_eq!(
                engine.item_count(),
                12,
                "12 events: three syncs delivered everything"
            );
        }
        instances.apply(&Event::new(EventType::View, "u0", "late", 100));
        let knows = instances
            .engines
            .iter()
            .filter(|e| e.item_index("late").is_some())
            .count();
        assert_eq!(knows, 1, "only the owner until the next sync");
    }
}
