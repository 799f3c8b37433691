//! The read model of the item side: what an instance needs of items it does not own, one
//! record per item, published by the item's owner after the item changed. A reader ranks
//! and learns its users' side against these records; it never learns the items' side.
//!
//! A record is the item's result, not its learning: its category, vector, popularity, the
//! marginals and the neighbour lists (bounded by `cooccurrence.neighbors_per_item`) with pair
//! counts, so that a reader scores pairs from current marginals as the owner does. Every
//! instance interns in its own order, so a record names its item, and its neighbours by key
//! (`item_key`, a 64-bit hash of the id): a reader resolves a key with one integer lookup
//! instead of hashing and comparing a name, which dominated the cost of installing a record
//! that named its neighbours. A neighbour is known by the time its key arrives, since an item
//! enters a pair only after its own first work, whose record names it.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::batch_check::BatchError;
use super::item_side::{ItemOp, ItemWork, Seen};
use super::work_batch::{item_key, WorkBatch};
use super::{intern_item, popularity_scores, ItemModel, NO_CATEGORY};
use crate::config::EngineConfig;
use crate::cooccurrence::PairView;

/// One item as its owner publishes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemView {
    pub item: String,
    pub category: Option<String>,
    pub vector: Vec<f32>,
    /// Weighted entries into users' recent lists and first purchases (the pair scores'
    /// marginals).
    pub entries: f32,
    pub purchases: f32,
    /// Neighbours by co-occurrence and viewed-then-bought, `(item key, pair count)`, best
    /// first.
    pub similar: Vec<(u64, f32)>,
    pub bought_after: Vec<(u64, f32)>,
    /// Forward-decayed popularity relative to `landmark_ms` (see `popularity`).
    pub popularity: f64,
    pub landmark_ms: i64,
    /// Times the item was seen since its last record: a reader adds it to its negatives' pool
    /// as often, so negatives stay drawn in proportion to occurrences.
    pub seen: u32,
}

/// Why a reader refused a record: it came from another process, so it is checked before the
/// reader interns anything.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ViewError {
    #[error("item view of {item:?}: vector has {found} numbers, the rank is {rank}")]
    Rank {
        item: String,
        found: usize,
        rank: usize,
    },
    #[error("item view of {item:?}: {list} lists {found} neighbours, at most {limit} are kept")]
    TooManyNeighbours {
        item: String,
        list: &'static str,
        found: usize,
        limit: usize,
    },
    #[error("item view of {item:?}: {field} is not a finite number of at least 0")]
    NotFinite { item: String, field: &'static str },
}

/// The owner of some items: applies the work batches addressed to them and publishes one
/// record per changed item when asked (at most one per item per publication, however often
/// it changed in between).
pub struct ItemOwner {
    pub items: ItemModel,
    /// Items changed since the last publication, with how often each was seen.
    changed: FxHashMap<u32, u32>,
}

impl ItemOwner {
    pub fn new(config: &EngineConfig) -> ItemOwner {
        ItemOwner::from_items(ItemModel::new(config))
    }

    /// The owner of items restored from a checkpoint: nothing waits to be published.
    pub fn from_items(items: ItemModel) -> ItemOwner {
        ItemOwner {
            items,
            changed: FxHashMap::default(),
        }
    }

    /// Applies a batch; one that does not pass its check is refused and changes nothing.
    pub fn apply(&mut self, batch: WorkBatch, config: &EngineConfig) -> Result<(), BatchError> {
        let work = batch.into_work(&mut self.items, config)?;
        work.apply_to(&mut self.items, config);
        note_changes(&work, &mut self.changed);
        Ok(())
    }

    /// Items changed since the last publication.
    pub fn changed(&self) -> impl Iterator<Item = u32> + '_ {
        self.changed.keys().copied()
    }

    /// The records of the items changed since the last publication, in item order.
    pub fn publish(&mut self) -> Vec<ItemView> {
        let mut changed: Vec<(u32, u32)> = self.changed.drain().collect();
        changed.sort_unstable();
        let view = |(item, seen)| ItemView::of(&self.items, item, seen);
        changed.into_iter().map(view).collect()
    }
}

