//! The owner of some items: applies the work batches addressed to them and, when asked,
//! publishes what changed since its last publication (see `item_view`): at most one view of
//! each changed item however often it changed, and its lists only when their members changed.
//! With a significance `s`, a view waits until the item moved by more than `s` of what its
//! last view said (its vector, marginals or popularity), as a parameter server's
//! significantly-modified filter does. A small change waits until the item's next changes make
//! it add up: what a reader misses of an item's view is bounded by `s` of its last record.

use rustc_hash::{FxHashMap, FxHashSet};

use super::batch_check::BatchError;
use super::item_side::{ItemOp, ItemWork, Seen};
use super::item_view::{ItemLists, ItemView, Publication};
use super::work_batch::WorkBatch;
use super::{DecodeError, ItemModel, ModelRecords};
use crate::changed::ChangedItems;
use crate::config::EngineConfig;
use crate::cooccurrence::Listed;

pub struct ItemOwner {
    pub items: ItemModel,
    /// The share an item must move by before its next view (0: after every change).
    pub significance: f32,
    /// What each item's last view said, kept only with a significance.
    last_views: FxHashMap<u32, LastView>,
    /// Items changed since the last publication.
    changed: FxHashSet<u32>,
    /// How often items were seen since their last view (a view held back for significance
    /// leaves its count to the next).
    seen: FxHashMap<u32, u32>,
    /// A digest of each item's lists' members as last published. Lost on a restart, which
    /// only publishes every changed item's lists once more.
    published_members: FxHashMap<u32, u64>,
    /// The last input applied of each input stream (see `ItemWork::inputs`): work from an
    /// input at or before it arrived again (its sender re-read it after a crash) and is skipped.
    pub applied_inputs: FxHashMap<u64, i64>,
    /// Inputs whose work arrived again and was skipped, since this owner was made.
    pub skipped_inputs: u64,
    /// The items this owner applied work to: its own (the model also names their partners).
    owned: ChangedItems,
}

impl ItemOwner {
    pub fn new(config: &EngineConfig) -> ItemOwner {
        ItemOwner::from_items(ItemModel::new(config))
    }

    /// The owner of items restored from a checkpoint: nothing waits to be published.
    pub fn from_items(items: ItemModel) -> ItemOwner {
        ItemOwner {
            items,
            significance: 0.0,
            last_views: FxHashMap::default(),
            changed: FxHashSet::default(),
            seen: FxHashMap::default(),
            published_members: FxHashMap::default(),
            applied_inputs: FxHashMap::default(),
            skipped_inputs: 0,
            owned: ChangedItems::default(),
        }
    }

    /// The owner of a checkpoint's state (see `cut`): the items with a record are its own,
    /// and each waits to be published once, since a crashed owner may have checkpointed
    /// changes it never published.
    pub fn restore(
        config: &EngineConfig,
        records: ModelRecords,
        applied_inputs: &[(u64, i64)],
    ) -> Result<ItemOwner, DecodeError> {
        let mut owned = ChangedItems::default();
        for (item, _) in &records.items {
            owned.insert(*item);
        }
        let mut owner = ItemOwner::from_items(ItemModel::from_model_records(config, records)?);
        owner.changed = owned.iter().collect();
        owner.owned = owned;
        owner.applied_inputs = applied_inputs.iter().copied().collect();
        Ok(owner)
    }

    /// What a checkpoint stores of this owner: the model's shared record, its own items on the
    /// pages of `per_page` items with a change since the last cut (every page with
    /// `everything`), and the last input applied per stream (sorted). From here on the owner
    /// counts as checkpointed.
    pub fn cut(&mut self, per_page: u32, everything: bool) -> (ModelRecords, Vec<(u64, i64)>) {
        let mut applied: Vec<(u64, i64)> = (self.applied_inputs.iter())
            .map(|(&s, &q)| (s, q))
            .collect();
        applied.sort_unstable();
        let records = self.items.cut_pages(per_page, everything, &self.owned);
        (records, applied)
    }

