//! A row's pair counters: one open-addressing table (linear probing) of `(item, count, slot)`
//! entries, so a lookup reads one cache line where a `HashMap` reads its control bytes and
//! then its bucket. Rows only grow, and shrink all at once in `retain` (a prune), so no
//! tombstones are needed.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Marks a free entry; the interner never hands this index out.
const EMPTY: u32 = u32::MAX;

/// The smallest table allocated.
const MIN_ENTRIES: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub count: f32,
    /// Index in the row's neighbour list, or `NOT_LISTED`.
    pub slot: u16,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    item: u32,
    counter: Counter,
}

const FREE: Entry = Entry {
    item: EMPTY,
    counter: Counter {
        count: 0.0,
        slot: 0,
    },
};

/// Pair counters by partner item. Stored as a map sorted by item, as a `HashMap` was.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// A power of two in length (or empty), at most seven eighths full, as a `HashMap` is.
    entries: Vec<Entry>,
    len: usize,
}

impl Counters {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    pub fn get(&self, item: u32) -> Option<&Counter> {
        let at = self.find(item).ok()?;
        Some(&self.entries[at].counter)
    }

    pub fn get_mut(&mut self, item: u32) -> Option<&mut Counter> {
        let at = self.find(item).ok()?;
        Some(&mut self.entries[at].counter)
    }

    /// Reads the entry where `item`'s lookup starts, so that a later lookup finds it cached.
    #[inline]
    pub fn touch(&self, item: u32) -> u32 {
        match self.entries.len() {
            0 => 0,
            size => self.entries[home(item, size)].item,
        }
    }

    pub fn contains(&self, item: u32) -> bool {
        self.find(item).is_ok()
    }

    /// The item's counter, made with `new` if it has none.
    #[inline]
    pub fn get_or_insert(&mut self, item: u32, new: Counter) -> &mut Counter {
        assert_ne!(item, EMPTY, "item index {EMPTY} is reserved");
        let at = match self.find(item) {
            Ok(at) => at,
            Err(free) => self.insert(free, Entry { item, counter: new }),
        };
        &mut self.entries[at].counter
    }

    /// Puts a new entry at `free`, or where it goes after the table grew: a table grows only
    /// when an item is added, never for a lookup.
    fn insert(&mut self, free: usize, entry: Entry) -> usize {
        let mut at = free;
        if (self.len + 1) * 8 > self.entries.len() * 7 {
            self.grow();
            at = self
                .find(entry.item)
                .expect_err("a new item is not in the table");
        }
        self.entries[at] = entry;
        self.len += 1;
        at
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Counter)> {
        let used = self.entries.iter().filter(|e| e.item != EMPTY);
        used.map(|e| (e.item, &e.counter))
    }

    /// Visits every counter (see `for_each_used`).
    #[inline]
    pub fn for_each_mut(&mut self, mut visit: impl FnMut(u32, &mut Counter)) {
        for_each_used(&mut self.entries, |e| visit(e.item, &mut e.counter));
    }

    /// Keeps the counters `keep` accepts, in a table of the same size.
    pub fn retain(&mut self, mut keep: impl FnMut(u32, &Counter) -> bool) {
        self.refill(self.entries.len(), |e| keep(e.item, &e.counter));
    }

    /// Sets the item's counter, whether it had one or not.
    fn set(&mut self, item: u32, counter: Counter) {
        *self.get_or_insert(item, counter) = counter;
    }

