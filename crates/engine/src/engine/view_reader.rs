//! Installing owners' records (see `item_view`) into an instance's read model.

use rustc_hash::FxHashMap;

use super::item_side::{ItemSide, LiveItems};
use super::item_view::{ItemLists, ItemView, Publication, ViewError};
use super::work_batch::item_key;
use super::{intern_item, popularity_scores, ItemModel};
use crate::config::EngineConfig;

/// A read model's items by key: kept up to date with the items it interns, whatever interned
/// them (records, or the instance's own events).
#[derive(Clone, Debug, Default)]
pub struct ItemKeys {
    index: FxHashMap<u64, u32>,
    indexed: usize,
}

/// What installing one publication did.
#[derive(Debug, Default, PartialEq)]
pub struct Installed {
    pub views: usize,
    pub lists: usize,
    /// Neighbours left out because no record had named their key yet (a later record of the
    /// item brings them).
    pub unknown_neighbours: usize,
    /// Records refused, each with why; the others are installed.
    pub refused: Vec<ViewError>,
}

impl ItemKeys {
    /// Installs a publication into `read`: first its items, so that its records resolve each
    /// other's keys, then views, then lists. A record that does not pass its check is
    /// refused before anything of it is interned.
    pub fn install(
        &mut self,
        read: &mut ItemModel,
        publication: &Publication,
        config: &EngineConfig,
    ) -> Installed {
        let mut installed = Installed::default();
        let mut checked = |result: Result<(), ViewError>| match result {
            Ok(()) => true,
            Err(error) => {
                installed.refused.push(error);
                false
            }
        };
        let views: Vec<&ItemView> = (publication.views.iter())
            .filter(|v| checked(v.check(config)))
            .collect();
        let lists: Vec<&ItemLists> = (publication.lists.iter())
            .filter(|l| checked(l.check(config)))
            .collect();
        let names = views
            .iter()
            .map(|v| &v.item)
            .chain(lists.iter().map(|l| &l.item));
        for name in names {
            intern_item(read, name, config);
        }
        self.catch_up(read);
        for view in views {
            install_view(read, view, config);
            installed.views += 1;
        }
        for list in lists {
            installed.unknown_neighbours += self.install_lists(read, list);
            installed.lists += 1;
        }
        installed
    }

    fn catch_up(&mut self, read: &ItemModel) {
        for item in self.indexed..read.ids.len() {
            let key = item_key(read.ids.name(item as u32));
            self.index.insert(key, item as u32);
        }
        self.indexed = read.ids.len();
    }

    /// Puts the lists in place, leaving out neighbours not known yet; returns how many.
    fn install_lists(&self, read: &mut ItemModel, lists: &ItemLists) -> usize {
        let item = read.ids.get(&lists.item).expect("interned first");
        let mut unknown = 0;
        let mut resolve = |list: &[(u64, f32)]| -> Vec<(u32, f32)> {
            let known = list.iter().filter_map(|&(key, count)| {
                let item = self.index.get(&key).copied();
                unknown += usize::from(item.is_none());
                item.map(|item| (item, count))
            });
            known.collect()
        };
        let (similar, bought_after) = (resolve(&lists.similar), resolve(&lists.bought_after));
        read.cooccurrence
            .install_lists(item, &similar, &bought_after);
        unknown
    }
}

