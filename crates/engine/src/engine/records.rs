//! Engine state as records: what a checkpoint writes and a restart reads back.
//!
//! The item side is one small record of what is not per item (ids, marginals, popularity,
//! catalog, segments, ...) and one record per item (its factor vector and pair-table rows),
//! written only when the item changed, as users are. A checkpoint's cut ([`Changes`]) is cheap
//! to take: the item model is shared copy-on-write in chunks (`ItemModel::stored_copy`, a few
//! hundred pointers) and users one by one, so all of the encoding happens off the thread that
//! learns.
//! Every record is encoded canonically (maps in key order) with bincode: the same logical state
//! always gives the same bytes.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::{DirtyUsers, Engine, ItemModel, UserShard, UserState};
use crate::changed::ChangedItems;
use crate::config::EngineConfig;
use crate::dedup::DedupWindow;
use crate::engine::StreamClocks;
use crate::experiments;
use crate::factorization::initial_vector;
use crate::neighbors::Row;
use crate::online::{OnlineTally, Shown};
use crate::rebuy::RebuyTally;
use crate::rng::SplitMix64;
use crate::triggers::TriggerState;

/// Engine state as records: the item model's shared part, one record per item and per user,
/// and the worker's own dedup window, clocks, RNG, trigger state and re-buy tally.
#[derive(Clone, Debug)]
pub struct EngineRecords {
    /// The item model without its per-item vectors and rows.
    pub items: Vec<u8>,
    /// (item index, record): the item's factor vector and pair-table rows, in index order.
    pub item_records: Vec<(u32, Vec<u8>)>,
    /// (user id, record), in id order.
    pub users: Vec<(String, Vec<u8>)>,
    /// Each worker's dedup window, clocks, RNG, trigger state and re-buy tally, in worker
    /// order (one when one worker wrote them).
    pub shards: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {detail}")]
pub struct DecodeError {
    pub what: String,
    pub detail: String,
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("engine state always encodes")
}

/// The most a user or item record (stored or portable) or a model update may claim to hold:
/// histories, rows, attributes and trigger state are bounded far below this. A damaged length
/// is an error, not an allocation of whatever it says.
pub const SMALL_RECORD_LIMIT: usize = 16 << 20;
/// The same for the shard record (the dedup window: up to `engine.dedup.max_entries` keys).
const SHARD_RECORD_LIMIT: usize = 512 << 20;
/// The same for the item model's shared record (ids, marginals, popularity, catalog).
const ITEM_MODEL_LIMIT: usize = 2 << 30;

/// Decodes a record that claims at most `LIMIT` bytes of contents.
pub(super) fn decode_within<T: serde::de::DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
    what: &str,
) -> Result<T, DecodeError> {
    let (value, read) = decode_prefix::<T, LIMIT>(bytes, what)?;
    if read != bytes.len() {
        return Err(DecodeError {
            what: what.to_owned(),
            detail: format!("{} trailing bytes", bytes.len() - read),
        });
    }
    Ok(value)
}