/// Adds the items `work` changes to `changed`, counting how often each was seen.
fn note_changes(work: &ItemWork, changed: &mut FxHashMap<u32, u32>) {
    for op in &work.ops {
        let seen = changed.entry(op.item()).or_default();
        if let ItemOp::Seen(Seen { .. }) = op {
            *seen += 1;
        }
    }
}

impl ItemView {
    /// The owner's record of `item`.
    pub fn of(owner: &ItemModel, item: u32, seen: u32) -> ItemView {
        let name = |item: u32| owner.ids.name(item);
        let keyed = |list: Vec<(u32, f32)>| {
            let key = |(item, count)| (item_key(name(item)), count);
            list.into_iter().map(key).collect()
        };
        let category = owner.category_of[item as usize];
        let pairs = owner.cooccurrence.view(item);
        let (popularity, landmark) = owner.popularity.published(item);
        ItemView {
            item: name(item).to_owned(),
            category: (category != NO_CATEGORY).then(|| owner.categories.name(category).to_owned()),
            vector: owner.factors.get(item).to_vec(),
            entries: pairs.entries,
            purchases: pairs.purchases,
            similar: keyed(pairs.similar),
            bought_after: keyed(pairs.bought_after),
            popularity,
            landmark_ms: landmark.unwrap_or(0),
            seen,
        }
    }

    /// Whether a reader can install the record.
    pub fn check(&self, config: &EngineConfig) -> Result<(), ViewError> {
        let rank = config.factorization.rank;
        if self.vector.len() != rank {
            return Err(ViewError::Rank {
                item: self.item.clone(),
                found: self.vector.len(),
                rank,
            });
        }
        let limit = config.cooccurrence.neighbors_per_item;
        for (list, neighbours) in [
            ("similar", &self.similar),
            ("bought_after", &self.bought_after),
        ] {
            if neighbours.len() > limit {
                return Err(ViewError::TooManyNeighbours {
                    item: self.item.clone(),
                    list,
                    found: neighbours.len(),
                    limit,
                });
            }
        }
        let counts = (self.similar.iter()).chain(&self.bought_after);
        let numbers = [
            ("vector", self.vector.iter().all(|v| v.is_finite())),
            ("entries", count_ok(self.entries)),
            ("purchases", count_ok(self.purchases)),
            ("a neighbour's count", counts.map(|n| n.1).all(count_ok)),
            (
                "popularity",
                self.popularity.is_finite() && self.popularity >= 0.0,
            ),
        ];
        match numbers.into_iter().find(|(_, ok)| !ok) {
            Some((field, _)) => Err(ViewError::NotFinite {
                item: self.item.clone(),
                field,
            }),
            None => Ok(()),
        }
    }

    /// Puts the record in place of what `read` knew of the item, its neighbours resolved by
    /// `keys`; neighbours not known yet are left out (a later record brings them).
    fn install(&self, read: &mut ItemModel, keys: &ItemKeys, config: &EngineConfig) -> usize {
        let item = read
            .ids
            .get(&self.item)
            .expect("interned by the reader first");
        let mut unknown = 0;
        let mut resolve = |list: &[(u64, f32)]| -> Vec<(u32, f32)> {
            let known = list.iter().filter_map(|&(key, count)| {
                let item = keys.get(key);
                unknown += usize::from(item.is_none());
                item.map(|item| (item, count))
            });
            known.collect()
        };
        let pairs = PairView {
            entries: self.entries,
            purchases: self.purchases,
            similar: resolve(&self.similar),
            bought_after: resolve(&self.bought_after),
        };
        read.cooccurrence.install_view(item, &pairs);
        read.factors.get_mut(item).copy_from_slice(&self.vector);
        if let Some(name) = &self.category {
            let category = read.categories.intern(name);
            read.category_of[item as usize] = category;
            read.catalog.observe_event_category(item, category, name);
        }
        read.popularity
            .install(item, self.popularity, self.landmark_ms);
        let cap = config.content.popular_per_attribute;
        let scores = popularity_scores(&read.popularity);
        read.catalog.observe_popularity(item, cap, scores);
        for _ in 0..self.seen.min(config.factorization.sample_pool as u32) {
            read.pool.push(item);
        }
        unknown
    }
}

/// A read model's items by key: kept up to date with the items it interns, whatever interned
/// them (records, or the reader's own events).
#[derive(Clone, Debug, Default)]
pub struct ItemKeys {
    index: FxHashMap<u64, u32>,
    indexed: usize,
}

