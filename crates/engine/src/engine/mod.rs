//! The engine: a deterministic state machine. `apply(event)` learns, `recommend(user, n)` ranks.
//!
//! State is split the way the pipeline will distribute it: [`UserShard`] (profiles, user
//! factors, dedup window, sampling RNG) belongs to whichever worker owns the user's partition;
//! [`ItemModel`] (item ids, item factors, co-occurrence, popularity) is shared by all workers.
//! With one worker, the same events in the same order with the same config give the same state.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use rustc_hash::FxHashMap;

use crate::catalog::{CatalogUpdate, ListingChange, Scores};
use crate::config::CoocConfig;
use crate::config::{EngineConfig, RankingConfig};
use crate::cooccurrence::{pair_ops, PairEvent};
use crate::dedup::{CarriedKey, DedupWindow, KeysCut};
use crate::event::{Event, EventType, ProfileUpdate};
use crate::experiments;
use crate::factorization::{initial_vector, learn};
use crate::online::{Observed, OnlineTally};
use crate::popularity::Popularity;
use crate::profile::Observation;
use crate::ranking::{self, Asker, Filters, Scored};
#[cfg(test)]
use crate::ranking::{Source, Sources};
use crate::rebuy::RebuyTally;
use crate::rng::SplitMix64;
use crate::segments::segment_name;
use crate::triggers::{EventFacts, Fired, Rules, TriggerState, Watchers};

mod batch_check;
mod capture;
mod clocks;
mod feedback;
mod firing;
mod item_owner;
mod item_side;
mod item_view;
mod model_records;
mod portable;
mod records;
mod replica;
mod request;
mod shown;
mod variants;
mod view_reader;
mod work_batch;

pub use crate::state::{ItemModel, Position, SharedItems, UserState, DEFAULT_STREAM, NO_CATEGORY};
pub use batch_check::{BatchError, Range};
pub use clocks::StreamClocks;
pub use item_owner::ItemOwner;
pub use item_side::{intern_like, InputMark, ItemOp, ItemWork, Seen};
use item_side::{Deferred, ItemSide, LiveItems};
pub use item_view::{ItemLists, ItemView, Publication, ViewError};
pub use view_reader::{Installed, ItemKeys};
pub use work_batch::{item_key, item_partition, WorkBatch};

use capture::Capture;
pub use capture::USERS_PER_STEP;
pub use model_records::ModelRecords;
pub use portable::PortableUser;
use records::{decode_prefix, decode_within, encode};
pub use records::{
    records_digest, records_online, Changes, DecodeError, EngineRecords, ItemCut, UserCut,
    SMALL_RECORD_LIMIT,
};
pub use replica::{apply_update, ModelUpdate, ReplicaUpdate};
pub use request::{Answer, Request, Visitor};
use shown::worth;

/// User-side state for the users one worker owns.
#[derive(Clone, Debug)]
pub struct UserShard {
    /// Shared copy-on-write: a checkpoint's cut holds the users it will encode while learning
    /// goes on, and a write copies only a user a cut still holds.
    pub users: FxHashMap<Box<str>, Arc<UserState>>,
    pub dedup: DedupWindow,
    /// Stream time per input stream: the time of each stream's users.
    pub clocks: StreamClocks,
    pub rng: SplitMix64,
    /// Times `apply` found the shared item model locked by another worker.
    pub contended: u64,
    /// Trigger deadlines and cooldowns of this shard's users.
    pub triggers: TriggerState,
    /// Online metrics of this shard's users' events (see `online`).
    pub online: OnlineTally,
    /// How often this shard's users re-buy, by category (see `rebuy`).
    pub rebuys: RebuyTally,
    /// Triggers fired by the input being applied (returned with its effects).
    fired: Vec<Fired>,
    /// Whether `apply` records what it did to the item model for other replicas.
    replicate: bool,
    /// Item-model updates of the input being applied (returned with its effects).
    model_updates: Vec<ModelUpdate>,
    /// Whether `apply` sends its item-side work to the items' owners instead of applying it.
    defer: bool,
    /// Item-side work of the input being applied, when deferred (returned with its effects).
    item_work: ItemWork,
    /// Who of this shard's users recently viewed or carted each item, when deferred: the
    /// owners never fire catalog triggers (they hold no users), so the watchers stay with the
    /// users, and each shard fires for its own (`Engine::listing_changed`).
    watchers: Watchers,
    /// Events applied by this shard (the clock of `UserState::touched`).
    steps: u64,
    /// `steps` at the last checkpoint: users touched later are dirty.
    checkpointed: u64,
    /// The users touched since the last checkpoint, so a cut need not scan them all.
    dirty: DirtyUsers,
    /// A cut of the users under way (see `engine::capture`).
    capture: Option<Capture>,
}

impl UserShard {
    /// A shard with no users in memory and no effects pending.
    pub(crate) fn from_parts(
        dedup: DedupWindow,
        clocks: StreamClocks,
        rng: SplitMix64,
        triggers: TriggerState,
    ) -> UserShard {
        UserShard {
            users: FxHashMap::default(),
            dedup,
            clocks,
            rng,
            contended: 0,
            triggers,
            online: OnlineTally::default(),
            rebuys: RebuyTally::default(),
            fired: Vec::new(),
            replicate: false,
            model_updates: Vec::new(),
            defer: false,
            item_work: ItemWork::default(),
            watchers: Watchers::default(),
            steps: 0,
            checkpointed: 0,
            dirty: DirtyUsers::default(),
            capture: None,
        }
    }
}

/// The users touched since the last checkpoint, each once. Bounded: before the shard's first
/// cut (an engine that may never be checkpointed) past a quarter of the users, after it past
/// all of them, it drops the list, and the next cut scans every user at once. So a shard that
/// is checkpointed keeps its list however many of its users an interval touches, and its cuts
/// stay in steps.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirtyUsers {
    pub(crate) ids: Vec<Box<str>>,
    pub(crate) overflowed: bool,
    /// Whether the shard was cut before this list began.
    after_cut: bool,
}