/// Decodes the value a record starts with; returns it and the bytes it took.
pub(super) fn decode_prefix<T: serde::de::DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
    what: &str,
) -> Result<(T, usize), DecodeError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    bincode::serde::decode_from_slice(bytes, config).map_err(|e| DecodeError {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Decodes a record made of a learned part and, optionally (records written before it
/// existed have none), an observed part after it (see [`encode_user`]).
pub(super) fn decode_with_tail<T, U, const LIMIT: usize>(
    bytes: &[u8],
    what: &str,
) -> Result<(T, Option<U>), DecodeError>
where
    T: serde::de::DeserializeOwned,
    U: serde::de::DeserializeOwned,
{
    let (learned, read) = decode_prefix::<T, LIMIT>(bytes, what)?;
    let tail = &bytes[read..];
    let observed = match tail.is_empty() {
        true => None,
        false => Some(decode_within::<U, LIMIT>(tail, what)?),
    };
    Ok((learned, observed))
}

/// A user's record: the learned state, then what the user was last shown, if anything. The
/// state digest covers only the learned part ([`learned_part`]): what was shown depends on
/// when updates were published and who asked, not only on the inputs.
pub(super) fn encode_user(state: &UserState) -> Vec<u8> {
    let mut bytes = encode(state);
    if let Some(shown) = &state.shown {
        bytes.extend(encode(&**shown));
    }
    bytes
}

pub(super) fn decode_user(bytes: &[u8], what: &str) -> Result<UserState, DecodeError> {
    let (mut state, shown) = decode_with_tail::<UserState, Shown, SMALL_RECORD_LIMIT>(bytes, what)?;
    state.shown = shown.map(Box::new);
    Ok(state)
}

/// The learned part of a record made of `T` and an observed tail (the whole record if it does
/// not decode: the digest of damage is still a digest).
fn learned_part<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> &[u8] {
    match decode_prefix::<T, SHARD_RECORD_LIMIT>(bytes, "") {
        Ok((_, read)) => &bytes[..read],
        Err(_) => bytes,
    }
}

/// An item record's name in errors.
fn item_record_name(item: u32) -> String {
    format!("item/{item}")
}

/// The worker-local part of a shard besides its users.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct ShardRest {
    dedup: DedupWindow,
    clocks: StreamClocks,
    rng: SplitMix64,
    triggers: TriggerState,
    rebuys: RebuyTally,
    /// Observed, not learned: encoded after the rest, outside the digest (as a user's list).
    #[serde(skip)]
    online: OnlineTally,
}

impl ShardRest {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = encode(self);
        bytes.extend(encode(&self.online));
        bytes
    }

    fn decode(bytes: &[u8], what: &str) -> Result<ShardRest, DecodeError> {
        let (mut rest, online) =
            decode_with_tail::<ShardRest, OnlineTally, SHARD_RECORD_LIMIT>(bytes, what)?;
        rest.online = online.unwrap_or_default();
        Ok(rest)
    }
}

#[derive(Serialize)]
struct ItemRecordRef<'a> {
    factors: &'a [f32],
    cooc: Option<&'a Row>,
    cross: Option<&'a Row>,
}

#[derive(Deserialize)]
struct ItemRecord {
    factors: Vec<f32>,
    cooc: Option<Row>,
    cross: Option<Row>,
}

/// One worker's part of a cut: its changed users, shared copy-on-write like the rows, and the
/// rest of its shard (dedup window, clocks, RNG, trigger state, re-buy tally).
pub struct UserCut {
    pub(super) users: Vec<(Box<str>, Arc<UserState>)>,
    pub(super) shard: ShardRest,
}

impl ItemCut {
    /// Items whose records this part writes.
    pub fn items_changed(&self) -> usize {
        self.changed.len()
    }

    /// The shared record and the changed items' records.
    pub(super) fn encode(self) -> (Vec<u8>, Vec<(u32, Vec<u8>)>) {
        let model = &self.model;
        let item_records = self.changed.iter().map(|&item| {
            let (cooc, cross) = model.cooccurrence.rows(item);
            let factors = model.factors.get(item);
            (
                item,
                encode(&ItemRecordRef {
                    factors,
                    cooc,
                    cross,
                }),
            )
        });
        (encode(model), item_records.collect())
    }
}

impl UserCut {
    /// Users whose records this part writes.
    pub fn users_changed(&self) -> usize {
        self.users.len()
    }
}

/// The item side's part of a cut: the model as it was, shared copy-on-write in chunks
/// (`ItemModel::stored_copy`), and the items changed since the last cut, in index order.
pub struct ItemCut {
    pub(super) model: ItemModel,
    pub(super) changed: Vec<u32>,
}

/// A checkpoint's cut, taken where the engine lives and encoded anywhere (see the module doc):
/// the item side and every worker's part, all taken at one point of the stream (with several
/// workers, while all of them wait: `runtime::rounds`).
pub struct Changes {
    items: ItemCut,
    /// One part per worker, in worker order.
    workers: Vec<UserCut>,
}