/// Puts the view in place of what `read` knew of the item.
fn install_view(read: &mut ItemModel, view: &ItemView, config: &EngineConfig) {
    let item = read.ids.get(&view.item).expect("interned first");
    read.cooccurrence
        .install_marginals(item, view.entries, view.purchases);
    read.factors.get_mut(item).copy_from_slice(&view.vector);
    if let Some(name) = &view.category {
        let category = read.categories.intern(name);
        LiveItems::new(read, config).category(item, category);
    }
    read.popularity
        .install(item, view.popularity, view.landmark_ms);
    let cap = config.content.popular_per_attribute;
    let scores = popularity_scores(&read.popularity);
    read.catalog.observe_popularity(item, cap, scores);
    for _ in 0..view.seen.min(config.factorization.sample_pool as u32) {
        read.pool.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::batch_check::Range;
    use crate::engine::{Engine, ItemOwner};
    use crate::event::{Event, EventType};
    use serde::{de::DeserializeOwned, Serialize};

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

    fn through_the_wire<T: Serialize + DeserializeOwned>(value: &T) -> T {
        let standard = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(value, standard).unwrap();
        bincode::serde::decode_from_slice(&bytes, standard)
            .unwrap()
            .0
    }

    fn an_item_with_neighbours(items: &ItemModel) -> u32 {
        (0..items.ids.len() as u32)
            .find(|&i| !items.cooccurrence.lists(i).0.is_empty())
            .expect("the events make pairs")
    }

    /// The neighbours of every item by name, with scores when `scores`.
    fn neighbours(engine: &Engine, scores: bool) -> Vec<(String, Vec<(String, f32)>)> {
        let items = engine.read();
        let mut all: Vec<(String, Vec<(String, f32)>)> = (0..items.ids.len() as u32)
            .map(|item| {
                let mut similar: Vec<(String, f32)> = (engine.similar_items(item, 50))
                    .into_iter()
                    .map(|(i, s)| (engine.item_id(i), if scores { s } else { 0.0 }))
                    .collect();
                if !scores {
                    similar.sort_by(|a, b| a.0.cmp(&b.0));
                }
                (items.ids.name(item).to_owned(), similar)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A reader installing the owner's records after every event has one engine's vectors,
    /// popularity and neighbours (their scores only as fresh as the lists' last record).
    #[test]
    fn a_reader_of_records_published_after_every_event_has_one_engines_items() {
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
            let publication = through_the_wire(&owner.publish());
            let installed = keys.install(&mut read, &publication, &config);
            assert_eq!(installed.views, publication.views.len());
            assert_eq!(installed.lists, publication.lists.len());
            assert_eq!(installed.unknown_neighbours, 0);
        }
        let (alone_items, read) = (alone.read(), reader.read());
        assert_eq!(read.ids.len(), alone_items.ids.len());
        for item in 0..read.ids.len() as u32 {
            let name = read.ids.name(item);
            let theirs = alone_items.ids.get(name).unwrap();
            assert_eq!(read.factors.get(item), alone_items.factors.get(theirs));
            let popularity = read.popularity.score(item);
            assert_eq!(popularity, alone_items.popularity.score(theirs), "{name}");
            let marginals = read.cooccurrence.marginals(item);
            assert_eq!(marginals, alone_items.cooccurrence.marginals(theirs));
        }
        drop((alone_items, read));
        assert_eq!(neighbours(&reader, false), neighbours(&alone, false));
        assert_ne!(
            neighbours(&reader, true),
            neighbours(&alone, true),
            "counts that grew without a new member are not republished"
        );
    }

    #[test]
    fn a_record_from_elsewhere_is_checked_before_anything_is_interned() {
        let config = config();
        let alone = learned(&config);
        let owned = alone.read();
        let with_lists = an_item_with_neighbours(&owned);
        let view = ItemView::of(&owned, with_lists, 0);
        let lists = ItemLists::of(&owned, with_lists);
        let mut short = view.clone();
        short.vector.pop();
        let mut nan = lists.clone();
        nan.similar[0].1 = f32::NAN;
        let mut long = lists.clone();
        long.similar = vec![(7, 1.0); 51];
        let mut good = view.clone();
        good.item = "good".into();
        let publication = Publication {
            views: vec![short, good],
            lists: vec![nan, long],
        };
        let mut read = ItemModel::new(&config);
        let installed = ItemKeys::default().install(&mut read, &publication, &config);
        assert_eq!((installed.views, installed.lists), (1, 0));
        assert!(matches!(installed.refused[0], ViewError::Rank { .. }));
        assert_eq!(
            installed.refused[1],
            ViewError::OutOfRange {
                item: view.item.clone(),
                field: "a neighbour's count",
                range: Range::Weight,
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
        let item = an_item_with_neighbours(&owned);
        let lists = ItemLists::of(&owned, item);
        let mut read = ItemModel::new(&config);
        let mut keys = ItemKeys::default();
        let alone_lists = Publication {
            views: vec![],
            lists: vec![lists.clone()],
        };
        let first = keys.install(&mut read, &alone_lists, &config);
        let neighbours = lists.similar.len() + lists.bought_after.len();
        assert_eq!(first.unknown_neighbours, neighbours);
        let every_view = Publication {
            views: (0..owned.ids.len() as u32)
                .map(|i| ItemView::of(&owned, i, 0))
                .collect(),
            lists: vec![],
        };
        keys.install(&mut read, &every_view, &config);
        let again = keys.install(&mut read, &alone_lists, &config);
        assert_eq!(again.unknown_neighbours, 0);
        let read_item = read.ids.get(&lists.item).unwrap();
        let read_lists = read.cooccurrence.lists(read_item);
        assert_eq!(read_lists.0.len(), lists.similar.len());
    }
}