impl DirtyUsers {
    /// The list a cut leaves behind.
    pub(crate) fn after_cut() -> DirtyUsers {
        DirtyUsers {
            after_cut: true,
            ..DirtyUsers::default()
        }
    }

    fn note(&mut self, id: &str, users: usize) {
        if self.overflowed {
            return;
        }
        let bound = if self.after_cut { users } else { users / 4 };
        if self.ids.len() >= bound.max(1024) {
            self.ids = Vec::new();
            self.overflowed = true;
            return;
        }
        self.ids.push(id.into());
    }
}

/// The user of an input of `stream` at a new step: created if new, copied if a checkpoint's cut
/// still holds it, marked changed.
fn step_user<'a>(
    users: &'a mut FxHashMap<Box<str>, Arc<UserState>>,
    (dirty, capture): (&mut DirtyUsers, &mut Option<Capture>),
    (checkpointed, steps): (u64, &mut u64),
    (id, ts_ms, stream): (&str, i64, u64),
    config: &EngineConfig,
) -> &'a mut UserState {
    *steps += 1;
    let count = users.len();
    let shared = users
        .entry(id.into())
        .or_insert_with(|| Arc::new(UserState::new(id, ts_ms, config)));
    let user = Capture::write(capture, id, shared);
    touch(dirty, (count, checkpointed, *steps), id, user);
    user.stream = stream;
    user
}

/// Marks a user changed at the shard's current step (`users`: how many the shard holds).
fn touch(
    dirty: &mut DirtyUsers,
    (users, checkpointed, steps): (usize, u64, u64),
    id: &str,
    user: &mut UserState,
) {
    if user.touched <= checkpointed {
        dirty.note(id, users);
    }
    user.touched = steps;
}

/// Whether `apply` learned from an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Learned {
        new_user: bool,
        new_item: bool,
    },
    Duplicate,
    /// A new item while the model holds `engine.max_items`: nothing learned.
    ItemLimit,
}

/// What an input caused besides learning, for the edge to publish or drop: the campaign
/// triggers it fired (in firing order) and, when replicating, the item-model updates the other
/// instances apply. Nothing waits in the engine for a caller to collect.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub fired: Vec<Fired>,
    pub model_updates: Vec<ModelUpdate>,
    /// The item-side work of a deferring engine (see `Engine::defer_item_work`).
    pub item_work: ItemWork,
}

/// `apply`'s result.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub applied: Applied,
    pub effects: Effects,
}

/// `apply_catalog`'s result: the listing's change (`None` when a newer version of the item is
/// already applied) and the triggers it fired.
#[derive(Clone, Debug)]
pub struct Listed {
    pub change: Option<(u32, ListingChange)>,
    pub effects: Effects,
}

/// One worker's engine: its own users, an item model that may be shared with other workers.
/// With one worker (`Engine::new`) the lock is never contended and the engine is deterministic.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    items: SharedItems,
    shard: UserShard,
    /// Campaign trigger rules; none by default.
    rules: Arc<Rules>,
}

impl Clone for Engine {
    /// A deep copy: the clone gets its own item model.
    fn clone(&self) -> Engine {
        Engine {
            config: self.config.clone(),
            items: Arc::new(RwLock::new(self.read().clone())),
            shard: self.shard.clone(),
            rules: self.rules.clone(),
        }
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        let items = Arc::new(RwLock::new(ItemModel::new(&config)));
        Engine::with_items(config, items, 0)
    }

    /// `count` workers' engines on one fresh item model (the first is `Engine::new`'s).
    pub fn workers(config: &EngineConfig, count: usize) -> Vec<Engine> {
        let items: SharedItems = Arc::new(RwLock::new(ItemModel::new(config)));
        let workers = 0..count.max(1) as u64;
        workers
            .map(|worker| Engine::with_items(config.clone(), items.clone(), worker))
            .collect()
    }