impl Changes {
    /// The cut of an engine whose workers' parts were taken with its item side.
    pub fn of(items: ItemCut, workers: Vec<UserCut>) -> Changes {
        Changes { items, workers }
    }

    /// Items whose records this cut writes.
    pub fn items_changed(&self) -> usize {
        self.items.items_changed()
    }

    /// Encodes the cut, letting go of each shared row and user once encoded: a write to one
    /// of them meanwhile copies it, so the sooner they are released the fewer copies.
    pub fn encode(self) -> EngineRecords {
        let (items, item_records) = self.items.encode();
        let mut users = Vec::new();
        let mut shards = Vec::with_capacity(self.workers.len());
        for part in self.workers {
            let encoded = part.users.into_iter();
            users.extend(encoded.map(|(id, state)| (id.into_string(), encode_user(&state))));
            shards.push(part.shard.encode());
        }
        users.sort_by(|a, b| a.0.cmp(&b.0));
        // A user captured twice in a stepped cut (see `engine::capture`) is the same state.
        users.dedup_by(|a, b| a.0 == b.0);
        EngineRecords {
            items,
            item_records,
            users,
            shards,
        }
    }
}

impl Engine {
    /// The state as records (see [`EngineRecords`]).
    pub fn to_records(&self) -> EngineRecords {
        Changes::of(self.item_cut_of(true), vec![self.user_cut_of(None)]).encode()
    }

    /// The state of several workers' engines on one item model, as records (worker order).
    pub fn records_of(workers: &[&Engine]) -> EngineRecords {
        let users = workers.iter().map(|w| w.user_cut_of(None)).collect();
        Changes::of(workers[0].item_cut_of(true), users).encode()
    }

    /// The records a checkpoint writes: the item model's shared part, the shard, and only the
    /// items and users changed since the last `mark_checkpointed` (the store has the others).
    pub fn to_changed_records(&self) -> EngineRecords {
        let users = self.user_cut_of(Some(self.shard.dirty.clone()));
        Changes::of(self.item_cut_of(false), vec![users]).encode()
    }

    /// What changed since the last cut, to encode later (see [`Changes`]); from here on the
    /// engine counts as checkpointed.
    pub fn cut(&mut self) -> Changes {
        let users = self.cut_users();
        Changes::of(self.cut_items(), vec![users])
    }

    /// This worker's users changed since its last cut, and the rest of its shard, at once (see
    /// `begin_users_cut` for a cut in steps); from here on its users count as checkpointed.
    pub fn cut_users(&mut self) -> UserCut {
        let unfinished = self.begin_users_cut();
        debug_assert!(unfinished.is_none(), "a stepped cut was left unfinished");
        self.continue_users_cut(usize::MAX)
            .expect("a cut with no limit completes")
    }

    /// The item side changed since its last cut (by any worker); from here on it counts as
    /// checkpointed. Once per checkpoint, with every worker's `cut_users` at the same point.
    pub fn cut_items(&self) -> ItemCut {
        let part = self.item_cut_of(false);
        self.mark_items_checkpointed();
        part
    }

    /// Everything applied so far is in the store.
    pub fn mark_checkpointed(&mut self) {
        self.mark_users_checkpointed();
        self.mark_items_checkpointed();
    }

    /// Whether a user changed since the last cut: an input, or what an input did not
    /// cause (a list shown, a deadline fired), which the next checkpoint writes too.
    pub fn users_changed_since_cut(&self) -> bool {
        self.shard.steps > self.shard.checkpointed
    }

    pub(super) fn mark_users_checkpointed(&mut self) {
        self.shard.checkpointed = self.shard.steps;
        self.shard.dirty = DirtyUsers::after_cut();
    }