    /// Applies a batch, but for the ops of inputs applied before; one that does not pass its
    /// check is refused and changes nothing.
    pub fn apply(&mut self, batch: WorkBatch, config: &EngineConfig) -> Result<(), BatchError> {
        let mut work = batch.into_work(&mut self.items, config)?;
        self.skip_applied_inputs(&mut work);
        work.apply_to(&mut self.items, config);
        for op in &work.ops {
            self.changed.insert(op.item());
            self.owned.insert(op.item());
            if let ItemOp::Seen(Seen { item, .. }) = op {
                *self.seen.entry(*item).or_default() += 1;
            }
        }
        Ok(())
    }

    /// Drops the ops of inputs at or before the last applied of their stream; records the
    /// others as applied.
    fn skip_applied_inputs(&mut self, work: &mut ItemWork) {
        if work.inputs.is_empty() {
            return; // no marks: every op applies
        }
        let mut keep = Vec::with_capacity(work.ops.len());
        for mark in &work.inputs {
            let applied = self
                .applied_inputs
                .entry(mark.at.stream)
                .or_insert(i64::MIN);
            let fresh = mark.at.seq > *applied;
            if fresh {
                *applied = mark.at.seq;
            } else {
                self.skipped_inputs += 1;
            }
            keep.resize(mark.ops_end as usize, fresh);
        }
        let mut kept = keep.into_iter();
        work.ops.retain(|_| kept.next().unwrap_or(true));
        work.inputs.clear();
    }

    /// Items changed since the last publication.
    pub fn changed(&self) -> impl Iterator<Item = u32> + '_ {
        self.changed.iter().copied()
    }

    /// The records of what changed since the last publication, in item order.
    pub fn publish(&mut self) -> Publication {
        let mut changed: Vec<u32> = self.changed.drain().collect();
        changed.sort_unstable();
        let mut publication = Publication::default();
        for item in changed {
            let seen = self.seen.get(&item).copied().unwrap_or(0);
            let view = ItemView::of(&self.items, item, seen);
            if self.moved(&view, item) {
                self.seen.remove(&item);
                publication.views.push(view);
            }
            let (similar, bought_after) = self.items.cooccurrence.lists(item);
            if self.lists_moved(item, &similar, &bought_after) {
                let lists = ItemLists::keyed(&self.items, item, similar, bought_after);
                publication.lists.push(lists);
            }
        }
        publication
    }

    /// Whether the item's view differs enough from its last one to publish it (noting it).
    fn moved(&mut self, view: &ItemView, item: u32) -> bool {
        if self.significance <= 0.0 {
            return true;
        }
        let now = LastView::of(view);
        let moved = match self.last_views.get(&item) {
            Some(last) => last.differs(&now, self.significance),
            None => true,
        };
        if moved {
            self.last_views.insert(item, now);
        }
        moved
    }

    /// Whether the item's lists' members changed since their last record (noting them).
    /// Every change counts, however light the new member: holding lists back until their
    /// new members carry a share of the similarity cost 3 % of HR@10 on ml-latest-small.
    fn lists_moved(&mut self, item: u32, similar: &Listed, bought_after: &Listed) -> bool {
        if similar.is_empty() && bought_after.is_empty() {
            // Lists only grow: an item without any has none to publish.
            return false;
        }
        let members = members_digest(similar, bought_after);
        self.published_members.insert(item, members) != Some(members)
    }
}

