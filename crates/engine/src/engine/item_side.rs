//! The item side of learning as work addressed to items. A user's event reads the item side
//! (vectors, negatives) and sends it work: the item's category and popularity, pair counts,
//! the item halves of SGD steps, watchers. Each piece changes the state of one item, so an
//! owner of that item can apply it.
//!
//! Learning alone, the item side is the live model ([`LiveItems`]): work applies as it is made,
//! which is the single-model learning rule. Split by item owner, the event reads a read model
//! and collects the work ([`Deferred`] into [`ItemWork`]), applied later by the owners.

use serde::{Deserialize, Serialize};

use crate::config::EngineConfig;
use crate::cooccurrence::PairOp;
use crate::factorization::{item_step, FactorSide};
use crate::rng::SplitMix64;
use crate::triggers::Watchers;

use super::{intern_item, popularity_scores, ItemModel, Position};

/// What an event's learning sends the item side besides [`FactorSide`]'s steps.
pub trait ItemSide: FactorSide {
    /// The event named the item's category (interned in the item model).
    fn category(&mut self, item: u32, category: u32);
    fn pair(&mut self, op: PairOp);
    /// The item was seen with this weight: its popularity, the negative pool and, for a user
    /// in a segment, the segment's trending list.
    fn seen(&mut self, seen: Seen);
    /// A user viewed or carted the item (for catalog triggers).
    fn watch(&mut self, item: u32, user_id: &str, ts_ms: i64);
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub item: u32,
    pub weight: f32,
    pub ts_ms: i64,
    pub segment: Option<u32>,
}

/// One unit of item-side work.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ItemOp {
    Category {
        item: u32,
        category: u32,
    },
    Pair(PairOp),
    /// The item's half of an SGD step; the user's vector before it is `vectors[at..at + rank]`.
    Step {
        item: u32,
        err: f32,
        learning_rate: f32,
        at: usize,
    },
    Seen(Seen),
    /// `users[user]` viewed or carted the item.
    Watch {
        item: u32,
        user: usize,
        ts_ms: i64,
    },
}

impl ItemOp {
    /// The item whose state the work changes: its owner applies it.
    pub fn item(&self) -> u32 {
        match self {
            ItemOp::Category { item, .. }
            | ItemOp::Step { item, .. }
            | ItemOp::Seen(Seen { item, .. })
            | ItemOp::Watch { item, .. } => *item,
            ItemOp::Pair(op) => op.item(),
        }
    }
}

/// Item-side work collected from events, in the order they made it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemWork {
    pub ops: Vec<ItemOp>,
    /// Users' vectors before each step, `rank` floats per step.
    pub vectors: Vec<f32>,
    pub users: Vec<Box<str>>,
    /// Which input each op came from, when the caller says (the pipeline's input positions):
    /// the ops before a mark's `ops_end` and from the previous mark's on came from the input
    /// at its `at`. An owner applies an input's ops once, however often they arrive. Empty:
    /// no positions (every op applies).
    pub inputs: Vec<InputMark>,
}

/// The end of one input's ops in a piece of work (see `ItemWork::inputs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputMark {
    pub at: Position,
    pub ops_end: u32,
}

impl ItemWork {
    /// Applies the work, in order, to the model that owns its items.
    pub fn apply_to(&self, items: &mut ItemModel, config: &EngineConfig) {
        let rank = config.factorization.rank;
        let mut live = LiveItems::new(items, config);
        for op in &self.ops {
            match *op {
                ItemOp::Category { item, category } => live.category(item, category),
                ItemOp::Pair(op) => live.pair(op),
                ItemOp::Step {
                    item,
                    err,
                    learning_rate,
                    at,
                } => live.step(item, err, learning_rate, &self.vectors[at..at + rank]),
                ItemOp::Seen(seen) => live.seen(seen),
                ItemOp::Watch { item, user, ts_ms } => live.watch(item, &self.users[user], ts_ms),
            }
        }
    }

    /// Says that the ops since the previous mark came from the input at `at`.
    pub fn mark_input(&mut self, at: Position) {
        let ops_end = self.ops.len() as u32;
        let marked = self.inputs.last().map_or(0, |mark| mark.ops_end);
        if ops_end > marked {
            self.inputs.push(InputMark { at, ops_end });
        }
    }

    /// Says that the last op came from the input at `at`, extending that input's mark when it
    /// is the last one.
    pub(super) fn mark_input_through(&mut self, at: Position) {
        let ops_end = self.ops.len() as u32;
        match self.inputs.last_mut() {
            Some(mark) if mark.at == at => mark.ops_end = ops_end,
            _ => self.inputs.push(InputMark { at, ops_end }),
        }
    }

