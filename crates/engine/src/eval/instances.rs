//! Several streamrec instances simulated in one process, for `eval --instances N`: users are
//! partitioned across instances as Kafka partitions them across members (by a hash of the
//! user id), and each instance owns its users' state. The item side follows one of two
//! topologies (`Topology`), each with its lag of `sync_every` events:
//! - **replicated** (today's `model-updates`): every instance holds a replica of the item model,
//!   learns into it at once, and receives the others' updates in batches;
//! - **owned**: instances learn only the user side and send the item side as work to the
//!   items' owners, which apply it in batches and publish one record per changed item
//!   (`ItemView`); every instance ranks and learns against the read model those records make.
//!   The owners of disjoint items together hold one model, so one owner stands for all of
//!   them, and the read model is one for every instance: the instance count changes nothing but
//!   the users' split.

use rustc_hash::FxHashSet;
use serde::Serialize;

use crate::catalog::CatalogUpdate;
use crate::config::EngineConfig;
use crate::engine::{
    apply_update, Applied, Engine, ItemKeys, ItemOwner, ItemWork, ModelUpdate, Outcome,
    Publication, ReplicaUpdate, WorkBatch,
};
use crate::event::Event;
use crate::online::OnlineTally;
use crate::ranking::Filters;

/// How the item side is shared between instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    #[default]
    Replicated,
    Owned,
}

#[derive(Clone, Copy)]
enum Travel {
    Work,
    View,
    Lists,
}

/// Item partitions of the simulated item-keyed topic.
pub const ITEM_PARTITIONS: u32 = 24;

pub struct Instances {
    engines: Vec<Engine>,
    config: EngineConfig,
    topology: Topology,
    /// Replicated: updates not delivered yet, with the instance that made them.
    pending: Vec<(usize, ModelUpdate)>,
    /// Owned: the owners, and the work not delivered to them yet.
    owner: ItemOwner,
    work: ItemWork,
    /// Owned: the read model's items by key, for installing records.
    keys: ItemKeys,
    /// Owned: the work's records (one per item partition with work at a sync) and their
    /// encoded bytes, as an item-keyed topic would carry them.
    pub work_records: u64,
    pub work_bytes: u64,
    /// Owned: the read model's records and their encoded bytes: views (one per item changed
    /// since the last sync) and lists (of those whose lists' members changed).
    pub view_records: u64,
    pub view_bytes: u64,
    pub list_records: u64,
    pub list_bytes: u64,
    sync_every: usize,
    since_sync: usize,
}

impl Instances {
    pub fn new(
        (count, topology): (usize, Topology),
        sync_every: usize,
        config: &EngineConfig,
    ) -> Instances {
        let engines = match topology {
            Topology::Replicated => (0..count.max(1))
                .map(|_| {
                    let mut engine = Engine::new(config.clone());
                    engine.publish_model_updates(count > 1);
                    engine
                })
                .collect(),
            // One read model for all: the engines of one process's workers share theirs.
            Topology::Owned => {
                let mut engines = Engine::workers(config, count);
                for engine in &mut engines {
                    engine.defer_item_work(true);
                }
                engines
            }
        };
        Instances {
            engines,
            config: config.clone(),
            topology,
            pending: Vec::new(),
            owner: ItemOwner::new(config),
            work: ItemWork::default(),
            keys: ItemKeys::default(),
            work_records: 0,
            work_bytes: 0,
            view_records: 0,
            view_bytes: 0,
            list_records: 0,
            list_bytes: 0,
            sync_every: sync_every.max(1),
            since_sync: 0,
        }
    }

    /// Owned: views wait until their item moved by more than this share.
    pub fn set_significance(&mut self, share: f32) {
        self.owner.significance = share;
    }

    pub fn engine(&self, index: usize) -> &Engine {
        &self.engines[index]
    }