impl ItemKeys {
    fn catch_up(&mut self, read: &ItemModel) {
        for item in self.indexed..read.ids.len() {
            let key = item_key(read.ids.name(item as u32));
            self.index.insert(key, item as u32);
        }
        self.indexed = read.ids.len();
    }

    fn get(&self, key: u64) -> Option<u32> {
        self.index.get(&key).copied()
    }
}

/// What installing one publication's records did.
#[derive(Debug, Default, PartialEq)]
pub struct Installed {
    pub records: usize,
    /// Neighbours left out because no record had named their key yet.
    pub unknown_neighbours: usize,
    /// Records refused, each with why; the others are installed.
    pub refused: Vec<ViewError>,
}

impl ItemKeys {
    /// Installs records into `read`: first their items (so that records of one publication
    /// resolve each other's keys), then their state. A record that does not pass
    /// [`ItemView::check`] is refused before anything of it is interned.
    pub fn install(
        &mut self,
        read: &mut ItemModel,
        views: &[ItemView],
        config: &EngineConfig,
    ) -> Installed {
        let mut installed = Installed::default();
        let mut good = Vec::with_capacity(views.len());
        for view in views {
            match view.check(config) {
                Ok(()) => good.push(view),
                Err(error) => installed.refused.push(error),
            }
        }
        for view in &good {
            intern_item(read, &view.item, config);
        }
        self.catch_up(read);
        for view in good {
            installed.unknown_neighbours += view.install(read, self, config);
            installed.records += 1;
        }
        installed
    }
}