    /// Adds another batch's work after this one's.
    pub fn append(&mut self, work: ItemWork) {
        let (vectors, users) = (self.vectors.len(), self.users.len());
        let ops = self.ops.len() as u32;
        (self.inputs).extend(work.inputs.iter().map(|mark| InputMark {
            at: mark.at,
            ops_end: ops + mark.ops_end,
        }));
        self.ops.extend(work.ops.into_iter().map(|op| match op {
            ItemOp::Step {
                item,
                err,
                learning_rate,
                at,
            } => ItemOp::Step {
                item,
                err,
                learning_rate,
                at: vectors + at,
            },
            ItemOp::Watch { item, user, ts_ms } => ItemOp::Watch {
                item,
                user: users + user,
                ts_ms,
            },
            op => op,
        }));
        self.vectors.extend(work.vectors);
        self.users.extend(work.users);
    }

    pub fn clear(&mut self) {
        self.inputs.clear();
        self.ops.clear();
        self.vectors.clear();
        self.users.clear();
    }
}

/// Interns in `owner` the items, categories and segments `read` interned after it, in the same order, so
/// that work made against `read` names the same items in `owner`.
pub fn intern_like(owner: &mut ItemModel, read: &ItemModel, config: &EngineConfig) {
    for item in owner.ids.len()..read.ids.len() {
        intern_item(owner, read.ids.name(item as u32), config);
    }
    for category in owner.categories.len()..read.categories.len() {
        owner
            .categories
            .intern(read.categories.name(category as u32));
    }
    let max_segments = config.content.max_segments;
    for segment in owner.segments.len()..read.segments.len() {
        let name = read.segments.name(segment as u32);
        owner.segments.intern(name, max_segments);
    }
}

/// The live item model of one engine learning alone: work applies at once.
pub struct LiveItems<'a> {
    items: &'a mut ItemModel,
    config: &'a EngineConfig,
    /// With replication on, each vector's change (see `engine::replica`).
    pub deltas: Option<Vec<(u32, Vec<f32>)>>,
}

impl<'a> LiveItems<'a> {
    pub fn new(items: &'a mut ItemModel, config: &'a EngineConfig) -> LiveItems<'a> {
        LiveItems {
            items,
            config,
            deltas: None,
        }
    }
}

impl FactorSide for LiveItems<'_> {
    fn vector(&self, item: u32) -> &[f32] {
        self.items.factors.get(item)
    }

    fn negative(&self, rng: &mut SplitMix64) -> Option<u32> {
        self.items.pool.sample(rng)
    }

    fn step(&mut self, item: u32, err: f32, lr: f32, user_before: &[f32]) {
        let before = self.deltas.is_some().then(|| self.vector(item).to_vec());
        let regularization = self.config.factorization.regularization;
        let vector = self.items.factors.get_mut(item);
        item_step(vector, user_before, err, lr, regularization);
        if let (Some(deltas), Some(before)) = (self.deltas.as_mut(), before) {
            let after = self.items.factors.get(item);
            deltas.push((
                item,
                after.iter().zip(&before).map(|(a, b)| a - b).collect(),
            ));
        }
    }
}

impl ItemSide for LiveItems<'_> {
    fn category(&mut self, item: u32, category: u32) {
        let items = &mut *self.items;
        items.category_of[item as usize] = category;
        let name = items.categories.name(category);
        items.catalog.observe_event_category(item, category, name);
    }

    fn pair(&mut self, op: PairOp) {
        self.items.cooccurrence.apply(op);
    }

    fn seen(&mut self, seen: Seen) {
        let items = &mut *self.items;
        let content = &self.config.content;
        items.pool.push(seen.item);
        items.popularity.observe(seen.item, seen.weight, seen.ts_ms);
        let scores = popularity_scores(&items.popularity);
        let cap = content.popular_per_attribute;
        items.catalog.observe_popularity(seen.item, cap, scores);
        if let Some(segment) = seen.segment {
            let size = content.segment_trending_size;
            let (item, weight, ts_ms) = (seen.item, seen.weight, seen.ts_ms);
            items.segments.observe(segment, item, weight, ts_ms, size);
        }
    }

    fn watch(&mut self, item: u32, user_id: &str, ts_ms: i64) {
        self.items.watchers.watch(item, user_id, ts_ms);
    }
}

/// An event's learning against a read model of the item side: the work is collected for the
/// items' owners, and the read model changes only in what no owner holds (segment trending).
pub struct Deferred<'a> {
    /// Read, except for segment trending (see `seen`).
    pub read: &'a mut ItemModel,
    pub work: &'a mut ItemWork,
    /// The engine's own watchers: a user's views stay with the user's shard.
    pub watchers: &'a mut Watchers,
    pub segment_trending_size: usize,
}

impl FactorSide for Deferred<'_> {
    fn vector(&self, item: u32) -> &[f32] {
        self.read.factors.get(item)
    }

    fn negative(&self, rng: &mut SplitMix64) -> Option<u32> {
        self.read.pool.sample(rng)
    }

    fn step(&mut self, item: u32, err: f32, learning_rate: f32, user_before: &[f32]) {
        let at = self.work.vectors.len();
        self.work.vectors.extend_from_slice(user_before);
        self.work.ops.push(ItemOp::Step {
            item,
            err,
            learning_rate,
            at,
        });
    }
}

