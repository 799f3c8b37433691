//! A sparse pair-count table `a → b` with bounded rows and an incrementally maintained top-K
//! neighbour list per row.
//!
//! Each row keeps at most `2 × counters` pair counters (past that the lightest are pruned, as in
//! lossy counting) and `capacity` neighbours ranked by a caller-given similarity. A counter
//! remembers its neighbour slot, so an update is O(1) unless it displaces the weakest neighbour.
//! Every `capacity` updates the list is rebuilt from all counters with fresh scores, so membership
//! decided on stale scores does not stick.
//!
//! Rows are shared copy-on-write: a checkpoint holds the rows it encodes while learning goes on,
//! and a write clones only a row a checkpoint still holds. Each write marks its row changed.

mod counters;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::changed::ChangedItems;
use crate::chunked::ChunkedVec;
use crate::rank_key::{rank_key, score_of_key};
use counters::{Counter, Counters};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Neighbor {
    pub item: u32,
    pub count: f32,
    /// Similarity when last updated; only decides list membership.
    pub rank_score: f32,
}

const NOT_LISTED: u16 = u16::MAX;

/// One item's pair counters and neighbour list: an item record holds its rows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Row {
    counts: Counters,
    top: Vec<Neighbor>,
    /// A lower bound of the weakest listed score: candidates below it are turned away unscanned.
    floor: f32,
    stale_updates: u32,
}

/// The sizes a table keeps per row.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub counters: usize,
    pub capacity: usize,
}

/// A row as stored in a table: none until the item's first pair.
pub type SharedRow = Option<Arc<Row>>;

#[derive(Clone, Debug, Default)]
pub struct PairTable {
    /// Chunked, so a checkpoint's cut shares the table rather than a pointer per row.
    rows: ChunkedVec<SharedRow>,
    /// Rows written since the last `clear_changed`.
    changed: ChangedItems,
}

impl PairTable {
    fn row_mut(&mut self, item: u32) -> &mut Row {
        let idx = item as usize;
        self.rows.grow(idx + 1, None);
        self.changed.insert(item);
        Arc::make_mut(self.rows[idx].get_or_insert_with(Arc::default))
    }

    pub fn row(&self, item: u32) -> Option<&Row> {
        self.rows.get(item as usize).and_then(Option::as_deref)
    }

    /// Reads what `add(row, item, ..)` will read first, for each row: reading every row before
    /// writing any lets their cache misses overlap rather than come one after another.
    pub fn touch(&self, rows: impl Iterator<Item = u32>, item: u32) -> u32 {
        let touched = rows.filter_map(|row| self.row(row));
        touched.fold(0, |acc, row| {
            let top = row.top.first().map_or(0, |n| n.item);
            acc ^ row.counts.touch(item) ^ top
        })
    }

    pub fn neighbors(&self, item: u32) -> &[Neighbor] {
        self.row(item).map_or(&[], |r| &r.top)
    }

    pub fn count(&self, a: u32, b: u32) -> f32 {
        self.row(a)
            .and_then(|r| r.counts.get(b))
            .map_or(0.0, |c| c.count)
    }

    pub fn counters(&self, item: u32) -> usize {
        self.row(item).map_or(0, |r| r.counts.len())
    }

    /// Puts a stored row in place, unchanged since the store has it.
    pub fn install(&mut self, item: u32, row: SharedRow) {
        let idx = item as usize;
        self.rows.grow(idx + 1, None);
        self.rows[idx] = row;
    }

    /// Rows written since the last `clear_changed`.
    pub fn changed(&self) -> &ChangedItems {
        &self.changed
    }

    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    /// Adds `weight` to the pair `a → b` and updates `a`'s neighbour list; `score(b, count)` is
    /// the similarity of `a → b` for a pair count.
    pub fn add(
        &mut self,
        a: u32,
        b: u32,
        weight: f32,
        bounds: Bounds,
        score: impl Fn(u32, f32) -> f32,
    ) {
        let row = self.row_mut(a);
        let unlisted = Counter {
            count: 0.0,
            slot: NOT_LISTED,
        };
        let counter = row.counts.get_or_insert(b, unlisted);
        counter.count += weight;
        let Counter { count, slot } = *counter;
        row.stale_updates += 1;
        if row.counts.len() > 2 * bounds.counters {
            prune(row, bounds.counters);
            // The prune may have dropped this very pair (among the lightest): it is not
            // offered, or the list would hold a neighbour without a counter.
            if !row.counts.contains(b) {
                return;
            }
        }
        if row.stale_updates as usize >= bounds.capacity {
            rebuild(row, bounds.capacity, score);
            return;
        }
        let neighbor = Neighbor {
            item: b,
            count,
            rank_score: score(b, count),
        };
        row.offer(neighbor, slot, bounds.capacity);
    }