    /// The instance that owns a user (its partition's member).
    pub fn index_of(&self, user_id: &str) -> usize {
        (xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()) % self.engines.len() as u64) as usize
    }

    /// Every instance reads the whole catalog topic, owners too.
    pub fn apply_catalog(&mut self, update: &CatalogUpdate) {
        for engine in &mut self.engines {
            engine.apply_catalog(update);
        }
        if self.topology == Topology::Owned {
            let listing = ReplicaUpdate::Listing(update.clone());
            apply_update(&mut self.owner.items, &listing, &self.config);
        }
    }

    /// The user's instance learns; what others need waits for the next sync.
    #[cfg(test)]
    pub fn apply(&mut self, event: &Event) {
        self.apply_at(self.index_of(&event.user_id), event);
    }

    /// The user's instance (`index_of`, known to the caller) learns; what others need waits
    /// for the next sync.
    pub fn apply_at(&mut self, index: usize, event: &Event) -> Applied {
        let engine = &mut self.engines[index];
        let Outcome { applied, effects } = engine.apply(event);
        self.pending
            .extend(effects.model_updates.into_iter().map(|u| (index, u)));
        self.work.append(effects.item_work);
        self.since_sync += 1;
        if self.since_sync >= self.sync_every {
            self.sync();
        }
        applied
    }

    /// Shows the user (of instance `index`) the list `run` would publish now: online metrics
    /// judge the user's next events against it (see `online`).
    pub fn show_at(&mut self, index: usize, user_id: &str, top_n: usize, filters: &Filters) {
        let engine = &mut self.engines[index];
        let list = engine.recommend(user_id, top_n, filters);
        engine.show(user_id, &list);
    }

    /// The online counters of every instance, summed.
    pub fn online_tally(&self) -> OnlineTally {
        let mut total = OnlineTally::default();
        for engine in &self.engines {
            total.add(engine.online_tally());
        }
        total
    }

    pub fn sync(&mut self) {
        self.since_sync = 0;
        match self.topology {
            Topology::Replicated => self.deliver_updates(),
            Topology::Owned => self.deliver_work(),
        }
    }

    /// Delivers every pending update to every replica but its origin's.
    fn deliver_updates(&mut self) {
        for (origin, update) in self.pending.drain(..) {
            for (index, engine) in self.engines.iter_mut().enumerate() {
                if index != origin {
                    engine.apply_model_update(&update);
                }
            }
        }
    }

    /// The work travels to the owners in one encoded batch per item partition; they apply it
    /// and publish a record of each item it changed, which the read model installs.
    fn deliver_work(&mut self) {
        let shared = self.engines[0].shared_items();
        let mut read = shared.write().expect("not poisoned");
        for (_, batch) in self.work.batches(&read, ITEM_PARTITIONS) {
            let batch: WorkBatch = self.travel(&batch, Travel::Work);
            (self.owner.apply(batch, &self.config)).expect("a batch made here passes its check");
        }
        self.work.clear();
        let publication = self.owner.publish();
        let travelled = Publication {
            views: (publication.views.iter())
                .map(|view| self.travel(view, Travel::View))
                .collect(),
            lists: (publication.lists.iter())
                .map(|lists| self.travel(lists, Travel::Lists))
                .collect(),
        };
        let installed = self.keys.install(&mut read, &travelled, &self.config);
        assert!(installed.refused.is_empty(), "records made here pass");
    }

    /// Encodes and decodes a record as a topic would carry it, counting it.
    fn travel<T: serde::Serialize + serde::de::DeserializeOwned>(
        &mut self,
        record: &T,
        travel: Travel,
    ) -> T {
        let standard = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(record, standard).expect("a record encodes");
        let (records, total) = match travel {
            Travel::Work => (&mut self.work_records, &mut self.work_bytes),
            Travel::View => (&mut self.view_records, &mut self.view_bytes),
            Travel::Lists => (&mut self.list_records, &mut self.list_bytes),
        };
        *records += 1;
        *total += bytes.len() as u64;
        (bincode::serde::decode_from_slice(&bytes, standard))
            .expect("a record decodes")
            .0
    }

    /// Users over all instances; items as the first replica knows them.
    pub fn user_count(&self) -> usize {
        self.engines.iter().map(Engine::user_count).sum()
    }

    /// Distinct items among (instance, item index) pairs.
    pub fn distinct_items(&self, items: impl Iterator<Item = (usize, u32)>) -> usize {
        if self.engines.len() == 1 {
            return items.count();
        }
        let names: FxHashSet<String> = items
            .map(|(instance, item)| self.engines[instance].item_id(item))
            .collect();
        names.len()
    }

    pub fn count(&self) -> usize {
        self.engines.len()
    }

    pub fn topology(&self) -> Topology {
        self.topology
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    #[test]
    fn users_stay_with_one_instance_and_items_reach_every_replica_at_each_sync() {
        let mut instances = Instances::new((3, Topology::Replicated), 4, &EngineConfig::default());
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

    #[test]
    fn owned_instances_learn_the_item_side_only_at_each_sync_and_share_one_read_model() {
        let mut instances = Instances::new((3, Topology::Owned), 4, &EngineConfig::default());
        for n in 0..8i64 {
            let event = Event::new(EventType::View, &format!("u{n}"), &format!("i{}", n % 3), n);
            instances.apply(&event);
        }
        assert_eq!(instances.user_count(), 8);
        let pairs_of = |instances: &Instances| {
            let engine = instances.engine(instances.index_of("u0"));
            let item = engine.item_index("i0").unwrap();
            engine.similar_items(item, 5).len()
        };
        let before = pairs_of(&instances);
        // u0 now views i1 after i0: a new pair that waits for the next sync.
        for n in 0..3 {
            instances.apply(&Event::new(
                EventType::View,
                "u0",
                &format!("i{}", n + 1),
                10 + n as i64,
            ));
        }
        assert_eq!(pairs_of(&instances), before, "not before the sync");
        instances.apply(&Event::new(EventType::View, "u9", "i0", 20));
        assert!(
            pairs_of(&instances) > before,
            "the owners' new pairs are read after it"
        );
        assert!(instances.work_records > 0 && instances.work_bytes > 0);
        assert!(instances.view_records >= 4, "i0 to i3 changed");
        assert!(instances.list_records > 0, "i0 gained neighbours");
        for index in 0..3 {
            assert_eq!(
                instances.engine(index).item_count(),
                4,
                "one read model for all"
            );
        }
    }
}
