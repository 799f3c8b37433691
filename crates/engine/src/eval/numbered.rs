//! The harness's own bookkeeping by dense numbers: each event's user and item are numbered
//! once, before the run, so that what the harness keeps per user, per item and per instance is
//! an array read rather than a look-up by name at every event.

use rustc_hash::FxHashMap;

use super::instances::Instances;
use crate::engine::Engine;
use crate::event::Event;

/// Each event's user and item number (first seen, first numbered), and each user's instance.
pub struct Numbered {
    pub users: Vec<u32>,
    pub items: Vec<u32>,
    /// The instance that owns each numbered user.
    pub owners: Vec<usize>,
    pub item_count: usize,
}

impl Numbered {
    pub fn new(events: &[Event], instances: &Instances) -> Numbered {
        let mut user_numbers: FxHashMap<&str, u32> = FxHashMap::default();
        let mut item_numbers: FxHashMap<&str, u32> = FxHashMap::default();
        let mut owners = Vec::new();
        let mut users = Vec::with_capacity(events.len());
        let mut items = Vec::with_capacity(events.len());
        for event in events {
            let next = user_numbers.len() as u32;
            let user = *user_numbers.entry(&event.user_id).or_insert_with(|| {
                owners.push(instances.index_of(&event.user_id));
                next
            });
            users.push(user);
            let next = item_numbers.len() as u32;
            items.push(*item_numbers.entry(&event.item_id).or_insert(next));
        }
        Numbered {
            users,
            items,
            owners,
            item_count: item_numbers.len(),
        }
    }

    pub fn user_count(&self) -> usize {
        self.owners.len()
    }
}

const UNKNOWN: u32 = u32::MAX;

/// Each instance's index of each numbered item, once the instance interned it (an interned
/// item keeps its index).
pub struct KnownItems {
    per_instance: Vec<Vec<u32>>,
}

impl KnownItems {
    pub fn new(instances: usize, items: usize) -> KnownItems {
        KnownItems {
            per_instance: vec![vec![UNKNOWN; items]; instances],
        }
    }

    /// `engine`'s (instance `instance`'s) index of item `number`, named `name`; None while it
    /// does not know the item.
    pub fn index(
        &mut self,
        (engine, instance): (&Engine, usize),
        number: u32,
        name: &str,
    ) -> Option<u32> {
        let slot = &mut self.per_instance[instance][number as usize];
        if *slot == UNKNOWN {
            *slot = engine.item_index(name)?;
        }
        Some(*slot)
    }
}

/// Which items each instance recommended, by its own index.
#[derive(Default)]
pub struct Recommended {
    per_instance: Vec<Vec<bool>>,
}

impl Recommended {
    pub fn note(&mut self, instance: usize, item: u32) {
        if self.per_instance.len() <= instance {
            self.per_instance.resize_with(instance + 1, Vec::new);
        }
        let items = &mut self.per_instance[instance];
        if items.len() <= item as usize {
            items.resize(item as usize + 1, false);
        }
        items[item as usize] = true;
    }

    /// Every (instance, item index) noted.
    pub fn pairs(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let per_instance = self.per_instance.iter().enumerate();
        per_instance.flat_map(|(instance, items)| {
            let noted = items.iter().enumerate().filter(|(_, &noted)| noted);
            noted.map(move |(item, _)| (instance, item as u32))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Topology;
    use crate::event::EventType;

    #[test]
    fn users_and_items_are_numbered_as_first_seen() {
        let events: Vec<Event> = [("u", "a"), ("v", "b"), ("u", "b"), ("w", "a")]
            .iter()
            .map(|(user, item)| Event::new(EventType::View, user, item, 1))
            .collect();
        let instances = Instances::new((3, Topology::Replicated), 1, &Default::default());
        let numbered = Numbered::new(&events, &instances);
        assert_eq!(numbered.users, [0, 1, 0, 2]);
        assert_eq!(numbered.items, [0, 1, 1, 0]);
        assert_eq!((numbered.user_count(), numbered.item_count), (3, 2));
        assert_eq!(numbered.owners[1], instances.index_of("v"));
    }

    #[test]
    fn recommended_items_are_told_apart_by_instance() {
        let mut recommended = Recommended::default();
        for (instance, item) in [(1, 4), (0, 2), (1, 4), (1, 0)] {
            recommended.note(instance, item);
        }
        let pairs: Vec<_> = recommended.pairs().collect();
        assert_eq!(pairs, [(0, 2), (1, 0), (1, 4)]);
    }
}