    pub fn heap_bytes(&self) -> usize {
        // A shared row: its two reference counts beside the row itself.
        let shared = 16 + std::mem::size_of::<Row>();
        let per_row: usize = self
            .rows
            .iter()
            .flatten()
            .map(|r| {
                shared + r.counts.heap_bytes() + r.top.capacity() * std::mem::size_of::<Neighbor>()
            })
            .sum();
        self.rows.heap_bytes() + per_row + self.changed.heap_bytes()
    }
}

impl Row {
    /// A row of a read model: a published neighbour list `(item, pair count)` in the owner's
    /// order, each neighbour with its counter. Readers rank from it and never add to it.
    pub fn listed(list: &[(u32, f32)]) -> Row {
        let top: Vec<Neighbor> = list
            .iter()
            .map(|&(item, count)| Neighbor {
                item,
                count,
                rank_score: count,
            })
            .collect();
        let counts = top.iter().enumerate().map(|(slot, n)| {
            let counter = Counter {
                count: n.count,
                slot: slot as u16,
            };
            (n.item, counter)
        });
        Row {
            counts: counts.collect(),
            top,
            floor: 0.0,
            stale_updates: 0,
        }
    }

    /// Whether a stored row is one this table could have written: neighbours and counters name
    /// items below `items`, and every listed neighbour's counter points at its slot.
    pub fn check(&self, items: usize) -> Result<(), String> {
        let known = |item: u32| (item as usize) < items;
        if let Some((bad, _)) = self.counts.iter().find(|&(i, _)| !known(i)) {
            return Err(format!("a counter names item {bad} of {items}"));
        }
        for (slot, neighbor) in self.top.iter().enumerate() {
            match self.counts.get(neighbor.item) {
                Some(counter) if counter.slot as usize == slot => {}
                _ => return Err(format!("neighbour {slot} has no counter pointing at it")),
            }
        }
        let listed = self
            .counts
            .iter()
            .filter(|(_, c)| c.slot != NOT_LISTED)
            .count();
        if listed != self.top.len() {
            return Err(format!(
                "{listed} counters claim a slot, {} neighbours are listed",
                self.top.len()
            ));
        }
        Ok(())
    }

    fn offer(&mut self, neighbor: Neighbor, slot: u16, capacity: usize) {
        if slot != NOT_LISTED {
            self.top[slot as usize] = neighbor;
            self.floor = self.floor.min(neighbor.rank_score);
        } else if self.top.len() < capacity {
            self.set_slot(neighbor.item, self.top.len());
            self.floor = if self.top.is_empty() {
                neighbor.rank_score
            } else {
                self.floor.min(neighbor.rank_score)
            };
            self.top.push(neighbor);
        } else if neighbor.rank_score > self.floor {
            self.replace_weakest(neighbor);
        }
    }

    fn replace_weakest(&mut self, neighbor: Neighbor) {
        let Weakest {
            slot,
            score,
            others,
        } = weakest(&self.top);
        if neighbor.rank_score > score {
            let evicted = self.top[slot].item;
            self.set_slot(evicted, NOT_LISTED as usize);
            self.set_slot(neighbor.item, slot);
            self.top[slot] = neighbor;
            self.floor = others.min(neighbor.rank_score);
        } else {
            self.floor = score;
        }
    }

    fn set_slot(&mut self, item: u32, slot: usize) {
        if let Some(counter) = self.counts.get_mut(item) {
            counter.slot = slot as u16;
        }
    }
}

/// A list's order, best first: the highest score first (by `f32::total_cmp`), and among equals
/// the lowest item index. It is the ascending order of the neighbours' rank keys (`rank_key`).
fn key_of(n: &Neighbor) -> u64 {
    rank_key(n.rank_score, n.item)
}

/// A full list's last neighbour, best first, and the lowest score of the others.
struct Weakest {
    slot: usize,
    score: f32,
    others: f32,
}