    /// The item's entry, or the free entry where it would go. The table always has a free
    /// entry, so the probe ends.
    #[inline]
    fn find(&self, item: u32) -> Result<usize, usize> {
        if self.entries.is_empty() {
            return Err(0);
        }
        let mask = self.entries.len() - 1;
        let mut at = home(item, self.entries.len());
        loop {
            match self.entries[at].item {
                found if found == item => return Ok(at),
                EMPTY => return Err(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    #[cold]
    fn grow(&mut self) {
        self.refill((self.entries.len() * 2).max(MIN_ENTRIES), |_| true);
    }

    /// Places the entries `keep` accepts in a new table of `size` entries.
    fn refill(&mut self, size: usize, mut keep: impl FnMut(&Entry) -> bool) {
        let mut old = std::mem::replace(&mut self.entries, vec![FREE; size]);
        self.len = 0;
        for_each_used(&mut old, |entry| {
            if keep(entry) {
                self.put(*entry);
            }
        });
    }

    /// Places an entry whose item is not in the table yet.
    fn put(&mut self, entry: Entry) {
        let Err(free) = self.find(entry.item) else {
            unreachable!("item {} is placed once", entry.item)
        };
        self.entries[free] = entry;
        self.len += 1;
    }
}

/// Visits the used entries, a block of 64 at a time: which are used is read into a mask
/// first, so half-full tables do not cost a mispredicted branch per entry.
#[inline]
fn for_each_used(entries: &mut [Entry], mut visit: impl FnMut(&mut Entry)) {
    for block in entries.chunks_mut(64) {
        let marks = block.iter().enumerate();
        let mut used = marks.fold(0u64, |mask, (i, e)| mask | u64::from(e.item != EMPTY) << i);
        while used != 0 {
            visit(&mut block[used.trailing_zeros() as usize]);
            used &= used - 1;
        }
    }
}

/// Fibonacci hashing: consecutive item indices spread over the table.
#[inline]
fn home(item: u32, size: usize) -> usize {
    let bits = size.trailing_zeros();
    ((u64::from(item).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> (64 - bits)) as usize
}

impl FromIterator<(u32, Counter)> for Counters {
    fn from_iter<I: IntoIterator<Item = (u32, Counter)>>(iter: I) -> Counters {
        let mut counters = Counters::default();
        for (item, counter) in iter {
            counters.set(item, counter);
        }
        counters
    }
}

impl Serialize for Counters {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        crate::canonical::sorted_map(self.iter(), serializer)
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Counters, D::Error> {
        deserializer.deserialize_map(CountersVisitor)
    }
}

struct CountersVisitor;

impl<'de> Visitor<'de> for CountersVisitor {
    type Value = Counters;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of pair counters by item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counters, A::Error> {
        let mut counters = Counters::default();
        while let Some((item, counter)) = map.next_entry::<u32, Counter>()? {
            if item == EMPTY {
                return Err(serde::de::Error::custom(format!(
                    "a counter names the reserved item {EMPTY}"
                )));
            }
            counters.set(item, counter);
        }
        Ok(counters)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn counter(count: f32) -> Counter {
        Counter { count, slot: 0 }
    }

    fn bytes(value: &impl Serialize) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    /// Steps: `(item, weight)` adds the weight to the item's counter; a weight of 0 instead
    /// keeps only the counters at or above the item's index, as a prune keeps the heaviest.
    fn steps() -> impl Strategy<Value = Vec<(u32, u8)>> {
        prop::collection::vec((0u32..300, 0u8..4), 0..600)
    }

    #[test]
    fn touching_reads_the_lookup_start_of_any_table_even_an_empty_one() {
        let mut counters = Counters::default();
        assert_eq!(counters.touch(7), 0, "an empty table has no entry to read");
        counters.get_or_insert(7, counter(1.0));
        let size = counters.entries.len();
        assert_eq!(counters.touch(7), counters.entries[home(7, size)].item);
        assert_eq!(
            counters.touch(7),
            7,
            "one entry sits where its lookup starts"
        );
    }

    proptest! {
        #[test]
        fn counters_hold_what_a_sorted_map_holds_and_store_as_it_would(steps in steps()) {
            let (mut counters, mut model) = (Counters::default(), BTreeMap::new());
            for (item, weight) in steps {
                if weight == 0 {
                    counters.retain(|i, _| i >= item);
                    model.retain(|&i, _| i >= item);
                } else {
                    counters.get_or_insert(item, counter(0.0)).count += f32::from(weight);
                    model.entry(item).or_insert(counter(0.0)).count += f32::from(weight);
                }
                prop_assert_eq!(counters.len(), model.len());
                prop_assert!(counters.len() * 8 <= counters.entries.len() * 7);
            }
            for item in 0..300 {
                prop_assert_eq!(counters.get(item), model.get(&item));
            }
            prop_assert_eq!(bytes(&counters), bytes(&model));
            let (restored, _): (Counters, usize) =
                bincode::serde::decode_from_slice(&bytes(&model), bincode::config::standard())
                    .unwrap();
            prop_assert_eq!(bytes(&restored), bytes(&model));
        }
    }

    #[test]
    fn a_full_table_grows_for_a_new_item_and_not_for_a_known_one() {
        let mut counters: Counters = (0..7).map(|item| (item, counter(1.0))).collect();
        assert_eq!(counters.entries.len(), 8);
        counters.get_or_insert(3, counter(0.0)).count += 1.0;
        assert_eq!(counters.entries.len(), 8);
        assert_eq!(counters.get(3), Some(&counter(2.0)));
        counters.get_or_insert(7, counter(5.0));
        assert_eq!((counters.len(), counters.entries.len()), (8, 16));
        assert!((0..8).all(|item| counters.contains(item)));
    }

    #[test]
    fn consecutive_items_fill_a_table_without_long_probes() {
        let counters: Counters = (0..448).map(|item| (item, counter(1.0))).collect();
        assert_eq!(counters.entries.len(), 512);
        let probes = |item: u32| {
            let found = counters.find(item).unwrap();
            (found + counters.entries.len() - home(item, counters.entries.len()))
                % counters.entries.len()
        };
        let longest = (0..448).map(probes).max().unwrap();
        assert!(longest < 16, "longest probe {longest}");
    }

    #[test]
    fn a_stored_counter_naming_the_reserved_item_is_refused() {
        let stored = BTreeMap::from([(EMPTY, counter(1.0))]);
        let decoded: Result<(Counters, usize), _> =
            bincode::serde::decode_from_slice(&bytes(&stored), bincode::config::standard());
        assert!(decoded.unwrap_err().to_string().contains("reserved item"));
    }
}