    /// A worker's engine on a shared item model; `worker` varies the sampling seed.
    pub fn with_items(config: EngineConfig, items: SharedItems, worker: u64) -> Engine {
        let mut shard = UserShard::from_parts(
            DedupWindow::new(config.dedup.clone()),
            StreamClocks::default(),
            SplitMix64::new(config.seed.wrapping_add(worker)),
            TriggerState::default(),
        );
        shard.online.align(&experiments::arms(&config.experiments));
        Engine {
            config,
            items,
            shard,
            rules: Arc::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The item model this engine learns into (shared with other workers, and with the follower
    /// of other instances' updates).
    pub fn shared_items(&self) -> SharedItems {
        self.items.clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, ItemModel> {
        self.items
            .read()
            .expect("a worker panicked while updating the item model")
    }

    pub fn user(&self, user_id: &str) -> Option<&UserState> {
        self.shard.users.get(user_id).map(|user| &**user)
    }

    /// How often learning waited for another worker's hold on the item model.
    pub fn contended_writes(&self) -> u64 {
        self.shard.contended
    }

    pub fn user_count(&self) -> usize {
        self.shard.users.len()
    }

    pub fn item_count(&self) -> usize {
        self.read().ids.len()
    }

    pub fn item_index(&self, item_id: &str) -> Option<u32> {
        self.read().ids.get(item_id)
    }

    pub fn item_id(&self, item: u32) -> String {
        self.read().ids.name(item).to_owned()
    }

    /// Item ids of several indices under one lock.
    pub fn item_ids(&self, items: impl IntoIterator<Item = u32>) -> Vec<String> {
        let model = self.read();
        items
            .into_iter()
            .map(|i| model.ids.name(i).to_owned())
            .collect()
    }

    /// Learns from one cleaned event of the default stream (one ordered input: a file, a
    /// single partition). Duplicates (within the dedup window) change nothing else.
    pub fn apply(&mut self, event: &Event) -> Outcome {
        self.apply_on(DEFAULT_STREAM, event)
    }

    /// Learns from one cleaned event that arrived on input `stream` (a partition): its
    /// duplicates, deadlines and the user's time are judged by that stream's time. Returns
    /// whether it was learned and what it caused.
    pub fn apply_on(&mut self, stream: u64, event: &Event) -> Outcome {
        let applied = self.learn(stream, event);
        Outcome {
            applied,
            effects: self.take_effects(),
        }
    }

    /// The triggers fired and model updates recorded by the input being applied.
    fn take_effects(&mut self) -> Effects {
        Effects {
            fired: std::mem::take(&mut self.shard.fired),
            model_updates: std::mem::take(&mut self.shard.model_updates),
            item_work: std::mem::take(&mut self.shard.item_work),
        }
    }

    fn learn(&mut self, stream: u64, event: &Event) -> Applied {
        if !self.shard.dedup.first_sighting(stream, event) {
            return Applied::Duplicate;
        }
        let items = self.items.clone();
        let mut guard = match items.try_write() {
            Ok(guard) => guard,
            Err(_) => {
                self.shard.contended += 1;
                items
                    .write()
                    .expect("a worker panicked while updating the item model")
            }
        };
        let items = &mut *guard;
        let Some((item, new_item)) = intern_within_limit(items, &event.item_id, &self.config)
        else {
            return Applied::ItemLimit;
        };
        self.shard.clocks.advance(stream, event.ts_ms);
        let named = event
            .category
            .as_deref()
            .map(|n| items.categories.intern(n));
        // The catalog's category, when events carry none.
        let category =
            named.or(Some(items.category_of[item as usize]).filter(|&c| c != NO_CATEGORY));
        items.latest_ts_ms = items.latest_ts_ms.max(event.ts_ms);
        let new_user = !self.shard.users.contains_key(event.user_id.as_str());
        let config = &self.config;
        let input = (&*event.user_id, event.ts_ms, stream);
        let clock = (self.shard.checkpointed, &mut self.shard.steps);
        let marks = (&mut self.shard.dirty, &mut self.shard.capture);
        let user = step_user(&mut self.shard.users, marks, clock, input, config);
        let half_life = config.profile.half_life_ms;
        // What the trigger rules compare with after learning; nothing to compute without rules.
        let before = (!new_user && !self.rules.is_empty()).then(|| {
            let profile = &user.profile;
            (
                profile.last_seen_ms,
                profile.top_category(event.ts_ms, half_life),
            )
        });
        let weight = config.weights.of(event.kind);
        let profile = &user.profile;
        let pair_event = PairEvent {
            item,
            weight,
            ts_ms: event.ts_ms,
            history: &profile.recent,
            new_to_user: profile.recent_position(item).is_none(),
            first_purchase: event.kind == EventType::Purchase && !profile.has_purchased(item),
        };
        if event.kind == EventType::Purchase {
            let rebuy = !pair_event.first_purchase;
            self.shard.rebuys.record(category, rebuy);
        }
        let observed = Observed {
            item,
            ts_ms: event.ts_ms,
            new_item: pair_event.new_to_user,
            purchase: (event.kind == EventType::Purchase).then(|| worth(event, items, item)),
        };
        let mut update = self
            .shard
            .replicate
            .then(|| ModelUpdate::begin(items, event, &pair_event, config));
        let watched = matches!(event.kind, EventType::View | EventType::AddToCart);
        let learned = Learned {
            pair_event,
            named,
            segment: user.segment,
            watcher: (watched && self.rules.watch_items()).then_some(&*event.user_id),
        };
        let cooc = items.cooccurrence.config().clone();
        let rng = &mut self.shard.rng;
        let deltas = if self.shard.defer {
            let (work, watchers) = (&mut self.shard.item_work, &mut self.shard.watchers);
            let mut side = Deferred {
                read: items,
                work,
                watchers,
                segment_trending_size: config.content.segment_trending_size,
            };
            send_item_work(&mut side, &mut user.factors, learned, (&cooc, rng), config);
            None
        } else {
            items.cooccurrence.touch(&learned.pair_event);
            let mut side = LiveItems::new(items, config);
            side.deltas = update.as_ref().map(|_| Vec::new());
            send_item_work(&mut side, &mut user.factors, learned, (&cooc, rng), config);
            side.deltas.take()
        };
        if let (Some(update), Some(deltas)) = (update.as_mut(), deltas) {
            update.factor_deltas = deltas
                .into_iter()
                .map(|(i, delta)| (items.ids.name(i).to_owned(), delta))
                .collect();
        }
        self.shard.model_updates.extend(update);
        drop(guard);
        let observation = Observation {
            item,
            kind: event.kind,
            ts_ms: event.ts_ms,
            weight,
            category,
        };
        if let Some(shown) = user.shown.as_deref_mut() {
            if let Some(judgement) = shown.judge(observed, &config.online) {
                let arms = experiments::arm_indices(&config.experiments, &event.user_id);
                self.shard.online.count(&judgement, arms);
            }
        }
        if let Some(feedback) = user.feedback.as_deref_mut() {
            if feedback.touched(item, event.ts_ms, config.online.horizon_ms) {
                let arms = experiments::arm_indices(&config.experiments, &event.user_id);
                self.shard.online.count_click(arms);
            }
        }
        user.profile.record(observation, &config.profile);
        if !self.rules.is_empty() {
            let facts = EventFacts {
                user_id: &event.user_id,
                stream,
                kind: event.kind,
                item,
                category,
                ts_ms: event.ts_ms,
                previous_seen_ms: before.map(|b| b.0),
                top_category_before: before.and_then(|b| b.1),
                top_category_after: user.profile.top_category(event.ts_ms, half_life),
                events: user.profile.events(),
            };
            self.evaluate_triggers(&facts);
        }
        Applied::Learned { new_user, new_item }
    }

    /// Top-`n` items for `user_id`, ranked as their experiment variants say (the configured
    /// ranking when there are no experiments).
    pub fn recommend(&self, user_id: &str, n: usize, filters: &Filters) -> Vec<Scored> {
        if self.config.experiments.is_empty() {
            return self.recommend_ranked(user_id, n, filters, &self.config.ranking);
        }
        let treatment = self.treatment(user_id);
        let filters = treatment.filters(filters);
        self.recommend_ranked(user_id, n, &filters, &treatment.ranking)
    }

    /// Top-`n` items with an explicit ranking (evaluation compares several).
    pub fn recommend_ranked(
        &self,
        user_id: &str,
        n: usize,
        filters: &Filters,
        ranking: &RankingConfig,
    ) -> Vec<Scored> {
        let user = self.shard.users.get(user_id).map(|user| &**user);
        let items = self.read();
        let now_ms = user
            .and_then(|u| self.shard.clocks.time(u.stream))
            .unwrap_or(items.latest_ts_ms);
        let asker = Asker {
            user,
            now_ms,
            rebuys: &self.shard.rebuys,
        };
        ranking::recommend(&items, asker, &self.config, ranking, n, filters)
    }

    /// The time of input `stream`: the latest event time applied from it.
    pub fn stream_time(&self, stream: u64) -> Option<i64> {
        self.shard.clocks.time(stream)
    }

    /// Every stream's time (checkpointed with the streams' positions).
    pub fn stream_times(&self) -> &std::collections::BTreeMap<u64, i64> {
        self.shard.clocks.times()
    }

    /// Moves `stream`'s time to at least `ts_ms` (a partition restored from another instance
    /// continues at the time it had there), firing the deadlines that passes.
    pub fn advance_stream_time(&mut self, stream: u64, ts_ms: i64) -> Effects {
        self.shard.clocks.advance(stream, ts_ms);
        if !self.rules.is_empty() {
            self.fire_due(stream);
        }
        self.take_effects()
    }

    /// `stream`'s dedup keys since arrival number `after`, the latest `max`: what its partition
    /// carries to a new owner, a checkpoint at a time (see `DedupWindow::keys_after`).
    pub fn dedup_keys_after(&self, stream: u64, after: u64, max: usize) -> KeysCut {
        self.shard.dedup.keys_after(stream, after, max)
    }

    /// Takes the dedup keys a partition's previous owner carried as `stream`'s own (see
    /// `DedupWindow::adopt`).
    pub fn adopt_dedup_keys(&mut self, stream: u64, keys: &[CarriedKey]) {
        self.shard.dedup.adopt(stream, keys);
    }

    /// Applies a profile update of the default stream (see `apply`).
    pub fn apply_profile(&mut self, update: &ProfileUpdate) -> Effects {
        self.apply_profile_on(DEFAULT_STREAM, update)
    }

    /// Applies a profile update that arrived on `stream`: the user's attributes, and with them
    /// their segment. The stream's time moves on with it, as with any input.
    pub fn apply_profile_on(&mut self, stream: u64, update: &ProfileUpdate) -> Effects {
        self.update_profile(stream, update);
        self.take_effects()
    }

    fn update_profile(&mut self, stream: u64, update: &ProfileUpdate) {
        self.shard.clocks.advance(stream, update.ts_ms);
        let mut guard = self
            .items
            .write()
            .expect("a worker panicked while updating the item model");
        let items = &mut *guard;
        items.latest_ts_ms = items.latest_ts_ms.max(update.ts_ms);
        let config = &self.config;
        let input = (&*update.user_id, update.ts_ms, stream);
        let clock = (self.shard.checkpointed, &mut self.shard.steps);
        let marks = (&mut self.shard.dirty, &mut self.shard.capture);
        let user = step_user(&mut self.shard.users, marks, clock, input, config);
        user.update_attributes(update, config.clean.max_attributes);
        user.segment = segment_name(&user.attributes, &config.content)
            .and_then(|name| items.segments.intern(&name, config.content.max_segments));
        drop(guard);
        if !self.rules.is_empty() {
            self.fire_due(stream);
        }
    }

    /// Applies a catalog update; `None` when a newer version of the item is already applied.
    /// Catalog times do not move the engine's clock: a catalog may be loaded long after (or
    /// before) the events it describes.
    pub fn apply_catalog(&mut self, update: &CatalogUpdate) -> Listed {
        let change = self.list(update);
        Listed {
            change,
            effects: self.take_effects(),
        }
    }

    fn list(&mut self, update: &CatalogUpdate) -> Option<(u32, ListingChange)> {
        let mut guard = self
            .items
            .write()
            .expect("a worker panicked while updating the item model");
        let (item, change) = apply_listing(&mut guard, update, &self.config)?;
        let now_ms = guard.latest_ts_ms;
        drop(guard);
        if self.rules.watch_items() {
            let updated_at = match update {
                CatalogUpdate::Upsert(listed) => listed.updated_at_ms,
                CatalogUpdate::Remove { .. } => now_ms,
            };
            self.evaluate_catalog_triggers(item, &change, updated_at, now_ms);
        }
        Some((item, change))
    }

    /// Whether the catalog allows recommending the item (unknown items are allowed).
    pub fn recommendable(&self, item: u32) -> bool {
        self.read().catalog.recommendable(item)
    }

    /// The `n` nearest neighbours of an item by co-occurrence, best first (ties by index).
    pub fn similar_items(&self, item: u32, n: usize) -> Vec<(u32, f32)> {
        let model = self.read();
        let mut neighbors: Vec<(u32, f32)> = model
            .cooccurrence
            .similar(item)
            .filter(|&(neighbor, _)| model.catalog.recommendable(neighbor))
            .collect();
        neighbors.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        neighbors.truncate(n);
        neighbors
    }

    /// Approximate heap bytes of user-side and item-side state.
    pub fn memory(&self) -> MemoryUse {
        // The map's slots (id, shared pointer, control byte), then each user's shared state.
        let slot = std::mem::size_of::<(Box<str>, Arc<UserState>)>() + 1;
        let table = self.shard.users.capacity() * slot;
        let users: usize = table
            + self
                .shard
                .users
                .iter()
                .map(|(id, u)| {
                    id.len()
                        + 16
                        + u.profile.heap_bytes()
                        + u.factors.len() * 4
                        + u.attributes
                            .iter()
                            .map(|(k, v)| k.len() + v.len() + 32)
                            .sum::<usize>()
                        + u.shown.as_ref().map_or(0, |s| s.heap_bytes())
                        + u.feedback.as_ref().map_or(0, |f| f.heap_bytes())
                        + std::mem::size_of::<UserState>()
                })
                .sum::<usize>();
        let model = self.read();
        let items = model.ids.heap_bytes()
            + model.factors.heap_bytes()
            + model.cooccurrence.heap_bytes()
            + model.popularity.heap_bytes()
            + model.category_of.heap_bytes()
            + model.catalog.heap_bytes()
            + model.segments.heap_bytes();
        MemoryUse {
            user_bytes: users,
            item_bytes: items,
            users: self.user_count(),
            items: self.item_count(),
        }
    }
}

impl Engine {
    /// Whether the user's state already reflects the input at `at` (the same stream, at or
    /// past it): applying it again would count it twice.
    pub fn already_applied(&self, user_id: &str, at: Position) -> bool {
        self.shard
            .users
            .get(user_id)
            .and_then(|user| user.position)
            .is_some_and(|seen| seen.stream == at.stream && seen.seq >= at.seq)
    }

    /// Forgets every user's input position (the log they came from is gone): the next input
    /// of each counts as new.
    pub fn forget_positions(&mut self) {
        let shard = &mut self.shard;
        for (id, user) in shard.users.iter_mut() {
            if user.position.is_some() {
                Capture::write(&mut shard.capture, id, user).position = None;
            }
        }
    }

    /// Records that the user's state reflects the input at `at` (after applying it).
    pub fn record_position(&mut self, user_id: &str, at: Position) {
        if let Some(user) = self.shard.users.get_mut(user_id) {
            Capture::write(&mut self.shard.capture, user_id, user).position = Some(at);
        }
    }

    /// Whether the user's state is in memory (with a cap on users, cold ones live only in the
    /// store until their next event).
    pub fn has_user(&self, user_id: &str) -> bool {
        self.shard.users.contains_key(user_id)
    }

    /// Puts a stored user back in memory, unchanged (so the next checkpoint skips it).
    /// A record naming items, categories or a segment the item model does not have is refused
    /// (a damaged or mismatched state dir), never used.
    pub fn insert_user(&mut self, user_id: &str, record: &[u8]) -> Result<(), DecodeError> {
        let what = format!("user {user_id:?}");
        let state = records::decode_user(record, &what)?;
        state
            .check_indices(&self.read(), self.config.factorization.rank)
            .map_err(|mismatch| DecodeError {
                what,
                detail: mismatch.to_string(),
            })?;
        self.shard.users.insert(user_id.into(), Arc::new(state));
        Ok(())
    }

    /// Drops the least recently active users already in the store until at most `cap` remain
    /// (never one changed since the last checkpoint, nor one `keep` names). Returns how many.
    pub fn evict_cold_users(&mut self, cap: usize, keep: impl Fn(&str) -> bool) -> usize {
        let users = &mut self.shard.users;
        // Not while a cut is under way: it may still want a cold user.
        if users.len() <= cap || self.shard.capture.is_some() {
            return 0;
        }
        let since = self.shard.checkpointed;
        let mut cold: Vec<(u64, Box<str>)> = users
            .iter()
            .filter(|(id, state)| state.touched <= since && !state.triggers.waiting() && !keep(id))
            .map(|(id, state)| (state.touched, id.clone()))
            .collect();
        let excess = (users.len() - cap).min(cold.len());
        if excess < cold.len() {
            cold.select_nth_unstable(excess);
        }
        for (_, id) in &cold[..excess] {
            users.remove(id);
        }
        excess
    }
}

/// Applies a catalog update to an item model (also how replicas of other instances apply the
/// listings those consumed); `None` when a newer version is already applied.
pub fn apply_listing(
    items: &mut ItemModel,
    update: &CatalogUpdate,
    config: &EngineConfig,
) -> Option<(u32, ListingChange)> {
    let (item, _) = intern_item(items, update.item_id(), config);
    let content = &config.content;
    let change = match update {
        CatalogUpdate::Remove { .. } => items.catalog.remove(item),
        CatalogUpdate::Upsert(listed) => {
            let change = items
                .catalog
                .upsert(item, listed, content.newest_per_attribute)?;
            items.category_of[item as usize] = items.categories.intern(&listed.category);
            items.catalog.observe_popularity(
                item,
                content.popular_per_attribute,
                popularity_scores(&items.popularity),
            );
            change
        }
    };
    Some((item, change))
}

/// What an event's learning tells the item side, besides the user's vector.
struct Learned<'a> {
    pair_event: PairEvent<'a>,
    /// The category the event named (interned).
    named: Option<u32>,
    /// The user's segment.
    segment: Option<u32>,
    /// The user, when catalog triggers watch who viewed or carted an item.
    watcher: Option<&'a str>,
}

/// An event's item-side work, sent to `side` in the order one model applies it: the item's
/// category, the pair counts, the SGD steps (the user's halves happen here), what the item was
/// seen with, its watcher.
fn send_item_work(
    side: &mut impl ItemSide,
    user_factors: &mut [f32],
    learned: Learned<'_>,
    (cooc, rng): (&CoocConfig, &mut SplitMix64),
    config: &EngineConfig,
) {
    let Learned {
        pair_event,
        named,
        segment,
        watcher,
    } = learned;
    let (item, weight, ts_ms) = (pair_event.item, pair_event.weight, pair_event.ts_ms);
    if let Some(category) = named {
        side.category(item, category);
    }
    pair_ops(cooc, pair_event, |op| side.pair(op));
    let strength = weight / config.weights.view.max(f32::MIN_POSITIVE);
    let mf = &config.factorization;
    learn(user_factors, item, strength.sqrt(), side, rng, mf);
    let seen = Seen {
        item,
        weight,
        ts_ms,
        segment,
    };
    side.seen(seen);
    if let Some(user_id) = watcher {
        side.watch(item, user_id, ts_ms);
    }
}

fn popularity_scores(popularity: &Popularity) -> Scores<impl Fn(u32) -> f64 + '_> {
    Scores {
        score: |item| popularity.score(item),
        epoch: popularity.epoch(),
    }
}

/// `intern_item` for an event: once the model holds `engine.max_items` items (0: no cap), a new
/// item is not interned (`None`) and a known one is found with one look-up. Catalog listings,
/// and items other instances accepted, are interned without the cap.
fn intern_within_limit(
    items: &mut ItemModel,
    item_id: &str,
    config: &EngineConfig,
) -> Option<(u32, bool)> {
    let max_items = config.max_items;
    if max_items > 0 && items.ids.len() as u64 >= max_items {
        return items.ids.get(item_id).map(|item| (item, false));
    }
    Some(intern_item(items, item_id, config))
}

fn intern_item(items: &mut ItemModel, item_id: &str, config: &EngineConfig) -> (u32, bool) {
    let before = items.ids.len();
    let item = items.ids.intern(item_id);
    let new_item = items.ids.len() > before;
    if new_item {
        let vector = initial_vector(item_id, config.seed, &config.factorization);
        items.factors.push(&vector);
        items.category_of.push(NO_CATEGORY);
    }
    (item, new_item)
}

#[derive(Clone, Copy, Debug)]
pub struct MemoryUse {
    pub user_bytes: usize,
    pub item_bytes: usize,
    pub users: usize,
    pub items: usize,
}

impl MemoryUse {
    pub fn bytes_per_user(&self) -> f64 {
        self.user_bytes as f64 / self.users.max(1) as f64
    }

    pub fn bytes_per_item(&self) -> f64 {
        self.item_bytes as f64 / self.items.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(kind: EventType, user: &str, item: &str, ts: i64) -> Event {
        Event::new(kind, user, item, ts)
    }

    fn ids(engine: &Engine, list: &[Scored]) -> Vec<String> {
        list.iter()
            .map(|s| engine.item_id(s.item).to_owned())
            .collect()
    }

    #[test]
    fn an_event_on_a_new_item_beyond_max_items_learns_nothing_and_known_items_go_on() {
        let config = EngineConfig {
            max_items: 2,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config);
        let event = |id: &str, user: &str, item: &str, ts: i64| Event {
            event_id: Some(id.into()),
            ..Event::new(EventType::View, user, item, ts)
        };
        engine.apply(&event("e1", "u", "a", 1_000));
        engine.apply(&event("e2", "u", "b", 2_000));
        let refused = event("e3", "v", "c", 3_000);
        assert_eq!(engine.apply(&refused).applied, Applied::ItemLimit);
        assert_eq!((engine.item_count(), engine.user_count()), (2, 1));
        assert_eq!(engine.item_index("c"), None);
        assert_eq!(engine.apply(&refused).applied, Applied::Duplicate);
        let known = engine.apply(&event("e4", "v", "a", 4_000)).applied;
        assert!(matches!(
            known,
            Applied::Learned {
                new_user: true,
                new_item: false
            }
        ));
    }

    #[test]
    fn duplicates_change_nothing_and_news_are_flagged() {
        let mut engine = Engine::new(EngineConfig::default());
        let first = event(EventType::View, "u", "a", 1000);
        assert_eq!(
            engine.apply(&first).applied,
            Applied::Learned {
                new_user: true,
                new_item: true
            }
        );
        assert_eq!(engine.apply(&first).applied, Applied::Duplicate);
        assert_eq!(
            engine
                .apply(&event(EventType::View, "u", "a", 2000))
                .applied,
            Applied::Learned {
                new_user: false,
                new_item: false
            }
        );
        assert_eq!(engine.user("u").unwrap().profile.events(), 2);
    }

    fn user_ids(records: &EngineRecords) -> Vec<&str> {
        records.users.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn checkpoints_carry_only_users_changed_since_the_last() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.apply(&event(EventType::View, "u1", "a", 1000));
        engine.apply(&event(EventType::View, "u2", "a", 2000));
        assert_eq!(user_ids(&engine.to_changed_records()), ["u1", "u2"]);
        engine.mark_checkpointed();
        assert!(engine.to_changed_records().users.is_empty());
        engine.apply(&event(EventType::View, "u2", "b", 3000));
        assert_eq!(user_ids(&engine.to_changed_records()), ["u2"]);
        assert_eq!(user_ids(&engine.to_records()), ["u1", "u2"]);
    }

    #[test]
    fn evicted_users_come_back_unchanged_and_changed_ones_are_kept() {
        let mut engine = Engine::new(EngineConfig::default());
        for (i, user) in ["u1", "u2", "u3", "u4", "u5"].iter().enumerate() {
            engine.apply(&event(EventType::View, user, "a", 1000 + i as i64));
        }
        engine.mark_checkpointed();
        engine.apply(&event(EventType::View, "u1", "b", 2000));
        let before = engine.digest();
        let stored = engine.to_records();

        let evicted = engine.evict_cold_users(2, |user| user == "u2");
        assert_eq!(evicted, 3, "down to the cap");
        let mut resident: Vec<&str> = engine.shard.users.keys().map(|k| &**k).collect();
        resident.sort();
        assert_eq!(
            resident,
            ["u1", "u2"],
            "u1 changed since the checkpoint, u2 kept"
        );
        assert_eq!(
            engine.evict_cold_users(0, |_| false),
            1,
            "only the clean one"
        );

        for (id, record) in &stored.users {
            if !engine.has_user(id) {
                engine.insert_user(id, record).unwrap();
            }
        }
        assert_eq!(engine.digest(), before);
        assert_eq!(user_ids(&engine.to_changed_records()), ["u1"]);
    }

    #[test]
    fn a_stranger_gets_trending_items() {
        let mut engine = Engine::new(EngineConfig::default());
        for (user, item) in [("a", "hit"), ("b", "hit"), ("c", "hit"), ("d", "other")] {
            engine.apply(&event(EventType::View, user, item, 1000));
        }
        let list = engine.recommend("nobody", 2, &Filters::default());
        assert_eq!(ids(&engine, &list), vec!["hit", "other"]);
        assert!(list[0].sources.contains(Source::Popular));
    }

    #[test]
    fn a_bought_item_comes_back_only_in_a_category_its_buyers_rebuy() {
        let bought = |user: &str, item: &str, category: &str, ts| {
            let mut e = event(EventType::Purchase, user, item, ts);
            e.category = Some(category.into());
            e
        };
        // Two shoppers buy coffee twice; two hundred buy a television once.
        let mut events = Vec::new();
        for (n, user) in ["a", "b"].into_iter().enumerate() {
            for again in 0..2 {
                events.push(bought(
                    user,
                    "coffee",
                    "grocery",
                    1_000 + 10 * n as i64 + again,
                ));
            }
        }
        for n in 0..200 {
            events.push(bought(&format!("t{n}"), "tv", "electronics", 2_000 + n));
        }
        events.push(bought("u", "coffee", "grocery", 5_000));
        events.push(bought("u", "tv", "electronics", 5_001));
        events.push(event(EventType::View, "u", "mug", 6_000));
        let recommended = |repurchase_weight| {
            let mut config = EngineConfig::default();
            config.ranking.repurchase_weight = repurchase_weight;
            let mut engine = Engine::new(config);
            for e in &events {
                engine.apply(e);
            }
            ids(&engine, &engine.recommend("u", 5, &Filters::default()))
        };
        assert_eq!(
            recommended(1.0),
            ["mug", "coffee"],
            "bought, so below the viewed mug"
        );
        assert_eq!(recommended(0.0), ["mug"]);
    }

    #[test]
    fn neighbours_of_recent_items_are_recommended_and_purchases_never_are() {
        let mut engine = Engine::new(EngineConfig::default());
        let mut ts = 1_000_000;
        for user in ["a", "b", "c"] {
            for item in ["phone", "case", "charger"] {
                ts += 1000;
                engine.apply(&event(EventType::View, user, item, ts));
            }
        }
        engine.apply(&event(EventType::View, "d", "phone", ts + 1000));
        engine.apply(&event(EventType::Purchase, "d", "case", ts + 2000));
        let filters = Filters {
            exclude_seen: true,
            ..Filters::default()
        };
        let list = engine.recommend("d", 5, &filters);
        let names = ids(&engine, &list);
        assert_eq!(names[0], "charger", "{names:?}");
        assert!(list[0].sources.contains(Source::Cooc));
        assert!(!names.contains(&"case".to_string()), "purchased");
        assert!(!names.contains(&"phone".to_string()), "seen");
        let with_history = engine.recommend("d", 5, &Filters::default());
        assert!(ids(&engine, &with_history).contains(&"phone".to_string()));
        assert!(!ids(&engine, &with_history).contains(&"case".to_string()));
    }

    #[test]
    fn memory_is_reported_per_user_and_item() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.apply(&event(EventType::View, "u", "a", 1000));
        let memory = engine.memory();
        assert_eq!((memory.users, memory.items), (1, 1));
        assert!(
            memory.bytes_per_user() > 128.0,
            "at least the factor vector"
        );
        assert!(memory.bytes_per_item() > 128.0);
    }

    fn shop_events(n: usize) -> Vec<Event> {
        let shop = crate::synthetic::ShopperConfig {
            users: 40,
            items: 200,
            ..Default::default()
        };
        crate::synthetic::Shoppers::new(shop).take(n).collect()
    }

    /// Ranking reuses per-thread buffers: what one request leaves in them must not reach the
    /// next.
    #[test]
    fn a_list_is_the_same_whatever_was_ranked_before_it_on_the_thread() {
        let mut engine = Engine::new(EngineConfig::default());
        let events = shop_events(3000);
        for event in &events {
            engine.apply(event);
        }
        let users: Vec<&str> = events.iter().rev().take(40).map(|e| &*e.user_id).collect();
        let alone: Vec<Vec<Scored>> = users
            .iter()
            .map(|user| {
                let on_a_fresh_thread = || engine.recommend(user, 10, &Filters::default());
                std::thread::scope(|s| s.spawn(on_a_fresh_thread).join().unwrap())
            })
            .collect();
        for (user, expected) in users.iter().zip(&alone) {
            assert!(!expected.is_empty());
            assert_eq!(
                &engine.recommend(user, 10, &Filters::default()),
                expected,
                "{user}"
            );
        }
    }

    /// Found by validating the real-broker tests' outputs: interests decayed for months left a
    /// source's best score subnormal, its normalising factor infinite, and scores `null` in JSON.
    #[test]
    fn interests_decayed_for_months_still_give_finite_scores() {
        let mut engine = Engine::new(EngineConfig::default());
        let day = 24 * 3_600_000;
        for (user, items) in [("u", ["a", "b", "c"]), ("v", ["a", "b", "d"])] {
            for (n, item) in items.iter().enumerate() {
                engine.apply(&event(EventType::View, user, item, 1000 + n as i64));
            }
        }
        for later in [130, 145, 160] {
            engine.apply(&event(EventType::View, "w", "z", later * day));
            let list = engine.recommend("u", 10, &Filters::default());
            assert!(!list.is_empty());
            assert!(list.iter().all(|s| s.score.is_finite()), "{list:?}");
        }
    }

    #[test]
    fn stream_times_and_their_deadlines_survive_a_checkpoint() {
        let window = 1_800_000;
        let rule = format!(
            "[[rule]]\nname = \"cart\"\nkind = \"cart_abandonment\"\nwindow_ms = {window}\ncooldown_ms = 1"
        );
        let rules = Arc::new(Rules::parse(&rule).unwrap());
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_trigger_rules(rules.clone());
        let fired = |outcome: Outcome| outcome.effects.fired;
        assert!(fired(engine.apply_on(1, &event(EventType::AddToCart, "u", "a", 1000))).is_empty());
        let later = engine.apply_on(0, &event(EventType::View, "v", "b", 10_000_000));
        assert!(fired(later).is_empty(), "stream 0's time is not u's");
        let records = engine.to_records();
        let mut restored = Engine::from_records(EngineConfig::default(), &records).unwrap();
        restored.set_trigger_rules(rules);
        assert_eq!(restored.stream_time(1), Some(1000));
        assert_eq!(restored.stream_time(0), Some(10_000_000));
        let before = restored.apply_on(1, &event(EventType::View, "w", "c", 1000 + window - 1));
        assert!(fired(before).is_empty());
        let due = restored.apply_on(1, &event(EventType::View, "w", "d", 1000 + window));
        let users: Vec<String> = fired(due).into_iter().map(|f| f.user_id).collect();
        assert_eq!(users, ["u"]);
    }

    #[test]
    fn records_round_trip_to_an_engine_that_continues_identically() {
        let events = shop_events(3000);
        let (before, after) = events.split_at(2000);
        let mut original = Engine::new(EngineConfig::default());
        for e in before {
            original.apply(e);
        }
        let mut restored =
            Engine::from_records(EngineConfig::default(), &original.to_records()).unwrap();
        assert_eq!(restored.digest(), original.digest());
        assert_eq!(
            restored.apply(&before[10]).applied,
            Applied::Duplicate,
            "dedup window restored"
        );
        for e in after {
            assert_eq!(original.apply(e).applied, restored.apply(e).applied);
        }
        assert_eq!(restored.digest(), original.digest());
        for user in (0..40).map(|u| format!("u{u}")) {
            let a = original.recommend(&user, 10, &Filters::default());
            let b = restored.recommend(&user, 10, &Filters::default());
            assert_eq!(a, b, "{user}");
        }
    }

    #[test]
    fn the_digest_tells_states_apart() {
        let events = shop_events(500);
        let mut a = Engine::new(EngineConfig::default());
        let mut b = Engine::new(EngineConfig::default());
        for e in &events {
            a.apply(e);
            b.apply(e);
        }
        assert_eq!(a.digest(), b.digest());
        b.apply(&event(EventType::View, "u1", "i1", events[499].ts_ms + 1));
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn records_of_another_rank_are_refused_with_the_reason() {
        let mut engine = Engine::new(EngineConfig::default());
        engine.apply(&event(EventType::View, "u", "a", 1000));
        let mut config = EngineConfig::default();
        config.factorization.rank = 8;
        let err = Engine::from_records(config, &engine.to_records()).unwrap_err();
        assert!(err.to_string().contains("rank 32"), "{err}");
        let mut records = engine.to_records();
        records.items.truncate(10);
        let err = Engine::from_records(EngineConfig::default(), &records).unwrap_err();
        assert!(
            err.to_string().contains("cannot decode the item model"),
            "{err}"
        );
    }

    fn arbitrary_events() -> impl Strategy<Value = Vec<Event>> {
        let kinds = prop_oneof![
            Just(EventType::View),
            Just(EventType::Favorite),
            Just(EventType::AddToCart),
            Just(EventType::Purchase)
        ];
        proptest::collection::vec((kinds, 0u8..8, 0u8..30, 0i64..5_000_000), 1..150).prop_map(
            |raw| {
                raw.into_iter()
                    .map(|(kind, user, item, ts)| {
                        event(kind, &format!("u{user}"), &format!("i{item}"), ts)
                    })
                    .collect()
            },
        )
    }

    fn replay(events: &[Event]) -> Vec<Vec<(u32, u32, Sources)>> {
        let mut engine = Engine::new(EngineConfig::default());
        for e in events {
            engine.apply(e);
        }
        (0..8)
            .map(|u| {
                engine
                    .recommend(&format!("u{u}"), 10, &Filters::default())
                    .iter()
                    .map(|s| (s.item, s.score.to_bits(), s.sources))
                    .collect()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn the_same_events_give_the_same_recommendations(events in arbitrary_events()) {
            prop_assert_eq!(replay(&events), replay(&events));
        }

        #[test]
        fn purchased_items_come_back_only_where_buyers_rebuy(
            events in arbitrary_events(),
            repurchase_weight in prop_oneof![Just(0.0f32), Just(1.0f32)],
        ) {
            let mut config = EngineConfig::default();
            config.ranking.repurchase_weight = repurchase_weight;
            let mut engine = Engine::new(config);
            for e in &events {
                engine.apply(e);
            }
            let items = engine.read();
            let category = |item: u32| {
                Some(items.category_of[item as usize]).filter(|&c| c != NO_CATEGORY)
            };
            for u in 0..8 {
                let user = format!("u{u}");
                let Some(state) = engine.user(&user) else { continue };
                let bought: Vec<u32> = state.profile.purchased().collect();
                for scored in engine.recommend(&user, 20, &Filters::default()) {
                    let rebuys = &engine.shard.rebuys;
                    let back = rebuys.comeback(category(scored.item), &engine.config.ranking);
                    prop_assert!(!bought.contains(&scored.item) || back.is_some());
                    prop_assert!(scored.score.is_finite() && scored.score > 0.0);
                }
            }
        }
    }
}
