//! What a worker writes to the changelog besides users: its settings, and for each partition
//! where its next record of dedup keys starts and which of the partition's slots it takes.

use std::collections::BTreeMap;

use crate::dedup::CarriedKey;
use crate::engine::Engine;

/// Where each checkpoint also writes its changed users, and how each advanced partition's new
/// dedup keys go with its position.
#[derive(Clone, Debug)]
pub struct Changelog {
    pub topic: String,
    /// At most this many of a partition's keys new since its previous record, per record.
    pub dedup_keys: usize,
    /// Records of keys a partition keeps, in slots taken in turn: compaction keeps the
    /// latest per slot, so they hold the keys of its last this many checkpoints.
    pub dedup_slots: u32,
    marks: BTreeMap<u64, CarryMark>,
}

/// A partition's next record of keys: the keys after `through`, in `slot`.
#[derive(Clone, Copy, Debug, Default)]
struct CarryMark {
    through: u64,
    slot: u32,
}

impl Changelog {
    pub fn new(topic: String, dedup_keys: usize, dedup_slots: u32) -> Changelog {
        Changelog {
            topic,
            dedup_keys,
            dedup_slots: dedup_slots.max(1),
            marks: BTreeMap::new(),
        }
    }

    /// The keys `stream` took since its previous record (the latest `dedup_keys` of them) and
    /// the slot their record takes; none when nothing is new.
    pub fn carry(&mut self, engine: &Engine, stream: u64) -> Option<(u32, Vec<CarriedKey>)> {
        if self.dedup_keys == 0 {
            return None;
        }
        let mark = self.marks.entry(stream).or_default();
        let cut = engine.dedup_keys_after(stream, mark.through, self.dedup_keys);
        mark.through = cut.through;
        if cut.keys.is_empty() {
            return None;
        }
        let slot = mark.slot;
        mark.slot = (slot + 1) % self.dedup_slots;
        Some((slot, cut.keys))
    }

    /// `stream` took keys from its previous owner: its next record carries the latest keys
    /// again (those among them), in `next_slot`, after the newest one read.
    pub fn adopted(&mut self, stream: u64, next_slot: u32) {
        let slot = next_slot % self.dedup_slots;
        self.marks.insert(stream, CarryMark { through: 0, slot });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::event::{Event, EventType};

    fn viewed(engine: &mut Engine, stream: u64, items: std::ops::Range<u32>) {
        for item in items {
            let event = Event::new(EventType::View, "u", &item.to_string(), 1_000 + item as i64);
            engine.apply_on(stream, &event);
        }
    }

    /// A quiet partition's records stay as small as what it took since the last one, and they
    /// take the slots in turn.
    #[test]
    fn each_record_holds_the_keys_since_the_previous_one_in_the_next_slot() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut changelog = Changelog::new("c".into(), 3, 2);
        viewed(&mut engine, 4, 0..5);
        let (slot, keys) = changelog.carry(&engine, 4).expect("keys");
        assert_eq!((slot, keys.len()), (0, 3), "the latest 3");
        assert_eq!(changelog.carry(&engine, 4), None, "nothing new");
        viewed(&mut engine, 4, 5..7);
        let (slot, keys) = changelog.carry(&engine, 4).expect("keys");
        assert_eq!((slot, keys.len()), (1, 2));
        viewed(&mut engine, 4, 7..8);
        assert_eq!(changelog.carry(&engine, 4).map(|c| c.0), Some(0), "around");
        changelog.adopted(4, 3);
        let (slot, keys) = changelog.carry(&engine, 4).expect("keys");
        assert_eq!(
            (slot, keys.len()),
            (1, 3),
            "the latest again, after the slot read"
        );
        assert_eq!(Changelog::new("c".into(), 0, 2).carry(&engine, 4), None);
    }
}