    /// The shard besides its users, as a cut stores it.
    pub(super) fn shard_rest(&self) -> ShardRest {
        ShardRest {
            dedup: self.shard.dedup.stored_copy(),
            clocks: self.shard.clocks.clone(),
            rng: self.shard.rng.clone(),
            triggers: self.shard.triggers.clone(),
            rebuys: self.shard.rebuys.clone(),
            online: self.shard.online.clone(),
        }
    }

    fn mark_items_checkpointed(&self) {
        let mut items = self
            .items
            .write()
            .expect("a worker panicked while updating the item model");
        items.cooccurrence.clear_changed();
        items.factors.clear_changed();
        items.items_stored = items.ids.len();
    }

    /// The users named (`None`: every user) and the rest of the shard.
    fn user_cut_of(&self, dirty: Option<DirtyUsers>) -> UserCut {
        UserCut {
            users: self.changed_users(dirty),
            shard: self.shard_rest(),
        }
    }

    /// The users named (`None`: every user) that changed since the last cut; past the list's
    /// bound, every user that did.
    pub(super) fn changed_users(
        &self,
        dirty: Option<DirtyUsers>,
    ) -> Vec<(Box<str>, Arc<UserState>)> {
        let since = self.shard.checkpointed;
        let users = &self.shard.users;
        match dirty {
            None => users
                .iter()
                .map(|(id, state)| (id.clone(), state.clone()))
                .collect(),
            Some(dirty) if dirty.overflowed => {
                let changed = users.iter().filter(|(_, s)| s.touched > since);
                changed
                    .map(|(id, state)| (id.clone(), state.clone()))
                    .collect()
            }
            Some(dirty) => {
                let current = |id: &str| users.get(id).filter(|s| s.touched > since).cloned();
                let changed = dirty.ids.into_iter();
                changed
                    .filter_map(|id| current(&id).map(|s| (id, s)))
                    .collect()
            }
        }
    }

    /// The item side: every item, or those changed since the last cut.
    fn item_cut_of(&self, everything: bool) -> ItemCut {
        let items = self.read();
        let changed: Vec<u32> = if everything {
            (0..items.ids.len() as u32).collect()
        } else {
            changed_items(&items).iter().collect()
        };
        ItemCut {
            model: items.stored_copy(),
            changed,
        }
    }

    /// Rebuilds an engine from records written by `to_records` (or by checkpoints that add up
    /// to them): every item index below the model's count needs its record. Records of several
    /// workers load as one engine with every user and the first worker's shard: a view for
    /// inspection (a process resumes them with [`Engine::workers_from_records`]).
    pub fn from_records(
        config: EngineConfig,
        records: &EngineRecords,
    ) -> Result<Engine, DecodeError> {
        let items = Arc::new(RwLock::new(decode_items(&config, records)?));
        let first = records.shards.first().ok_or_else(|| DecodeError {
            what: "the shards".into(),
            detail: "none is stored".into(),
        })?;
        let mut engine = Engine::on_shard(config, items, first, 0)?;
        for (id, bytes) in &records.users {
            engine.insert_user(id, bytes)?;
        }
        Ok(engine)
    }

    /// One engine per stored worker shard, on one item model, without users (they load on
    /// demand, each in the engine of the worker that owns them).
    pub fn workers_from_records(
        config: EngineConfig,
        records: &EngineRecords,
    ) -> Result<Vec<Engine>, DecodeError> {
        let items = Arc::new(RwLock::new(decode_items(&config, records)?));
        let shards = records.shards.iter().enumerate();
        shards
            .map(|(n, bytes)| Engine::on_shard(config.clone(), items.clone(), bytes, n))
            .collect()
    }

    fn on_shard(
        config: EngineConfig,
        items: super::SharedItems,
        shard: &[u8],
        worker: usize,
    ) -> Result<Engine, DecodeError> {
        let what = format!("shard {worker} (dedup window, clocks, RNG, triggers, re-buys)");
        let mut rest = ShardRest::decode(shard, &what)?;
        rest.dedup.follow(&config.dedup);
        let mut shard = UserShard::from_parts(rest.dedup, rest.clocks, rest.rng, rest.triggers);
        shard.rebuys = rest.rebuys;
        shard.online = rest.online;
        shard.online.align(&experiments::arms(&config.experiments));
        Ok(Engine {
            config,
            items,
            shard,
            rules: Arc::default(),
        })
    }