fn count_ok(count: f32) -> bool {
    count.is_finite() && count >= 0.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::event::{Event, EventType};

    fn events() -> Vec<Event> {
        (0..400i64)
            .map(|n| {
                let (user, item) = (format!("u{}", n % 11), format!("i{}", (n * 7) % 19));
                let kind = [EventType::View, EventType::Purchase][(n % 4 == 0) as usize];
                let mut event = Event::new(kind, &user, &item, n * 1_000);
                event.category = Some(format!("c{}", n % 3));
                event
            })
            .collect()
    }

    fn config() -> EngineConfig {
        let mut config = EngineConfig::default();
        // Negatives come from the pool, which records fill in item order, not event order.
        config.factorization.negatives = 0;
        config
    }

    fn learned(config: &EngineConfig) -> Engine {
        let mut engine = Engine::new(config.clone());
        for event in events() {
            engine.apply(&event);
        }
        engine
    }

    fn through_the_wire<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        let standard = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(value, standard).unwrap();
        bincode::serde::decode_from_slice(&bytes, standard)
            .unwrap()
            .0
    }

    /// A reader whose items are the owner's published records, after every event, ranks as
    /// one engine learning alone: the records carry all that ranking and the users' side read.
    #[test]
    fn a_reader_of_records_published_after_every_event_recommends_as_one_engine() {
        let config = config();
        let alone = learned(&config);
        let mut reader = Engine::new(config.clone());
        reader.defer_item_work(true);
        let mut owner = ItemOwner::new(&config);
        let mut keys = ItemKeys::default();
        for event in events() {
            let work = reader.apply(&event).effects.item_work;
            let shared = reader.shared_items();
            let mut read = shared.write().unwrap();
            for (_, batch) in work.batches(&read, 4) {
                owner.apply(through_the_wire(&batch), &config).unwrap();
            }
            let views: Vec<ItemView> = owner.publish().iter().map(through_the_wire).collect();
            let installed = keys.install(&mut read, &views, &config);
            assert_eq!(
                (installed.records, installed.unknown_neighbours),
                (views.len(), 0)
            );
        }
        assert_eq!(owner.changed().count(), 0, "every change published");
        let (alone_items, read) = (alone.read(), reader.read());
        assert_eq!(read.ids.len(), alone_items.ids.len());
        for item in 0..read.ids.len() as u32 {
            let name = read.ids.name(item);
            let theirs = alone_items.ids.get(name).unwrap();
            let similar = |e: &Engine, item| {
                let similar = e.similar_items(item, 10).into_iter();
                similar.map(|(i, s)| (e.item_id(i), s)).collect::<Vec<_>>()
            };
            assert_eq!(similar(&reader, item), similar(&alone, theirs), "{name}");
            assert_eq!(read.factors.get(item), alone_items.factors.get(theirs));
            let popularity = read.popularity.score(item);
            assert_eq!(popularity, alone_items.popularity.score(theirs), "{name}");
        }
        let filters = crate::ranking::Filters::default();
        for user in ["u0", "u4", "u10"] {
            let names = |e: &Engine| -> Vec<String> {
                let recs = e.recommend(user, 5, &filters);
                recs.iter().map(|s| e.item_id(s.item)).collect()
            };
            assert_eq!(names(&reader), names(&alone), "{user}");
        }
    }

    #[test]
    fn a_record_from_elsewhere_is_checked_before_anything_is_interned() {
        let config = config();
        let alone = learned(&config);
        let view = ItemView::of(&alone.read(), 0, 0);
        let mut read = ItemModel::new(&config);
        let mut short = view.clone();
        short.vector.pop();
        let mut nan = view.clone();
        nan.similar[0].1 = f32::NAN;
        let mut long = view.clone();
        long.similar = vec![(7, 1.0); 51];
        long.item = "long".into();
        let mut good = view.clone();
        good.item = "good".into();
        let records = [short, nan, long, good];
        let installed = ItemKeys::default().install(&mut read, &records, &config);
        assert_eq!(installed.records, 1);
        assert!(matches!(installed.refused[0], ViewError::Rank { .. }));
        assert_eq!(
            installed.refused[1],
            ViewError::NotFinite {
                item: view.item.clone(),
                field: "a neighbour's count"
            }
        );
        assert!(matches!(
            installed.refused[2],
            ViewError::TooManyNeighbours { found: 51, .. }
        ));
        assert_eq!(read.ids.len(), 1, "only the good record's item interned");
        assert_eq!(read.ids.name(0), "good");
    }

    #[test]
    fn a_neighbour_without_a_record_yet_is_left_out_until_a_later_record() {
        let config = config();
        let alone = learned(&config);
        let owned = alone.read();
        let item = (0..owned.ids.len() as u32)
            .find(|&i| !owned.cooccurrence.view(i).similar.is_empty())
            .unwrap();
        let record = ItemView::of(&owned, item, 0);
        let mut read = ItemModel::new(&config);
        let mut keys = ItemKeys::default();
        let first = keys.install(&mut read, std::slice::from_ref(&record), &config);
        assert_eq!(
            first.unknown_neighbours,
            record.similar.len() + record.bought_after.len()
        );
        let others: Vec<ItemView> = (0..owned.ids.len() as u32)
            .map(|i| ItemView::of(&owned, i, 0))
            .collect();
        let again = keys.install(&mut read, &others, &config);
        assert_eq!(again.unknown_neighbours, 0);
        let read_item = read.ids.get(&record.item).unwrap();
        assert_eq!(
            read.cooccurrence.view(read_item).similar.len(),
            record.similar.len()
        );
    }

    #[test]
    fn an_owner_publishes_each_changed_item_once_with_how_often_it_was_seen() {
        let config = config();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        let (i0, _) = intern_item(&mut read, "i0", &config);
        let (i2, _) = intern_item(&mut read, "i2", &config);
        let seen = |item, ts_ms| {
            ItemOp::Seen(Seen {
                item,
                weight: 1.0,
                ts_ms,
                segment: None,
            })
        };
        let category = read.categories.intern("c0");
        let work = ItemWork {
            ops: vec![
                ItemOp::Category { item: i2, category },
                seen(i2, 0),
                seen(i0, 0),
                seen(i2, 1),
            ],
            ..ItemWork::default()
        };
        for (_, batch) in work.batches(&read, 4) {
            owner.apply(batch, &config).unwrap();
        }
        let views = owner.publish();
        let published: Vec<(&str, u32)> = views.iter().map(|v| (&*v.item, v.seen)).collect();
        let mut expected = vec![("i2", 2), ("i0", 1)];
        expected.sort_by_key(|&(name, _)| owner.items.ids.get(name));
        assert_eq!(published, expected);
        assert_eq!(
            views
                .iter()
                .find(|v| v.item == "i2")
                .unwrap()
                .category
                .as_deref(),
            Some("c0")
        );
        assert!(owner.publish().is_empty(), "nothing changed since");
    }
}