/// A digest of the members of an item's two lists.
fn members_digest(similar: &Listed, bought_after: &Listed) -> u64 {
    let sorted = |list: &Listed| {
        let mut members: Vec<u32> = list.iter().map(|n| n.0).collect();
        members.sort_unstable();
        members
    };
    let mut members = sorted(similar);
    // Separates the two lists: an item moving from one to the other changes the digest.
    members.push(u32::MAX);
    members.extend(sorted(bought_after));
    let bytes: Vec<u8> = members.iter().flat_map(|m| m.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

struct LastView {
    vector: Box<[f32]>,
    numbers: [f64; 3],
    landmark_ms: i64,
}

impl LastView {
    fn of(view: &ItemView) -> LastView {
        LastView {
            vector: view.vector.clone().into(),
            numbers: [view.entries.into(), view.purchases.into(), view.popularity],
            landmark_ms: view.landmark_ms,
        }
    }

    /// Whether `now` moved by more than `share` of this in the vector (Euclidean) or in any
    /// number; popularity rescaled to another landmark always counts as moved.
    fn differs(&self, now: &LastView, share: f32) -> bool {
        let squared = |v: &mut dyn Iterator<Item = f32>| v.map(|x| x * x).sum::<f32>();
        let change = squared(&mut self.vector.iter().zip(&*now.vector).map(|(a, b)| b - a));
        let before = squared(&mut self.vector.iter().copied());
        let share = f64::from(share);
        let numbers = (self.numbers.iter().zip(&now.numbers))
            .any(|(&before, &now)| (now - before).abs() > share * before);
        self.landmark_ms != now.landmark_ms
            || f64::from(change).sqrt() > share * f64::from(before).sqrt()
            || numbers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cooccurrence::PairOp;
    use crate::engine::intern_item;
    use crate::engine::item_view::record_key;
    use crate::engine::{InputMark, Position};
    use std::collections::BTreeMap;

    fn seen(item: u32, ts_ms: i64) -> ItemOp {
        ItemOp::Seen(Seen {
            item,
            weight: 1.0,
            ts_ms,
            segment: None,
        })
    }

    fn owner_applies(owner: &mut ItemOwner, read: &ItemModel, ops: Vec<ItemOp>) {
        let work = ItemWork {
            ops,
            ..ItemWork::default()
        };
        for (_, batch) in work.batches(read, 4) {
            owner.apply(batch, &EngineConfig::default()).unwrap();
        }
    }

    #[test]
    fn each_changed_item_is_published_once_with_how_often_it_was_seen() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        let (i0, _) = intern_item(&mut read, "i0", &config);
        let (i2, _) = intern_item(&mut read, "i2", &config);
        let category = read.categories.intern("c0");
        let ops = vec![
            ItemOp::Category { item: i2, category },
            seen(i2, 0),
            seen(i0, 0),
            seen(i2, 1),
        ];
        owner_applies(&mut owner, &read, ops);
        let views = owner.publish().views;
        let published: Vec<(&str, u32)> = views.iter().map(|v| (&*v.item, v.seen)).collect();
        let mut expected = vec![("i2", 2), ("i0", 1)];
        expected.sort_by_key(|&(name, _)| owner.items.ids.get(name));
        assert_eq!(published, expected);
        let i2_view = views.iter().find(|v| v.item == "i2").unwrap();
        assert_eq!(i2_view.category.as_deref(), Some("c0"));
        assert_eq!(
            owner.publish(),
            Publication::default(),
            "nothing changed since"
        );
    }

    #[test]
    fn lists_are_published_again_only_when_their_members_change() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        let [a, b, c] = ["a", "b", "c"].map(|name| intern_item(&mut read, name, &config).0);
        let pair = |row, partner| {
            ItemOp::Pair(PairOp::Pair {
                row,
                partner,
                weight: 1.0,
            })
        };
        let listed = |publication: &Publication| -> Vec<String> {
            publication.lists.iter().map(|l| l.item.clone()).collect()
        };
        owner_applies(&mut owner, &read, vec![pair(a, b)]);
        assert_eq!(listed(&owner.publish()), ["a"], "first lists");
        owner_applies(&mut owner, &read, vec![pair(a, b), seen(a, 0)]);
        let publication = owner.publish();
        assert_eq!(publication.views.len(), 1, "a changed");
        assert!(publication.lists.is_empty(), "a count grew, no member came");
        owner_applies(&mut owner, &read, vec![pair(a, c)]);
        assert_eq!(listed(&owner.publish()), ["a"], "c joined a's list");
    }

    #[test]
    fn with_a_significance_a_small_change_waits_and_is_published_once_it_adds_up() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        owner.significance = 0.5;
        let (a, _) = intern_item(&mut read, "a", &config);
        let entered = |weight| ItemOp::Pair(PairOp::Entered { item: a, weight });
        let seen = |weight| {
            ItemOp::Seen(Seen {
                item: a,
                weight,
                ts_ms: 0,
                segment: None,
            })
        };
        owner_applies(&mut owner, &read, vec![entered(10.0), seen(10.0)]);
        assert_eq!(owner.publish().views[0].entries, 10.0, "first view");
        owner_applies(&mut owner, &read, vec![entered(3.0), seen(1.0)]);
        assert!(owner.publish().views.is_empty(), "30 % is not significant");
        owner_applies(&mut owner, &read, vec![entered(3.0), seen(1.0)]);
        let views = owner.publish().views;
        assert_eq!(views[0].entries, 16.0, "60 % is");
        assert_eq!(views[0].seen, 2, "seen in both");
    }

    #[test]
    fn a_publication_travels_as_keyed_records_and_comes_back_whole() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        let [a, b] = ["a", "b"].map(|name| intern_item(&mut read, name, &config).0);
        let pair = |row, partner| {
            ItemOp::Pair(PairOp::Pair {
                row,
                partner,
                weight: 1.0,
            })
        };
        owner_applies(&mut owner, &read, vec![pair(a, b), pair(b, a), seen(a, 0)]);
        let publication = owner.publish();
        assert!(!publication.lists.is_empty(), "a and b are neighbours");
        let mut back = Publication::default();
        let mut keys = Vec::new();
        for (key, payload) in publication.keyed_records() {
            back.add_keyed(&key, &payload).unwrap();
            keys.push(key);
        }
        assert_eq!(back, publication);
        let [view, lists] = [b'v', b'l'].map(|kind| record_key(kind, "a"));
        assert!(keys.contains(&view) && keys.contains(&lists), "{keys:?}");
        let unknown = back.add_keyed(b"x123", &[]).unwrap_err();
        assert!(
            unknown.detail.contains("neither b'v' nor b'l'"),
            "{unknown}"
        );
        assert!(
            back.add_keyed(b"v", &[0xff; 3]).is_err(),
            "a view that does not decode"
        );
        assert_eq!(back.len(), publication.len(), "refused records add nothing");
    }

    #[test]
    fn an_inputs_work_applies_once_however_often_it_arrives() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        let [a, b] = ["a", "b"].map(|name| intern_item(&mut read, name, &config).0);
        let entered = |item| ItemOp::Pair(PairOp::Entered { item, weight: 1.0 });
        let at = |seq| Position { stream: 7, seq };
        let work_of = |inputs: &[(i64, u32)]| {
            let mut work = ItemWork::default();
            for &(seq, item) in inputs {
                work.ops.push(entered(item));
                work.mark_input(at(seq));
            }
            work
        };
        let entries = |owner: &ItemOwner, name: &str| {
            let item = owner.items.ids.get(name).unwrap();
            ItemView::of(&owner.items, item, 0).entries
        };
        let apply = |owner: &mut ItemOwner, work: &ItemWork| {
            for (_, batch) in work.batches(&read, 4) {
                owner.apply(batch, &config).unwrap();
            }
        };
        apply(&mut owner, &work_of(&[(1, a), (2, b)]));
        assert_eq!((entries(&owner, "a"), entries(&owner, "b")), (1.0, 1.0));
        apply(&mut owner, &work_of(&[(1, a), (2, b)]));
        assert_eq!(
            (entries(&owner, "a"), entries(&owner, "b")),
            (1.0, 1.0),
            "sent again: applied once"
        );
        apply(&mut owner, &work_of(&[(2, b), (3, a), (4, a)]));
        assert_eq!(
            (entries(&owner, "a"), entries(&owner, "b")),
            (3.0, 1.0),
            "only the inputs after the last applied"
        );
        assert_eq!(owner.applied_inputs[&7], 4);
        assert_eq!(owner.skipped_inputs, 3, "1 and 2, then 2 again");
        let unmarked = ItemWork {
            ops: vec![entered(b)],
            ..ItemWork::default()
        };
        apply(&mut owner, &unmarked);
        assert_eq!(
            entries(&owner, "b"),
            2.0,
            "work without marks always applies"
        );
    }

    #[test]
    fn an_owner_restored_from_its_cuts_equals_it_and_publishes_everything_once() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        let mut owner = ItemOwner::new(&config);
        let names: Vec<String> = (0..10).map(|i| format!("i{i}")).collect();
        let ids: Vec<u32> = (names.iter())
            .map(|name| intern_item(&mut read, name, &config).0)
            .collect();
        let pair = |row, partner| {
            ItemOp::Pair(PairOp::Pair {
                row,
                partner,
                weight: 1.0,
            })
        };
        // Rows of i0..i7; i8 is only a partner (another owner's item).
        let first: Vec<ItemOp> = (ids[..9].windows(2)).map(|w| pair(w[0], w[1])).collect();
        owner_applies(&mut owner, &read, first);
        owner.applied_inputs.insert(3, 41);
        let (stored, applied) = owner.cut(4, false);
        assert_eq!(applied, [(3, 41)]);
        let index = |owner: &ItemOwner, name: &str| owner.items.ids.get(name).unwrap();
        let partner = index(&owner, "i8");
        let stored_items: Vec<u32> = stored.items.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            stored_items.len(),
            8,
            "every item it owns is new: {stored_items:?}"
        );
        assert!(!stored_items.contains(&partner), "a partner has no record");
        owner.publish();

        owner_applies(
            &mut owner,
            &read,
            vec![pair(ids[9], ids[0]), seen(ids[9], 5)],
        );
        let (later, _) = owner.cut(4, false);
        let i9 = index(&owner, "i9");
        let pages: Vec<u32> = later.items.iter().map(|(i, _)| i / 4).collect();
        assert_eq!(
            pages,
            [i9 / 4],
            "only i9 changed: its page, without the partner i8"
        );
        let mut merged: BTreeMap<u32, Vec<u8>> = stored.items.into_iter().collect();
        merged.extend(later.items);
        let stored = ModelRecords {
            model: later.model,
            items: merged.into_iter().collect(),
        };

        let mut restored = ItemOwner::restore(&config, stored, &[(3, 41)]).unwrap();
        let state = |(owner, name): (&ItemOwner, &str)| {
            let item = index(owner, name);
            let (similar, _) = owner.items.cooccurrence.lists(item);
            let view = ItemView::of(&owner.items, item, 0);
            (similar.iter().map(|n| n.0).collect::<Vec<_>>(), view)
        };
        for name in &names {
            assert_eq!(state((&restored, name)), state((&owner, name)), "{name}");
        }
        assert_eq!(restored.applied_inputs[&3], 41);
        assert_eq!(
            restored.publish().views.len(),
            9,
            "every item it owns, once"
        );
        assert!(restored.publish().views.is_empty());
        assert!(
            restored.cut(4, false).0.items.is_empty(),
            "nothing changed since"
        );
        assert_eq!(
            restored.cut(4, true).0.items.len(),
            9,
            "every page: its own items"
        );
    }

    #[test]
    fn input_marks_that_do_not_cover_the_ops_in_runs_are_refused() {
        let config = EngineConfig::default();
        let entered = ItemOp::Pair(PairOp::Entered {
            item: 0,
            weight: 1.0,
        });
        let mark = |ops_end| InputMark {
            at: Position { stream: 0, seq: 1 },
            ops_end,
        };
        let batch = |marks: Vec<InputMark>| WorkBatch {
            items: vec!["a".into()],
            work: ItemWork {
                ops: vec![entered; 3],
                inputs: marks,
                ..ItemWork::default()
            },
            ..WorkBatch::default()
        };
        for marks in [
            vec![mark(2)],
            vec![mark(2), mark(2), mark(3)],
            vec![mark(4)],
            vec![mark(0), mark(3)],
        ] {
            let refused = ItemOwner::new(&config).apply(batch(marks.clone()), &config);
            assert!(
                matches!(refused, Err(BatchError::Inputs { .. })),
                "{marks:?}: {refused:?}"
            );
        }
        assert!(ItemOwner::new(&config)
            .apply(batch(vec![mark(1), mark(3)]), &config)
            .is_ok());
    }
}