/// One pass: the floor after replacing the weakest is the others' lowest score or the
/// newcomer's, so the list is not scanned again.
fn weakest(top: &[Neighbor]) -> Weakest {
    // The last, best first, has the largest key: one integer comparison a neighbour.
    let mut found = Weakest {
        slot: 0,
        score: top[0].rank_score,
        others: f32::INFINITY,
    };
    let mut weakest_key = key_of(&top[0]);
    for (slot, n) in top.iter().enumerate().skip(1) {
        let n_key = key_of(n);
        if n_key > weakest_key {
            found.others = found.others.min(found.score);
            (found.slot, found.score, weakest_key) = (slot, n.rank_score, n_key);
        } else {
            found.others = found.others.min(n.rank_score);
        }
    }
    found
}

fn weakest_score(top: &[Neighbor]) -> f32 {
    top.iter()
        .map(|n| n.rank_score)
        .fold(f32::INFINITY, f32::min)
}

/// Out of line: it runs once per `capacity` updates of a row, and a profile names it apart.
#[inline(never)]
fn rebuild(row: &mut Row, capacity: usize, score: impl Fn(u32, f32) -> f32) {
    row.stale_updates = 0;
    let bar = admission_bar(row, capacity, &score);
    // (rank key, count): best first is the keys' ascending order, compared as integers.
    let mut candidates: Vec<(u64, f32)> = Vec::with_capacity(row.counts.len().min(4 * capacity));
    row.counts.for_each_mut(|item, counter| {
        counter.slot = NOT_LISTED;
        let rank_score = score(item, counter.count);
        if rank_score >= bar {
            candidates.push((rank_key(rank_score, item), counter.count));
        }
    });
    if candidates.len() > capacity {
        candidates.select_nth_unstable_by_key(capacity - 1, |c| c.0);
        candidates.truncate(capacity);
    }
    // A canonical order: the counters were visited in table order, which differs between
    // an engine and its restored copy; slots and the weakest pick must not.
    candidates.sort_unstable_by_key(|c| c.0);
    row.top.clear();
    row.top
        .extend(candidates.iter().map(|&(key, count)| Neighbor {
            item: key as u32,
            count,
            rank_score: score_of_key(key),
        }));
    row.top.shrink_to(capacity);
    for slot in 0..row.top.len() {
        let item = row.top[slot].item;
        row.set_slot(item, slot);
    }
    row.floor = weakest_score(&row.top);
}

/// A score every member of the rebuilt list reaches: with a full list, the lowest fresh score
/// of its members, since those `capacity` counters alone already reach it. Counters below it
/// are left out before the selection, which then sorts tens of candidates, not hundreds. A
/// listed neighbour's count is its counter's (every write to a listed counter rewrites its
/// entry), so no counter is looked up.
fn admission_bar(row: &Row, capacity: usize, score: impl Fn(u32, f32) -> f32) -> f32 {
    if row.top.len() < capacity {
        return f32::NEG_INFINITY;
    }
    let fresh = row.top.iter().map(|n| score(n.item, n.count));
    fresh.fold(f32::INFINITY, f32::min)
}