    /// A hash of the logical state, independent of how it is stored: equal digests mean the
    /// same profiles, factors, counts, lists, dedup window and RNG position.
    pub fn digest(&self) -> String {
        records_digest(&self.to_records())
    }
}

/// Items whose record differs from the store's: vectors or rows written, or new.
pub(super) fn changed_items(items: &ItemModel) -> ChangedItems {
    let mut changed = ChangedItems::default();
    items.cooccurrence.changed_into(&mut changed);
    changed.union_with(items.factors.changed());
    for new in items.items_stored..items.ids.len() {
        changed.insert(new as u32);
    }
    changed
}

fn decode_items(config: &EngineConfig, records: &EngineRecords) -> Result<ItemModel, DecodeError> {
    decode_items_filling(config, records, false)
}

/// Decodes the item model; with `fill`, an item without a record gets its initial vector and
/// no rows (what an item owner stores of the items it does not own), else it is an error.
pub(super) fn decode_items_filling(
    config: &EngineConfig,
    records: &EngineRecords,
    fill: bool,
) -> Result<ItemModel, DecodeError> {
    let model = "the item model";
    let mut items: ItemModel = decode_within::<_, ITEM_MODEL_LIMIT>(&records.items, model)?;
    items.follow(config);
    let rank = config.factorization.rank;
    if items.factors.rank() != rank {
        return Err(DecodeError {
            what: model.into(),
            detail: format!(
                "it has rank {}, the config says engine.factorization.rank = {rank}",
                items.factors.rank(),
            ),
        });
    }
    let count = items.ids.len();
    if let Some((extra, _)) = (records.item_records.iter()).find(|(i, _)| *i as usize >= count) {
        return Err(DecodeError {
            what: format!("record {}", item_record_name(*extra)),
            detail: format!("beyond the item model's {count} items"),
        });
    }
    let mut stored = records.item_records.iter().peekable();
    for item in 0..count as u32 {
        let Some((_, bytes)) = stored.next_if(|(i, _)| *i == item) else {
            if !fill {
                return Err(missing_item(item, count));
            }
            let name = items.ids.name(item);
            let vector = initial_vector(name, config.seed, &config.factorization);
            items.factors.push(&vector);
            items.cooccurrence.install_rows(item, (None, None));
            continue;
        };
        let what = format!("record {}", item_record_name(item));
        let record: ItemRecord = decode_within::<_, SMALL_RECORD_LIMIT>(bytes, &what)?;
        let bad = |detail: String| DecodeError {
            what: what.clone(),
            detail,
        };
        if record.factors.len() != rank {
            return Err(bad(format!(
                "{} factors, rank {rank}",
                record.factors.len()
            )));
        }
        for row in [&record.cooc, &record.cross].into_iter().flatten() {
            row.check(count).map_err(bad)?;
        }
        items.factors.push(&record.factors);
        let rows = (record.cooc.map(Arc::new), record.cross.map(Arc::new));
        items.cooccurrence.install_rows(item, rows);
    }
    if let Some((out_of_order, _)) = stored.next() {
        return Err(DecodeError {
            what: format!("record {}", item_record_name(*out_of_order)),
            detail: "out of index order or twice".into(),
        });
    }
    items.items_stored = count;
    Ok(items)
}

fn missing_item(item: u32, count: usize) -> DecodeError {
    DecodeError {
        what: "the item model".into(),
        detail: format!(
            "record {} is missing (the model has {count} items)",
            item_record_name(item)
        ),
    }
}