impl ItemSide for Deferred<'_> {
    fn category(&mut self, item: u32, category: u32) {
        self.work.ops.push(ItemOp::Category { item, category });
    }

    fn pair(&mut self, op: PairOp) {
        self.work.ops.push(ItemOp::Pair(op));
    }

    /// Segment trending is a list across items, which no item's owner holds: each process
    /// keeps it of its own users' events (a random share of the users, as partitions are).
    fn seen(&mut self, seen: Seen) {
        if let Some(segment) = seen.segment {
            let size = self.segment_trending_size;
            (self.read.segments).observe(segment, seen.item, seen.weight, seen.ts_ms, size);
        }
        let seen = Seen {
            segment: None,
            ..seen
        };
        self.work.ops.push(ItemOp::Seen(seen));
    }

    fn watch(&mut self, item: u32, user_id: &str, ts_ms: i64) {
        self.watchers.watch(item, user_id, ts_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::event::{Event, EventType};

    fn events() -> Vec<Event> {
        let kinds = [EventType::View, EventType::AddToCart, EventType::Purchase];
        (0..600i64)
            .map(|n| {
                let (user, item) = (format!("u{}", n % 13), format!("i{}", (n * 7) % 23));
                let mut event = Event::new(kinds[(n % 5) as usize % 3], &user, &item, n * 1_000);
                event.category = Some(format!("c{}", n % 4));
                event
            })
            .collect()
    }

    /// One engine learning alone, and a deferring engine whose work an owner model applies
    /// every `lag` events, after which the deferring engine reads the owner's model.
    fn alone_and_owned(lag: usize) -> (Engine, ItemModel, Engine) {
        let mut config = EngineConfig::default();
        // Two negatives may draw one item twice in an event: the second step reads its vector
        // as the first left it alone, and as it was before the event from a read model.
        config.factorization.negatives = 1;
        let mut alone = Engine::new(config.clone());
        let mut user_side = Engine::new(config.clone());
        user_side.defer_item_work(true);
        let mut owner = ItemModel::new(&config);
        let mut pending = ItemWork::default();
        for (n, event) in events().iter().enumerate() {
            alone.apply(event);
            let work = user_side.apply(event).effects.item_work;
            pending.append(work);
            if (n + 1) % lag == 0 {
                let shared = user_side.shared_items();
                let mut read = shared.write().unwrap();
                intern_like(&mut owner, &read, &config);
                pending.apply_to(&mut owner, &config);
                pending.clear();
                *read = owner.clone();
            }
        }
        (alone, owner, user_side)
    }

    fn pair_counts(items: &ItemModel) -> Vec<f32> {
        let n = items.ids.len() as u32;
        (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .map(|(a, b)| items.cooccurrence.pair_count(a, b))
            .collect()
    }

    #[test]
    fn work_applied_by_an_owner_after_every_event_is_learning_alone() {
        let (alone, owner, user_side) = alone_and_owned(1);
        let alone_items = alone.read();
        assert_eq!(owner.ids.len(), alone_items.ids.len());
        assert_eq!(pair_counts(&owner), pair_counts(&alone_items));
        for item in 0..owner.ids.len() as u32 {
            assert_eq!(
                owner.factors.get(item),
                alone_items.factors.get(item),
                "item {item}"
            );
            assert_eq!(
                owner.category_of[item as usize],
                alone_items.category_of[item as usize]
            );
        }
        assert_eq!(owner.popularity.score(3), alone_items.popularity.score(3));
        for user in ["u0", "u5", "u12"] {
            assert_eq!(
                alone.user(user).unwrap().factors,
                user_side.user(user).unwrap().factors
            );
            let filters = crate::ranking::Filters::default();
            let items = |e: &Engine| {
                e.recommend(user, 5, &filters)
                    .iter()
                    .map(|s| s.item)
                    .collect::<Vec<_>>()
            };
            assert_eq!(items(&alone), items(&user_side), "{user}");
        }
    }

    /// Counts depend only on the events and the users' windows, so an owner applying work in
    /// batches counts exactly what one model counts; only the vectors learn from stale reads.
    #[test]
    fn work_applied_in_batches_counts_every_pair_exactly_once() {
        let (alone, owner, _) = alone_and_owned(50);
        let alone_items = alone.read();
        assert_eq!(pair_counts(&owner), pair_counts(&alone_items));
        let differ = (0..owner.ids.len() as u32)
            .filter(|&i| owner.factors.get(i) != alone_items.factors.get(i))
            .count();
        assert!(
            differ > 0,
            "vectors learned from a read model 50 events stale"
        );
    }

    /// A user's profile interns their segment in the read model; the owner must know it by
    /// the same id before it applies that user's trending work.
    #[test]
    fn an_owner_interns_the_read_models_segments_too() {
        let config = EngineConfig::default();
        let mut read = ItemModel::new(&config);
        intern_item(&mut read, "i0", &config);
        read.categories.intern("c0");
        read.segments.intern("region=north", 8);
        let mut owner = ItemModel::new(&config);
        intern_like(&mut owner, &read, &config);
        assert_eq!(owner.ids.len(), 1);
        assert_eq!(owner.categories.len(), 1);
        assert_eq!(owner.segments.len(), 1);
        assert_eq!(owner.segments.name(0), "region=north");
    }
}