/// Out of line, like `rebuild`: it runs once per `counters` new pairs of a row.
#[inline(never)]
fn prune(row: &mut Row, keep: usize) {
    let mut weights = Vec::with_capacity(row.counts.len());
    row.counts.for_each_mut(|_, c| weights.push(c.count));
    let cut = weights.len() - keep;
    let (_, threshold, _) = weights.select_nth_unstable_by(cut, |a, b| a.total_cmp(b));
    let threshold = *threshold;
    row.counts
        .retain(|_, c| c.count >= threshold || c.slot != NOT_LISTED);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Best first, as the neighbour lists promise it.
    fn best_first(x: &Neighbor, y: &Neighbor) -> std::cmp::Ordering {
        y.rank_score
            .total_cmp(&x.rank_score)
            .then(x.item.cmp(&y.item))
    }

    fn listed(table: &PairTable, item: u32) -> Vec<u32> {
        let mut items: Vec<u32> = table.neighbors(item).iter().map(|n| n.item).collect();
        items.sort();
        items
    }

    #[test]
    fn keeps_the_highest_scoring_neighbours() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 100,
            capacity: 3,
        };
        for (b, weight) in [(1, 1.0), (2, 5.0), (3, 2.0), (4, 4.0), (5, 0.5)] {
            table.add(0, b, weight, bounds, |_, count| count);
        }
        assert_eq!(listed(&table, 0), vec![2, 3, 4]);
        table.add(0, 1, 10.0, bounds, |_, count| count);
        assert_eq!(listed(&table, 0), vec![1, 2, 4]);
        assert_eq!(table.count(0, 1), 11.0);
    }

    #[test]
    fn slots_stay_consistent_through_evictions_rebuilds_and_prunes() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 8,
            capacity: 4,
        };
        let mut rng = crate::rng::SplitMix64::new(5);
        for _ in 0..5_000 {
            let b = rng.below(40) as u32;
            table.add(0, b, 1.0 + b as f32 / 40.0, bounds, |_, count| count);
            let row = table.row(0).unwrap();
            assert!(row.counts.len() <= 16);
            assert_eq!(row.check(40), Ok(()));
        }
    }

    #[test]
    fn a_rebuilt_list_is_the_best_of_every_counter_and_holds_no_more_room_than_it_lists() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 256,
            capacity: 10,
        };
        let mut rng = crate::rng::SplitMix64::new(9);
        // Scores drift with time (as marginals do), so listed members go stale.
        let score = |step: usize| {
            move |b: u32, count: f32| count / (1.0 + ((b as usize * 7 + step / 50) % 13) as f32)
        };
        for step in 0..20_000 {
            let b = rng.below(300) as u32;
            table.add(0, b, 1.0, bounds, score(step));
            let row = table.row(0).unwrap();
            if row.stale_updates == 0 {
                let mut every: Vec<Neighbor> = (row.counts.iter())
                    .map(|(item, c)| Neighbor {
                        item,
                        count: c.count,
                        rank_score: score(step)(item, c.count),
                    })
                    .collect();
                every.sort_by(best_first);
                every.truncate(bounds.capacity);
                assert_eq!(row.top, every, "step {step}");
            }
            assert!(
                row.top.capacity() < 2 * bounds.capacity,
                "{} slots",
                row.top.capacity()
            );
        }
    }

    #[test]
    fn a_pair_pruned_on_arrival_is_not_listed() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 2,
            capacity: 3,
        };
        // Four heavy pairs (the third add rebuilds the list), then a light one whose score
        // beats the floor and which the prune drops on arrival.
        for b in 1..=4 {
            table.add(0, b, 10.0, bounds, |_, count| count);
        }
        table.add(
            0,
            99,
            0.1,
            bounds,
            |b, count| if b == 99 { 1e6 } else { count },
        );
        let row = table.row(0).unwrap();
        assert_eq!(row.check(100), Ok(()), "{row:?}");
        assert!(!row.top.iter().any(|n| n.item == 99));
    }

    #[test]
    fn a_row_held_by_a_checkpoint_stays_as_it_was_while_the_table_learns() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 10,
            capacity: 4,
        };
        table.add(0, 1, 1.0, bounds, |_, count| count);
        table.add(2, 1, 1.0, bounds, |_, count| count);
        assert_eq!(table.changed().iter().collect::<Vec<_>>(), [0, 2]);
        table.clear_changed();
        let held = table.clone();
        table.add(0, 3, 2.0, bounds, |_, count| count);
        assert_eq!(held.neighbors(0).len(), 1, "the held copy is unchanged");
        assert_eq!(table.neighbors(0).len(), 2);
        assert_eq!(table.changed().iter().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_stored_row_that_breaks_the_slot_rule_or_names_unknown_items_is_refused() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 10,
            capacity: 4,
        };
        table.add(0, 7, 1.0, bounds, |_, count| count);
        let row = table.row(0).unwrap().clone();
        assert_eq!(row.check(8), Ok(()));
        assert!(row.check(7).unwrap_err().contains("item 7 of 7"));
        let mut bad = row.clone();
        bad.counts.get_mut(7).unwrap().slot = 3;
        assert!(bad.check(8).is_err());
        let mut bad = row;
        bad.top.push(bad.top[0]);
        assert!(bad.check(8).is_err());
    }

    #[test]
    fn a_rebuild_rescored_with_fresh_scores_replaces_stale_members() {
        let mut table = PairTable::default();
        let bounds = Bounds {
            counters: 10,
            capacity: 2,
        };
        table.add(0, 1, 1.0, bounds, |_, _| 9.0);
        // The second update triggers a rebuild in which item 1 now scores low.
        table.add(0, 2, 1.0, bounds, |b, _| if b == 1 { 0.1 } else { 1.0 });
        table.add(0, 3, 1.0, bounds, |b, _| if b == 1 { 0.1 } else { 1.0 });
        assert_eq!(listed(&table, 0), vec![2, 3]);
    }
}