/// The online counters of every worker's shard in `records`, summed.
pub fn records_online(records: &EngineRecords) -> Result<OnlineTally, DecodeError> {
    let mut total = OnlineTally::default();
    for (worker, shard) in records.shards.iter().enumerate() {
        let rest = ShardRest::decode(shard, &format!("shard {worker}"))?;
        total.add(&rest.online);
    }
    Ok(total)
}

/// The digest of records, as `Engine::digest` computes it.
pub fn records_digest(records: &EngineRecords) -> String {
    let indices: Vec<[u8; 4]> = records
        .item_records
        .iter()
        .map(|(i, _)| i.to_be_bytes())
        .collect();
    let mut parts: Vec<&[u8]> = vec![b"items", &records.items];
    for ((_, bytes), index) in records.item_records.iter().zip(&indices) {
        parts.push(index);
        parts.push(bytes);
    }
    for shard in &records.shards {
        parts.extend([&b"shard"[..], learned_part::<ShardRest>(shard)]);
    }
    for (id, bytes) in &records.users {
        parts.push(id.as_bytes());
        parts.push(learned_part::<UserState>(bytes));
    }
    format!("{:032x}", crate::rng::hash128(&parts))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::event::{Event, EventType};

    /// A store as checkpoints leave it: the latest record of each key.
    #[derive(Default)]
    struct Stored {
        items: Vec<u8>,
        item_records: BTreeMap<u32, Vec<u8>>,
        users: BTreeMap<String, Vec<u8>>,
        shards: Vec<Vec<u8>>,
    }

    impl Stored {
        fn write(&mut self, records: EngineRecords) {
            self.items = records.items;
            self.shards = records.shards;
            self.item_records.extend(records.item_records);
            self.users.extend(records.users);
        }

        fn records(&self) -> EngineRecords {
            EngineRecords {
                items: self.items.clone(),
                item_records: self.item_records.clone().into_iter().collect(),
                users: self.users.clone().into_iter().collect(),
                shards: self.shards.clone(),
            }
        }
    }

    fn events() -> impl Strategy<Value = Vec<(Event, bool)>> {
        let kinds = prop_oneof![
            Just(EventType::View),
            Just(EventType::AddToCart),
            Just(EventType::Purchase)
        ];
        let raw = (kinds, 0u8..6, 0u8..25, any::<bool>(), 0u8..10);
        proptest::collection::vec(raw, 1..120).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(n, (kind, user, item, categorised, cut))| {
                    let ts = 1_700_000_000_000 + n as i64 * 1_000;
                    let mut event = Event::new(kind, &format!("u{user}"), &format!("i{item}"), ts);
                    event.category = categorised.then(|| format!("c{}", item % 4));
                    (event, cut == 0)
                })
                .collect()
        })
    }

    proptest! {
        /// A cut encoded after more events were applied still describes the state at the cut,
        /// and the checkpoints, written in pieces, add up to the whole state.
        #[test]
        fn cuts_encoded_while_events_flow_add_up_to_the_state(events in events()) {
            let mut engine = Engine::new(EngineConfig::default());
            let mut stored = Stored::default();
            let mut open: Option<(Changes, String)> = None;
            for (event, cut_here) in &events {
                engine.apply(event);
                if *cut_here {
                    if let Some((changes, digest)) = open.take() {
                        stored.write(changes.encode());
                        prop_assert_eq!(records_digest(&stored.records()), digest);
                    }
                    let digest = engine.digest();
                    open = Some((engine.cut(), digest));
                }
            }
            if let Some((changes, digest)) = open.take() {
                stored.write(changes.encode());
                prop_assert_eq!(records_digest(&stored.records()), digest);
            }
            stored.write(engine.to_changed_records());
            engine.mark_checkpointed();
            prop_assert_eq!(records_digest(&stored.records()), engine.digest());
            let restored = Engine::from_records(EngineConfig::default(), &stored.records());
            prop_assert_eq!(restored.unwrap().digest(), engine.digest());
        }
    }

    proptest! {
        /// A cut of the users taken in steps of one lookup between events (the item side cut
        /// at its start) is the state at its start, whatever the events meanwhile change.
        #[test]
        fn a_cut_in_steps_is_the_state_where_it_began(events in events()) {
            let mut engine = Engine::new(EngineConfig::default());
            let mut stored = Stored::default();
            let mut open: Option<(ItemCut, String)> = None;
            for (event, cut_here) in &events {
                if let Some(users) = engine.continue_users_cut(1) {
                    let (items, digest) = open.take().expect("a cut under way");
                    stored.write(Changes::of(items, vec![users]).encode());
                    prop_assert_eq!(records_digest(&stored.records()), digest);
                }
                engine.apply(event);
                if *cut_here && !engine.cutting_users() {
                    let digest = engine.digest();
                    prop_assert!(engine.begin_users_cut().is_none());
                    open = Some((engine.cut_items(), digest));
                }
            }
            if let Some((items, digest)) = open.take() {
                let users = engine.continue_users_cut(usize::MAX).unwrap();
                stored.write(Changes::of(items, vec![users]).encode());
                prop_assert_eq!(records_digest(&stored.records()), digest);
            }
            stored.write(engine.to_changed_records());
            engine.mark_checkpointed();
            prop_assert_eq!(records_digest(&stored.records()), engine.digest());
        }
    }

    proptest! {
        /// Two workers on one item model, cut together at arbitrary points (each its users,
        /// then the item side once, as a round does), encoded while both go on learning: the
        /// pieces add up to the state of both at each cut, and it resumes as two workers.
        #[test]
        fn rounds_of_two_workers_add_up_to_their_state(events in events()) {
            let config = EngineConfig::default();
            let owner = |user: &str| (user.as_bytes()[1] % 2) as usize;
            let first = Engine::new(config.clone());
            let second = Engine::with_items(config.clone(), first.shared_items(), 1);
            let mut workers = [first, second];
            let mut stored = Stored::default();
            let mut open: Option<(Changes, String)> = None;
            for (event, cut_here) in &events {
                workers[owner(&event.user_id)].apply(event);
                if *cut_here {
                    if let Some((changes, digest)) = open.take() {
                        stored.write(changes.encode());
                        prop_assert_eq!(records_digest(&stored.records()), digest);
                    }
                    let digest = records_digest(&Engine::records_of(&[&workers[0], &workers[1]]));
                    let users = vec![workers[0].cut_users(), workers[1].cut_users()];
                    open = Some((Changes::of(workers[0].cut_items(), users), digest));
                }
            }
            if let Some((changes, digest)) = open.take() {
                stored.write(changes.encode());
                prop_assert_eq!(records_digest(&stored.records()), digest);
            }
            let users = vec![workers[0].cut_users(), workers[1].cut_users()];
            stored.write(Changes::of(workers[1].cut_items(), users).encode());
            let whole = records_digest(&Engine::records_of(&[&workers[0], &workers[1]]));
            prop_assert_eq!(records_digest(&stored.records()), whole.clone());
            let mut restored = Engine::workers_from_records(config, &stored.records()).unwrap();
            prop_assert_eq!(restored.len(), 2);
            for (id, bytes) in &stored.users {
                restored[owner(id)].insert_user(id, bytes).unwrap();
            }
            let again = Engine::records_of(&[&restored[0], &restored[1]]);
            prop_assert_eq!(records_digest(&again), whole);
        }
    }

    fn engine_with_items() -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        for (n, (user, item)) in [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")]
            .into_iter()
            .enumerate()
        {
            engine.apply(&Event::new(EventType::View, user, item, 1_000 + n as i64));
        }
        engine
    }

    /// The stored model was learned under other settings; the running ones apply from the
    /// restart on, as if they had been set from the start where that is exact (alpha).
    #[test]
    fn settings_changed_since_the_state_was_stored_apply_after_a_restart() {
        let records = engine_with_items().to_records();
        let mut changed = EngineConfig::default();
        changed.cooccurrence.alpha = 0.5;
        changed.cooccurrence.window_items = 3;
        changed.popularity.trending_size = 1;
        changed.dedup.window_ms = 1;
        let restored = Engine::from_records(changed.clone(), &records).unwrap();
        assert_eq!(restored.read().cooccurrence.config(), &changed.cooccurrence);
        assert_eq!(restored.read().popularity.trending(10).len(), 1);
        assert_eq!(restored.shard.dedup.config(), &changed.dedup);
        let mut fresh = Engine::new(changed);
        for (n, (user, item)) in [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")]
            .into_iter()
            .enumerate()
        {
            fresh.apply(&Event::new(EventType::View, user, item, 1_000 + n as i64));
        }
        let a = restored.item_index("a").unwrap();
        assert_eq!(restored.similar_items(a, 5), fresh.similar_items(a, 5));
    }

    fn decode_error(records: &EngineRecords) -> String {
        Engine::from_records(EngineConfig::default(), records)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_missing_extra_or_damaged_item_record_is_named() {
        let records = engine_with_items().to_records();
        let mut missing = records.clone();
        missing.item_records.remove(1);
        assert_eq!(
            decode_error(&missing),
            "cannot decode the item model: record item/1 is missing (the model has 3 items)"
        );
        let mut short = records.clone();
        short.item_records.pop();
        assert!(decode_error(&short).contains("record item/2 is missing"));
        let mut extra = records.clone();
        extra
            .item_records
            .push((3, records.item_records[0].1.clone()));
        assert!(decode_error(&extra).contains("record item/3: beyond the item model's 3 items"));
        let mut damaged = records.clone();
        damaged.item_records[2].1.truncate(5);
        assert!(decode_error(&damaged).starts_with("cannot decode record item/2:"));
        let mut other_rank = records;
        let config = EngineConfig::default();
        let mut vector = vec![0.5f32; config.factorization.rank + 1];
        vector[0] = 1.0;
        other_rank.item_records[0].1 = encode(&ItemRecordRef {
            factors: &vector,
            cooc: None,
            cross: None,
        });
        assert!(decode_error(&other_rank).contains("record item/0: 33 factors, rank 32"));
    }

    #[test]
    fn a_cut_past_the_dirty_list_bound_scans_and_finds_the_same_users() {
        let mut engine = engine_with_items();
        let view = |n: usize| Event::new(EventType::View, &format!("v{n}"), "a", 5_000 + n as i64);
        for n in 0..2_000 {
            engine.apply(&view(n));
        }
        assert!(
            engine.shard.dirty.overflowed,
            "2,000 of 2,002 users touched before any cut"
        );
        assert_eq!(engine.cut_users().users_changed(), 2_002);
        assert!(!engine.shard.dirty.overflowed, "a cut starts a new list");
        for n in 0..2_000 {
            engine.apply(&view(n + 2_000));
        }
        assert!(
            !engine.shard.dirty.overflowed,
            "a shard that is cut lists up to all its users"
        );
        assert_eq!(engine.cut_users().users_changed(), 2_000);
        engine.apply(&Event::new(EventType::View, "v7", "b", 9_000));
        engine.apply(&Event::new(EventType::View, "u1", "b", 9_001));
        let users: Vec<String> = engine
            .cut()
            .encode()
            .users
            .into_iter()
            .map(|u| u.0)
            .collect();
        assert_eq!(users, ["u1", "v7"]);
    }

    #[test]
    fn an_unchanged_engine_cuts_no_items_and_a_new_item_is_cut_once() {
        let mut engine = engine_with_items();
        assert_eq!(engine.cut().items_changed(), 3);
        assert_eq!(engine.cut().items_changed(), 0);
        // A lone first event of a new user: no pairs, but a new item and SGD steps.
        engine.apply(&Event::new(EventType::View, "u9", "d", 9_000));
        let changed: Vec<u32> = engine
            .to_changed_records()
            .item_records
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert!(changed.contains(&3), "the new item d: {changed:?}");
    }
}
