//! The pipeline's logic without its I/O: one input message in → clean → dedup → engine → the
//! outputs it causes, with per-key coalescing. The Kafka edge (`kafka::consume`) moves bytes and
//! offsets; everything decided about them is decided here, so it is tested without a broker.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use std::sync::Arc;

use crate::catalog::{CatalogUpdate, ListingChange};
use crate::clean::{item_limit, key_names, Cleaner, Rejection};
use crate::coalesce::{Coalescer, Offer, Pending};
use crate::config::{Config, ItemsConfig, PipelineConfig};
use crate::dead_letter;
use crate::engine::{Applied, DecodeError, Effects, Engine, ModelUpdate, Position, ReplicaUpdate};
use crate::event::{Feedback, Input, ProfileUpdate};
use crate::item_outbox::ItemOutbox;
use crate::offsets::{PartitionKey, Waiter};
use crate::online::OnlineTally;
use crate::outputs::{recommendations_json, similar_items_json, trigger_json};
use crate::ranking::Filters;
use crate::triggers::{Fired, Rules};

/// One input message as the edge hands it over.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub source: Waiter,
    pub topic: &'a str,
    /// The message key: a catalog tombstone names its item there.
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The message's Kafka timestamp (create time), for latency.
    pub timestamp_ms: Option<i64>,
}

pub use crate::message::{Destination, Output};

/// A message cleaned, its user not yet known to be in memory (see `Processor::load`).
#[derive(Debug)]
pub struct Cleaned(Result<Input, Rejection>);

impl Cleaned {
    /// The user whose state the input changes, if it is valid and about a user.
    pub fn user_id(&self) -> Option<&str> {
        self.0.as_ref().ok().and_then(Input::user_id)
    }
}

/// A cleaned message whose user's state is in memory: what `Processor::process_ready` takes.
#[derive(Debug)]
pub struct Ready(Result<Input, Rejection>);

/// Why a user's stored state could not be put back in memory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError<E> {
    #[error(transparent)]
    Store(E),
    #[error("the stored state of user {user:?} is corrupt: {source}")]
    Corrupt {
        user: String,
        #[source]
        source: DecodeError,
    },
}

/// What processing one message produced: outputs to send now, and how many coalesced outputs
/// the message additionally waits for (they name it among their waiters when emitted).
#[derive(Debug, Default)]
pub struct Processed {
    pub outputs: Vec<Output>,
    pub deferred: u32,
}

impl Processed {
    /// Acknowledgements the message waits for before its offset may be committed.
    pub fn holds(&self) -> u32 {
        self.outputs.len() as u32 + self.deferred
    }
}

/// Coalesced outputs that came due, and waiters whose deferred output turned out unnecessary.
#[derive(Debug, Default)]
pub struct Flushed {
    pub outputs: Vec<Output>,
    pub released: Vec<Waiter>,
    /// Inputs that wait on more acknowledgements than they were added with (see `item_outbox`).
    pub more_holds: Vec<(Waiter, u32)>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    pub consumed: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub recommendations: u64,
    pub similar_items: u64,
    /// Profile updates and catalog messages applied (also counted in `applied`).
    pub profile_updates: u64,
    pub catalog_updates: u64,
    /// Impressions and dismissals applied (also counted in `applied`).
    pub feedback: u64,
    pub triggers: u64,
    pub model_updates: u64,
    /// Inputs skipped because their user's state already reflected them (a replay after the
    /// user's partition moved from an instance that had applied them).
    pub already_applied: u64,
    /// Dead letters published as a prefix of a larger input.
    pub dead_letters_truncated: u64,
    /// Inputs of a user whose message key is not their `user_id` (`run` only): such inputs
    /// may spread a user over partitions, and so over workers and instances.
    pub not_keyed_by_user: u64,
    /// Item-owned scale-out: work batches sent to the items' owners, and their payload bytes.
    pub item_work_batches: u64,
    pub item_work_bytes: u64,
    /// Wall-clock ms at which the first and the latest input were consumed (0: none yet): the
    /// span a benchmark's rate is measured over.
    pub first_consumed_ms: i64,
    pub last_consumed_ms: i64,
    /// Online metrics: the users' events judged against what they were last shown (kept in
    /// the engine, with the state; filled in by `Processor::totals`).
    pub online: OnlineTally,
    /// Purchases learned, and those that re-bought an item the buyer bought before: the
    /// shop's re-buy share (kept in the engine, with the state; filled in by `totals`).
    pub purchases_learned: u64,
    pub rebuys_learned: u64,
}

/// One reason behind nearly every input of a while: a misconfigured producer or time rule,
/// worth more than the per-reason counts.
#[derive(Debug, PartialEq, Eq)]
pub struct NearlyAllRejected {
    pub reason: String,
    pub rejected: u64,
    pub consumed: u64,
}

/// Fewer inputs than this in a while say nothing about the stream.
const NEARLY_ALL_MIN_INPUTS: u64 = 100;

impl Stats {
    /// The reason that rejected at least 90 % of the (at least 100) inputs consumed since
    /// `before`, if one did.
    pub fn nearly_all_rejected(&self, before: &Stats) -> Option<NearlyAllRejected> {
        let consumed = self.consumed.saturating_sub(before.consumed);
        if consumed < NEARLY_ALL_MIN_INPUTS {
            return None;
        }
        self.rejected
            .iter()
            .map(|(reason, &count)| {
                let earlier = before.rejected.get(reason).copied().unwrap_or(0);
                (reason, count.saturating_sub(earlier))
            })
            .find(|&(_, rejected)| rejected * 10 >= consumed * 9)
            .map(|(reason, rejected)| NearlyAllRejected {
                reason: reason.clone(),
                rejected,
                consumed,
            })
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Adds another worker's counters.
    pub fn merge(&mut self, other: &Stats) {
        self.consumed += other.consumed;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        for (reason, count) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += count;
        }
        self.recommendations += other.recommendations;
        self.similar_items += other.similar_items;
        self.profile_updates += other.profile_updates;
        self.feedback += other.feedback;
        self.catalog_updates += other.catalog_updates;
        self.triggers += other.triggers;
        self.model_updates += other.model_updates;
        self.already_applied += other.already_applied;
        self.dead_letters_truncated += other.dead_letters_truncated;
        self.not_keyed_by_user += other.not_keyed_by_user;
        self.item_work_batches += other.item_work_batches;
        self.item_work_bytes += other.item_work_bytes;
        if other.first_consumed_ms > 0 {
            let first = match self.first_consumed_ms {
                0 => other.first_consumed_ms,
                mine => mine.min(other.first_consumed_ms),
            };
            self.first_consumed_ms = first;
        }
        self.last_consumed_ms = self.last_consumed_ms.max(other.last_consumed_ms);
        self.online.add(&other.online);
        self.purchases_learned += other.purchases_learned;
        self.rebuys_learned += other.rebuys_learned;
    }
}

pub struct Processor {
    config: PipelineConfig,
    cleaner: Cleaner,
    engine: Engine,
    users: Coalescer,
    items: Coalescer,
    /// The neighbour list each item was last published with.
    published: FxHashMap<u32, Vec<u32>>,
    /// False for replays that only build state: no output is computed or owed.
    publishes: bool,
    /// Messages of this topic are catalog listings.
    catalog_topic: String,
    /// Set when item-model updates are published for other instances: this instance's name.
    instance_id: Option<String>,
    /// Whether users remember the position of their latest input, and inputs at or before it
    /// are skipped (exactly-once per user across partition moves).
    track_positions: bool,
    /// Whether inputs keyed otherwise than by their user are counted (`run`'s workers: a
    /// replay's records carry no key).
    checks_keys: bool,
    stats: Stats,
    /// The latest rejection's detail for each reason code, for the log's periodic summary.
    latest_details: BTreeMap<String, String>,
    /// Triggers fired outside any message (a restored partition's time passing deadlines),
    /// published with the next message processed.
    carried: Vec<Fired>,
    /// Item-owned scale-out: the item-side work on its way to the items' owners.
    outbox: Option<ItemOutbox>,
}

fn trigger_output(fired: &Fired, waiters: Vec<Waiter>) -> Output {
    Output {
        destination: Destination::Triggers,
        key: fired.user_id.clone(),
        payload: trigger_json(fired),
        headers: Vec::new(),
        waiters,
        cause_ts_ms: None,
    }
}

/// The engine's position of a message: its topic index and partition packed into the stream.
pub fn position_of(source: Waiter) -> Position {
    Position {
        stream: stream_of(source.key()),
        seq: source.offset,
    }
}

/// The engine's stream of a partition: its topic index and partition packed into one number.
pub fn stream_of(key: PartitionKey) -> u64 {
    (u64::from(key.topic) << 32) | u64::from(key.partition as u32)
}

/// The partition key a stream of `position_of` names.
pub fn key_of_stream(stream: u64) -> PartitionKey {
    PartitionKey::new((stream >> 32) as u16, partition_of(stream))
}

/// The partition a stream of `position_of` names.
pub fn partition_of(stream: u64) -> i32 {
    stream as u32 as i32
}

impl Processor {
    pub fn new(config: &Config) -> Processor {
        Processor::with_engine(config, Engine::new(config.engine.clone()))
    }

    /// A processor around an engine: a fresh one, a worker's (sharing the item model), or one
    /// restored from a checkpoint.
    pub fn with_engine(config: &Config, engine: Engine) -> Processor {
        let interval = config.pipeline.min_update_interval_ms as i64;
        Processor {
            config: config.pipeline.clone(),
            cleaner: Cleaner::new(config.engine.clean.clone()),
            engine,
            users: Coalescer::new(interval),
            items: Coalescer::new(interval),
            published: FxHashMap::default(),
            publishes: true,
            catalog_topic: config.kafka.catalog_topic.clone(),
            instance_id: None,
            track_positions: false,
            checks_keys: false,
            stats: Stats::default(),
            latest_details: BTreeMap::new(),
            carried: Vec::new(),
            outbox: None,
        }
    }

    /// Publishes what each event does to the item model, for the other instances' replicas.
    pub fn replicating(mut self, instance_id: &str) -> Processor {
        self.engine.publish_model_updates(true);
        self.instance_id = Some(instance_id.to_owned());
        self
    }

    /// Learns only the user side and sends the item side to the items' owners (see
    /// `item_outbox`), in batches per partition of the work topic.
    pub fn sending_item_work(mut self, items: &ItemsConfig, partitions: u32) -> Processor {
        self.engine.defer_item_work(true);
        self.outbox = Some(ItemOutbox::new(
            items.work_interval_ms,
            items.max_batch_ops,
            partitions,
        ));
        self
    }

    /// Whether item-side work waits in amounts that should leave before the next message.
    pub fn item_work_full(&self) -> bool {
        self.outbox.as_ref().is_some_and(ItemOutbox::full)
    }

    /// Users remember where their latest input came from; inputs their state already
    /// reflects are skipped (see `Stats::already_applied`).
    pub fn tracking_positions(mut self) -> Processor {
        self.track_positions = true;
        self
    }

    /// Counts inputs whose message key is not their user's id (see `Stats::not_keyed_by_user`);
    /// the first is also logged.
    pub fn checking_keys(mut self) -> Processor {
        self.checks_keys = true;
        self
    }

    /// Evaluates these campaign trigger rules (none by default).
    pub fn with_rules(mut self, rules: Arc<Rules>) -> Processor {
        self.engine.set_trigger_rules(rules);
        self
    }

    /// Counts and learns, publishes nothing (rejections are still counted by reason).
    pub fn learn_only(mut self) -> Processor {
        self.publishes = false;
        self
    }

    /// Moves a partition's stream time on to where it was on its previous owner; the
    /// deadlines that passes fire with the next message processed (dropped when learning only).
    pub fn continue_stream_time(&mut self, key: PartitionKey, ts_ms: i64) {
        let effects = self.engine.advance_stream_time(stream_of(key), ts_ms);
        if self.publishes {
            self.carried.extend(effects.fired);
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// For checkpoints (which mark what they wrote) and for loading stored users back.
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The cleaning step of `process`, for an edge whose users live in a store: `load` puts
    /// the input's user in memory, and only what it returns can be processed.
    pub fn clean(&self, record: &Record) -> Cleaned {
        Cleaned(clean_record(&self.cleaner, &self.catalog_topic, record))
    }

    /// Makes sure the input's user is in memory, reading their record with `stored` (a state
    /// store's lookup) when the engine does not hold them: the step between cleaning and
    /// processing that a store-backed edge cannot skip.
    pub fn load<E>(
        &mut self,
        cleaned: Cleaned,
        stored: impl FnOnce(&str) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<Ready, LoadError<E>> {
        if let Some(user) = cleaned.user_id() {
            self.load_user(user, stored)?;
        }
        Ok(Ready(cleaned.0))
    }

    /// Puts a stored user back in memory unless already there.
    pub fn load_user<E>(
        &mut self,
        user: &str,
        stored: impl FnOnce(&str) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<(), LoadError<E>> {
        if self.engine.has_user(user) {
            return Ok(());
        }
        if let Some(record) = stored(user).map_err(LoadError::Store)? {
            self.engine
                .insert_user(user, &record)
                .map_err(|source| LoadError::Corrupt {
                    user: user.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Whether published lists leave out the user's recent items (`pipeline.exclude_seen`).
    pub fn exclude_seen(&self) -> bool {
        self.config.exclude_seen
    }

    /// For a processor whose every user is in memory (no store behind it): nothing to load.
    pub fn in_memory(&self, cleaned: Result<Input, Rejection>) -> Ready {
        Ready(cleaned)
    }

    /// Drops cold users (already checkpointed, no output owed) down to `cap`; returns how many.
    pub fn evict_users(&mut self, cap: usize) -> usize {
        let owed = &self.users;
        self.engine
            .evict_cold_users(cap, |user| owed.is_pending(user))
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The detail of the latest input rejected for `reason` (a code of `Stats::rejected`),
    /// cut as a dead letter's is.
    pub fn latest_detail(&self, reason: &str) -> Option<&str> {
        self.latest_details.get(reason).map(String::as_str)
    }

    /// The counters with the engine's online metrics (which a checkpoint restores, unlike the
    /// rest, which count this process's work).
    pub fn totals(&self) -> Stats {
        let (purchases_learned, rebuys_learned) = self.engine.rebuy_tally().shop();
        Stats {
            online: self.engine.online_tally().clone(),
            purchases_learned,
            rebuys_learned,
            ..self.stats.clone()
        }
    }

    /// Coalesced outputs still owed.
    pub fn pending(&self) -> usize {
        self.users.pending_len() + self.items.pending_len()
    }

    /// Cleans and processes a message, every user in memory (no store behind this processor).
    pub fn process(&mut self, record: &Record, now_ms: i64) -> Processed {
        let Cleaned(cleaned) = self.clean(record);
        self.process_ready(record, Ready(cleaned), now_ms)
    }

    /// Processes a message cleaned and loaded (`clean` then `load`, or `in_memory` for a
    /// message cleaned elsewhere: a replay cleans on its reading thread); a rejection sends
    /// `record.payload` to the dead letters.
    pub fn process_ready(&mut self, record: &Record, ready: Ready, now_ms: i64) -> Processed {
        let cleaned = ready.0;
        if self.stats.consumed == 0 {
            self.stats.first_consumed_ms = now_ms;
        }
        self.stats.consumed += 1;
        self.stats.last_consumed_ms = now_ms;
        if self.track_positions && self.reflected(record, &cleaned) {
            self.stats.already_applied += 1;
            return Processed::default();
        }
        if self.checks_keys {
            self.check_key(record, &cleaned);
        }
        let event = match cleaned {
            Ok(Input::Event(event)) => event,
            Ok(Input::Profile(update)) => return self.profile_update(record, &update, now_ms),
            Ok(Input::Feedback(feedback)) => return self.feedback(record, &feedback, now_ms),
            Ok(Input::Catalog(update)) => return self.catalog_update(record, &update),
            Err(rejection) => return self.dead_letter(record, &rejection),
        };
        let at = position_of(record.source);
        let mut outcome = self.engine.apply_on(at.stream, &event);
        match outcome.applied {
            Applied::Duplicate => {
                self.stats.duplicates += 1;
                return Processed::default();
            }
            Applied::ItemLimit => {
                let max_items = self.engine.config().max_items;
                return self.dead_letter(record, &item_limit(&event.item_id, max_items));
            }
            Applied::Learned { .. } => {}
        }
        self.stats.applied += 1;
        self.note_position(record, &event.user_id);
        let mut processed = Processed::default();
        if let Some(outbox) = &mut self.outbox {
            let work = std::mem::take(&mut outcome.effects.item_work);
            let input = (record.source, at);
            processed.deferred += u32::from(outbox.add(work, input, now_ms));
        }
        if !self.publishes {
            return processed; // learning only: what it caused is dropped
        }
        let cause = match &event.event_id {
            Some(id) => Cow::Borrowed(id.as_str()),
            None => Cow::Owned(coordinates(record)),
        };
        let source = record.source;
        match self.users.offer(
            &event.user_id,
            source,
            Some(&cause),
            record.timestamp_ms,
            now_ms,
        ) {
            Offer::Now(pending) => {
                processed
                    .outputs
                    .push(self.recommendation(&event.user_id, pending, now_ms))
            }
            Offer::Deferred => processed.deferred += 1,
        }
        match self.items.offer(
            &event.item_id,
            source,
            Some(&cause),
            record.timestamp_ms,
            now_ms,
        ) {
            Offer::Now(pending) => match self.similar_items(&event.item_id, pending, now_ms) {
                Ok(output) => processed.outputs.push(output),
                Err(_released) => {}
            },
            Offer::Deferred => processed.deferred += 1,
        }
        let Effects {
            fired,
            model_updates,
            // Taken above, or empty: an engine that does not defer applies its item side.
            item_work: _,
        } = outcome.effects;
        self.push_triggers(record, fired, &mut processed);
        self.push_model_updates(record, model_updates, &mut processed);
        processed
    }

    /// Whether the input's user already reflects this message.
    fn reflected(&self, record: &Record, cleaned: &Result<Input, Rejection>) -> bool {
        let user = cleaned.as_ref().ok().and_then(Input::user_id);
        user.is_some_and(|user| {
            self.engine
                .already_applied(user, position_of(record.source))
        })
    }

    fn check_key(&mut self, record: &Record, cleaned: &Result<Input, Rejection>) {
        let Some(user) = cleaned.as_ref().ok().and_then(Input::user_id) else {
            return;
        };
        if record.key.is_some_and(|key| key_names(key, user)) {
            return;
        }
        if self.stats.not_keyed_by_user == 0 {
            let key = record
                .key
                .map(|k| String::from_utf8_lossy(&k[..k.len().min(128)]));
            tracing::warn!(
                topic = record.topic,
                partition = record.source.partition,
                offset = record.source.offset,
                ?key,
                user,
                "an input whose key is not its user_id: key events by user_id, or a user's \
                 events may reach several partitions and diverge there (counted in \
                 streamrec_inputs_not_keyed_by_user_total; this warning is not repeated)"
            );
        }
        self.stats.not_keyed_by_user += 1;
    }

    fn note_position(&mut self, record: &Record, user_id: &str) {
        if self.track_positions {
            self.engine
                .record_position(user_id, position_of(record.source));
        }
    }

    /// Item-model updates for the other instances; they hold the message's offset like any
    /// output, so an update is never lost (a crash may publish it twice).
    fn push_model_updates(
        &mut self,
        record: &Record,
        updates: Vec<ModelUpdate>,
        processed: &mut Processed,
    ) {
        let Some(instance) = &self.instance_id else {
            return;
        };
        for update in updates.into_iter().map(ReplicaUpdate::Learned) {
            let output = replica_output(&update, instance, record);
            self.stats.model_updates += 1;
            processed.outputs.push(output);
        }
    }

    /// A user's new attributes: their segment (and so their recommendations) may change.
    fn profile_update(
        &mut self,
        record: &Record,
        update: &ProfileUpdate,
        now_ms: i64,
    ) -> Processed {
        let stream = position_of(record.source).stream;
        let effects = self.engine.apply_profile_on(stream, update);
        self.stats.profile_updates += 1;
        self.user_input_applied(record, &update.user_id, (true, effects), now_ms)
    }

    /// After a user's input that taught nothing (a profile update, feedback): its position,
    /// the user's list when `reranks` (published now or once coalesced), and what it fired.
    fn user_input_applied(
        &mut self,
        record: &Record,
        user: &str,
        (reranks, effects): (bool, Effects),
        now_ms: i64,
    ) -> Processed {
        self.note_position(record, user);
        self.stats.applied += 1;
        let mut processed = Processed::default();
        if !self.publishes {
            return processed;
        }
        if reranks {
            self.offer_user(record, user, now_ms, &mut processed);
        }
        self.push_triggers(record, effects.fired, &mut processed);
        processed
    }

    /// The user's list is owed: published now, or once the coalescing interval passes.
    fn offer_user(&mut self, record: &Record, user: &str, now_ms: i64, into: &mut Processed) {
        let cause = coordinates(record);
        let offer = (self.users).offer(
            user,
            record.source,
            Some(&cause),
            record.timestamp_ms,
            now_ms,
        );
        match offer {
            Offer::Now(pending) => {
                let output = self.recommendation(user, pending, now_ms);
                into.outputs.push(output)
            }
            Offer::Deferred => into.deferred += 1,
        }
    }

    /// An impression or a dismissal: the user's list is published again when it changes the
    /// ranking (a dismissal, an item demoted), not after every page view.
    fn feedback(&mut self, record: &Record, feedback: &Feedback, now_ms: i64) -> Processed {
        let stream = position_of(record.source).stream;
        let applied = self.engine.apply_feedback_on(stream, feedback);
        self.stats.feedback += 1;
        self.user_input_applied(record, &feedback.user_id, applied, now_ms)
    }

    /// A listing: availability filters apply from the next recommendation on; price and stock
    /// changes may fire triggers.
    fn catalog_update(&mut self, record: &Record, update: &CatalogUpdate) -> Processed {
        self.stats.catalog_updates += 1;
        if self.outbox.is_some() {
            // Item-owned scale-out: every instance follows the whole catalog into its read
            // model (`kafka::catalog_follower`); the group's member only checks the message.
            return Processed::default();
        }
        let listed = self.engine.apply_catalog(update);
        let applied = listed.change.is_some();
        self.stats.applied += u64::from(applied);
        let mut processed = Processed::default();
        if !self.publishes {
            return processed;
        }
        self.push_triggers(record, listed.effects.fired, &mut processed);
        // Each catalog partition goes to one instance: the others learn the listing from it.
        if let (true, Some(instance)) = (applied, &self.instance_id) {
            let listing = ReplicaUpdate::Listing(update.clone());
            processed
                .outputs
                .push(replica_output(&listing, instance, record));
            self.stats.model_updates += 1;
        }
        processed
    }

    /// A listing the process's catalog follower applied to the shared item model: the
    /// triggers of this worker's watchers. They wait for no input (a follower's listing is not
    /// an input of this worker).
    pub fn listing_changed(
        &mut self,
        item: u32,
        change: &ListingChange,
        updated_at_ms: i64,
    ) -> Processed {
        let fired = self
            .engine
            .listing_changed(item, change, updated_at_ms)
            .fired;
        let mut processed = Processed::default();
        if self.publishes {
            for fired in fired {
                self.stats.triggers += 1;
                processed.outputs.push(trigger_output(&fired, Vec::new()));
            }
        }
        processed
    }

    /// Triggers the engine fired while applying this message (and any carried from a
    /// partition's restore); they hold its offset.
    fn push_triggers(&mut self, record: &Record, fired: Vec<Fired>, processed: &mut Processed) {
        let carried = std::mem::take(&mut self.carried);
        for fired in carried.into_iter().chain(fired) {
            self.stats.triggers += 1;
            processed
                .outputs
                .push(trigger_output(&fired, vec![record.source]));
        }
    }

    /// Emits every coalesced output, due or not (shutdown).
    pub fn flush_all(&mut self, now_ms: i64) -> Flushed {
        let flushed = match self.outbox.is_some() {
            true => self.flush_item_work(),
            false => Flushed::default(),
        };
        let (users, items) = (self.users.drain(), self.items.drain());
        self.emit(flushed, users, items, now_ms)
    }

    /// Emits the coalesced outputs that are due, at most `limit` of them, so that a caller
    /// can answer others between steps (`owes` says whether more are due).
    pub fn flush_due(&mut self, now_ms: i64, limit: usize) -> Flushed {
        let flushed = match self.outbox.as_ref().is_some_and(|o| o.due(now_ms)) {
            true => self.flush_item_work(),
            false => Flushed::default(),
        };
        let users = self.users.due(now_ms, limit);
        let items = self.items.due(now_ms, limit - users.len());
        self.emit(flushed, users, items, now_ms)
    }

    /// Whether coalesced outputs are due at `now_ms`.
    pub fn owes(&self, now_ms: i64) -> bool {
        self.users.owes(now_ms) || self.items.owes(now_ms)
    }

    fn emit(
        &mut self,
        mut flushed: Flushed,
        users: Vec<(String, Pending)>,
        items: Vec<(String, Pending)>,
        now_ms: i64,
    ) -> Flushed {
        for (user, pending) in users {
            flushed
                .outputs
                .push(self.recommendation(&user, pending, now_ms));
        }
        for (item, pending) in items {
            match self.similar_items(&item, pending, now_ms) {
                Ok(output) => flushed.outputs.push(output),
                Err(released) => flushed.released.extend(released),
            }
        }
        flushed
    }

    /// The item-side work waiting to leave, as batches (none when it does not send any).
    pub fn flush_item_work(&mut self) -> Flushed {
        let Some(outbox) = &mut self.outbox else {
            return Flushed::default();
        };
        let read = self.engine.shared_items();
        let sent = outbox.take(&read.read().expect("not poisoned"));
        self.stats.item_work_batches += sent.outputs.len() as u64;
        let bytes = sent.outputs.iter().map(|o| o.payload.len() as u64);
        self.stats.item_work_bytes += bytes.sum::<u64>();
        Flushed {
            outputs: sent.outputs,
            released: Vec::new(),
            more_holds: sent.more_holds,
        }
    }

    /// Whether it sends its item side to the items' owners.
    pub fn sends_item_work(&self) -> bool {
        self.outbox.is_some()
    }

    /// The dead letter of `record.payload`, rejected.
    fn dead_letter(&mut self, record: &Record, rejection: &Rejection) -> Processed {
        let payload = record.payload.unwrap_or_default();
        let code = rejection.reason.code();
        let detail = dead_letter::bounded_detail(&rejection.detail);
        self.latest_details.insert(code.clone(), detail);
        *self.stats.rejected.entry(code).or_default() += 1;
        if !self.publishes {
            return Processed::default();
        }
        let source = dead_letter::Origin {
            topic: record.topic,
            waiter: record.source,
        };
        let max_bytes = self.config.dead_letter_max_bytes;
        self.stats.dead_letters_truncated += u64::from(payload.len() > max_bytes);
        Processed {
            outputs: vec![dead_letter::rejected_input(
                source, payload, rejection, max_bytes,
            )],
            deferred: 0,
        }
    }

    fn recommendation(&mut self, user: &str, pending: Pending, now_ms: i64) -> Output {
        self.stats.recommendations += 1;
        let filters = Filters {
            exclude_seen: self.config.exclude_seen,
            ..Filters::default()
        };
        let list = self.engine.recommend(user, self.config.top_n, &filters);
        self.engine.show(user, &list);
        let payload = recommendations_json(
            &self.engine,
            user,
            &list,
            now_ms,
            pending.cause_event_id.as_deref(),
        );
        Output {
            destination: Destination::Recommendations,
            key: user.to_owned(),
            payload,
            headers: Vec::new(),
            waiters: pending.waiters,
            cause_ts_ms: pending.cause_ts_ms,
        }
    }

    /// The item's neighbours as an output if they changed materially since last published;
    /// otherwise the waiters, released.
    fn similar_items(
        &mut self,
        item_id: &str,
        pending: Pending,
        now_ms: i64,
    ) -> Result<Output, Vec<Waiter>> {
        let Some(item) = self.engine.item_index(item_id) else {
            return Err(pending.waiters);
        };
        let neighbors = self.engine.similar_items(item, self.config.similar_items_n);
        let current: Vec<u32> = neighbors.iter().map(|n| n.0).collect();
        let previous = self.published.get(&item).map(Vec::as_slice).unwrap_or(&[]);
        if !changed_materially(previous, &current, self.config.similar_change_threshold) {
            return Err(pending.waiters);
        }
        self.published.insert(item, current);
        self.stats.similar_items += 1;
        Ok(Output {
            destination: Destination::SimilarItems,
            key: item_id.to_owned(),
            payload: similar_items_json(&self.engine, item_id, &neighbors, now_ms),
            headers: Vec::new(),
            waiters: pending.waiters,
            cause_ts_ms: pending.cause_ts_ms,
        })
    }
}

/// A replica update as an output to the `model-updates` topic; it holds the input's offset.
fn replica_output(update: &ReplicaUpdate, instance: &str, record: &Record) -> Output {
    Output {
        destination: Destination::ModelUpdates,
        key: update.item_id().to_owned(),
        payload: encode_update(update),
        headers: vec![(INSTANCE_HEADER, instance.to_owned())],
        waiters: vec![record.source],
        cause_ts_ms: None,
    }
}

/// An input's place, `topic/partition/offset`: the cause of an update when the input has no
/// `event_id`.
fn coordinates(record: &Record) -> String {
    format!(
        "{}/{}/{}",
        record.topic, record.source.partition, record.source.offset
    )
}

/// The header naming the instance that published a model update (its own are skipped).
pub const INSTANCE_HEADER: &str = "streamrec-instance";

/// An update as the `model-updates` topic carries it (bincode, standard config).
pub fn encode_update(update: &ReplicaUpdate) -> Vec<u8> {
    bincode::serde::encode_to_vec(update, bincode::config::standard())
        .expect("a model update always encodes")
}

/// Decodes an update another instance published; a length past `SMALL_RECORD_LIMIT` is an
/// error, not an allocation.
pub fn decode_update(bytes: &[u8]) -> Result<ReplicaUpdate, bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<{ crate::engine::SMALL_RECORD_LIMIT }>();
    bincode::serde::decode_from_slice(bytes, config).map(|(update, _)| update)
}

/// A message as a valid input (a catalog listing on `catalog_topic`, an event or profile
/// update elsewhere), or the rule it breaks.
pub fn clean_record(
    cleaner: &Cleaner,
    catalog_topic: &str,
    record: &Record,
) -> Result<Input, Rejection> {
    if !catalog_topic.is_empty() && record.topic == catalog_topic {
        return cleaner
            .clean_catalog(record.payload, record.key)
            .map(Input::Catalog);
    }
    let payload = record.payload.unwrap_or_default();
    cleaner.clean_input(payload, record.timestamp_ms)
}

/// True when at least `threshold` of the larger list is not in the other (and something is new).
fn changed_materially(previous: &[u32], current: &[u32], threshold: f32) -> bool {
    if current.is_empty() {
        return false;
    }
    let before: FxHashSet<u32> = previous.iter().copied().collect();
    let new = current.iter().filter(|item| !before.contains(item)).count();
    let size = previous.len().max(current.len());
    new > 0 && new as f32 >= threshold * size as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval_ms: u64) -> Config {
        let mut config = Config::default();
        config.pipeline.min_update_interval_ms = interval_ms;
        config.engine.clean.min_ts_ms = 0;
        config
    }

    fn record(offset: i64, payload: &str) -> (Waiter, String) {
        let waiter = Waiter {
            topic: 0,
            partition: 0,
            offset,
        };
        (waiter, payload.to_owned())
    }

    fn run(processor: &mut Processor, inputs: &[(Waiter, String)], now_ms: i64) -> Vec<Processed> {
        inputs
            .iter()
            .map(|(source, payload)| {
                let record = Record {
                    source: *source,
                    topic: "events",
                    key: None,
                    payload: Some(payload.as_bytes()),
                    timestamp_ms: Some(now_ms),
                };
                processor.process(&record, now_ms)
            })
            .collect()
    }

    fn view(user: &str, item: &str, ts: i64) -> String {
        format!(r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#)
    }

    #[test]
    fn bad_input_goes_to_the_dead_letter_with_its_reason_and_bytes() {
        let mut p = Processor::new(&config(0));
        let out = run(&mut p, &[record(7, "{oops")], 0);
        let dead = &out[0].outputs[0];
        assert_eq!(dead.destination, Destination::DeadLetter);
        assert_eq!(dead.payload, b"{oops");
        assert!(dead
            .headers
            .contains(&("streamrec-reason", "not_json".into())));
        assert!(dead.headers.contains(&("source-offset", "7".into())));
        assert_eq!(p.stats().rejected["not_json"], 1);
        let negative = r#"{"type":"purchase","user_id":"u","item_id":"a","ts":1000,"price":-3}"#;
        let priced = run(&mut p, &[record(10, negative)], 0);
        assert!(
            priced[0].outputs[0].headers.contains(&(
                "streamrec-detail",
                "price must be finite and >= 0, got -3".into()
            )),
            "the dead letter says which rule and what value: {:?}",
            priced[0].outputs[0].headers
        );
        let detail = "price must be finite and >= 0, got -3";
        assert_eq!(
            p.latest_detail("bad_price"),
            Some(detail),
            "kept for the log"
        );
        let empty = p.process(
            &Record {
                source: record(8, "").0,
                topic: "events",
                key: None,
                payload: None,
                timestamp_ms: None,
            },
            0,
        );
        assert_eq!(empty.outputs[0].headers[0].1, "empty_payload");
        let zero_bytes = run(&mut p, &[record(9, "")], 0);
        assert_eq!(zero_bytes[0].outputs[0].headers[0].1, "empty_payload");
        assert_eq!(p.stats().rejected["empty_payload"], 2);
    }

    #[test]
    fn inputs_keyed_otherwise_than_by_their_user_are_counted_when_keys_are_checked() {
        let inputs = [
            (Some(&b"u"[..]), view("u", "a", 1000)),
            (Some(&b"session-7"[..]), view("u", "b", 2000)),
            (None, view("u", "c", 3000)),
            (
                Some(&b"u"[..]),
                r#"{"type":"profile","user_id":"u","ts":4000,"attributes":{}}"#.into(),
            ),
            (Some(&b"v"[..]), "{oops".into()),
            // The user's id as Kafka Connect's JsonConverter writes a key: keyed by user.
            (Some(&br#""u""#[..]), view("u", "d", 5000)),
            (
                Some(&br#"{"schema":{"type":"string"},"payload":"u"}"#[..]),
                view("u", "e", 6000),
            ),
        ];
        let counted = |mut processor: Processor| {
            for (offset, (key, payload)) in inputs.iter().enumerate() {
                let record = Record {
                    source: record(offset as i64, "").0,
                    topic: "events",
                    key: *key,
                    payload: Some(payload.as_bytes()),
                    timestamp_ms: Some(0),
                };
                processor.process(&record, 0);
            }
            processor.stats().not_keyed_by_user
        };
        assert_eq!(counted(Processor::new(&config(0)).checking_keys()), 2);
        assert_eq!(
            counted(Processor::new(&config(0))),
            0,
            "a replay's records carry no key"
        );
    }

    #[test]
    fn an_input_too_large_to_publish_whole_goes_out_as_a_marked_prefix() {
        let mut config = config(0);
        config.pipeline.dead_letter_max_bytes = 8192;
        let mut p = Processor::new(&config);
        let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(1_200_000));
        let out = run(
            &mut p,
            &[record(0, &huge), record(1, &view("u", "a", 1000))],
            0,
        );
        let dead = &out[0].outputs[0];
        assert_eq!(dead.payload, huge.as_bytes()[..8192]);
        assert!(dead
            .headers
            .contains(&("streamrec-truncated", "true".into())));
        let size = huge.len().to_string();
        assert!(dead.headers.contains(&("streamrec-original-size", size)));
        assert_eq!(p.stats().rejected["payload_too_large"], 1);
        assert_eq!(p.stats().dead_letters_truncated, 1);
        assert_eq!(p.stats().applied, 1, "the next event is processed");
    }

    #[test]
    fn a_new_item_beyond_engine_max_items_is_dead_lettered_and_known_ones_go_on() {
        let mut config = config(0);
        config.engine.max_items = 2;
        let mut p = Processor::new(&config);
        let inputs = [
            record(0, &view("u", "a", 1000)),
            record(1, &view("u", "b", 1001)),
            record(2, &view("v", "c", 1002)),
            record(3, &view("v", "a", 1003)),
        ];
        let out = run(&mut p, &inputs, 0);
        let dead = &out[2].outputs[0];
        assert_eq!(dead.destination, Destination::DeadLetter);
        assert_eq!(dead.payload, inputs[2].1.as_bytes());
        assert!(dead
            .headers
            .contains(&("streamrec-reason", "item_limit".into())));
        assert_eq!(p.stats().rejected["item_limit"], 1);
        assert_eq!(p.stats().applied, 3, "events on known items are learned");
        assert_eq!(p.engine.item_count(), 2);
    }

    #[test]
    fn an_update_caused_by_a_profile_names_its_input() {
        let mut p = Processor::new(&config(0));
        let profile = r#"{"type":"profile","user_id":"u","ts":1000,"attributes":{"region":"EU"}}"#;
        let out = run(&mut p, &[record(4, profile)], 0);
        let rec = &out[0].outputs[0];
        assert_eq!(rec.destination, Destination::Recommendations);
        let json: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap();
        assert_eq!(json["cause_event_id"], "events/0/4");
    }

    #[test]
    fn a_dismissal_republishes_without_the_item_and_an_impression_does_not() {
        let mut p = Processor::new(&config(0));
        let mut inputs = Vec::new();
        for (n, user) in ["a", "b", "c"].iter().enumerate() {
            let ts = 1_000 + 10 * n as i64;
            inputs.push(record(2 * n as i64, &view(user, "x", ts)));
            inputs.push(record(2 * n as i64 + 1, &view(user, "y", ts + 1)));
        }
        inputs.push(record(6, &view("u", "x", 2_000)));
        run(&mut p, &inputs, 0);
        let items = |processed: &Processed| -> Vec<String> {
            let rec = &processed.outputs[0];
            let json: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap();
            let listed = json["items"].as_array().unwrap().iter();
            listed
                .map(|i| i["item_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let shown = r#"{"type":"impression","user_id":"u","ts":2001,"item_ids":["y"]}"#;
        let dismissed = r#"{"type":"dismiss","user_id":"u","ts":2002,"item_id":"y"}"#;
        let out = run(&mut p, &[record(7, shown), record(8, dismissed)], 0);
        assert!(out[0].outputs.is_empty(), "one showing changes no ranking");
        assert_eq!(out[1].outputs[0].destination, Destination::Recommendations);
        assert!(
            !items(&out[1]).contains(&"y".to_owned()),
            "{:?}",
            items(&out[1])
        );
        assert_eq!(p.stats().feedback, 2);
        assert_eq!(p.totals().online.total.impressions, 1);
    }

    #[test]
    fn totals_count_purchases_and_rebuys_learned() {
        let mut p = Processor::new(&config(0));
        let bought = |user: &str, item: &str, ts| {
            format!(r#"{{"type":"purchase","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#)
        };
        let inputs = [
            record(0, &bought("u", "coffee", 1_000)),
            record(1, &bought("u", "coffee", 2_000)),
            record(2, &bought("v", "coffee", 3_000)),
            record(3, &view("v", "tv", 4_000)),
        ];
        run(&mut p, &inputs, 0);
        let totals = p.totals();
        assert_eq!((totals.purchases_learned, totals.rebuys_learned), (3, 1));
        let mut merged = Stats::default();
        merged.merge(&totals);
        merged.merge(&totals);
        assert_eq!((merged.purchases_learned, merged.rebuys_learned), (6, 2));
    }

    #[test]
    fn every_event_updates_its_user_when_not_coalescing() {
        let mut p = Processor::new(&config(0));
        let out = run(
            &mut p,
            &[
                record(0, &view("u", "a", 1000)),
                record(1, &view("u", "b", 2000)),
            ],
            0,
        );
        for processed in &out {
            assert_eq!(processed.deferred, 0);
            let rec = processed
                .outputs
                .iter()
                .find(|o| o.destination == Destination::Recommendations)
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap();
            assert_eq!(json["schema"], "streamrec.recommendations.v1");
            assert_eq!(json["user_id"], "u");
            assert_eq!(rec.key, "u");
        }
        assert_eq!(p.stats().recommendations, 2);
    }

    #[test]
    fn coalesced_updates_carry_every_waiting_message() {
        let mut p = Processor::new(&config(1000));
        let inputs = [
            record(0, &view("u", "a", 1000)),
            record(1, &view("u", "b", 2000)),
            record(2, &view("u", "c", 3000)),
        ];
        let out = run(&mut p, &inputs, 0);
        assert_eq!(out[0].deferred, 0);
        assert_eq!(
            out[1].deferred + out[2].deferred,
            2,
            "the user waits; each item is new"
        );
        assert!(p.flush_due(500, usize::MAX).outputs.is_empty());
        let flushed = p.flush_due(1000, usize::MAX);
        let rec = flushed
            .outputs
            .iter()
            .find(|o| o.destination == Destination::Recommendations)
            .unwrap();
        assert_eq!(
            rec.waiters.iter().map(|w| w.offset).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let json: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap();
        assert_eq!(json["cause_event_id"], "events/0/2", "the last cause wins");
        assert_eq!(p.pending(), 0);
    }

    #[test]
    fn learning_only_builds_the_same_state_and_owes_nothing() {
        let inputs = [
            record(0, &view("u", "a", 1000)),
            record(1, "{oops"),
            record(2, &view("v", "a", 2000)),
        ];
        let mut publishing = Processor::new(&config(1000));
        run(&mut publishing, &inputs, 0);
        let mut learning = Processor::new(&config(1000)).learn_only();
        let out = run(&mut learning, &inputs, 0);
        assert!(out.iter().all(|p| p.holds() == 0));
        assert_eq!(learning.pending(), 0);
        assert_eq!(learning.stats().rejected["not_json"], 1);
        assert_eq!(learning.stats().applied, 2);
        assert_eq!(learning.engine().digest(), publishing.engine().digest());
    }

    #[test]
    fn future_skew_is_judged_by_the_message_timestamp_not_by_the_stream() {
        let mut config = config(0);
        config.engine.clean.max_future_skew_ms = 1_000;
        let mut p = Processor::new(&config);
        // Days between two events (an idle shop, sparse history): the second is far ahead of
        // the first, and on time by its own Kafka timestamp.
        run(&mut p, &[record(0, &view("u", "a", 10_000))], 10_000);
        run(
            &mut p,
            &[record(1, &view("u", "b", 900_000_000))],
            900_000_000,
        );
        assert_eq!(p.stats().applied, 2);
        // Ahead of the time it was written by more than the skew: rejected.
        run(
            &mut p,
            &[record(2, &view("u", "c", 900_005_000))],
            900_000_000,
        );
        assert_eq!(p.stats().rejected.get("bad_timestamp"), Some(&1));
    }

    #[test]
    fn one_reason_behind_nearly_every_input_is_named() {
        let stats = |consumed: u64, late: u64, broken: u64| Stats {
            consumed,
            rejected: [
                ("bad_timestamp".to_string(), late),
                ("not_json".to_string(), broken),
            ]
            .into_iter()
            .collect(),
            ..Stats::default()
        };
        let before = stats(1_000, 10, 5);
        let nearly_all = stats(2_000, 910, 10).nearly_all_rejected(&before).unwrap();
        assert_eq!(nearly_all.reason, "bad_timestamp");
        assert_eq!((nearly_all.rejected, nearly_all.consumed), (900, 1_000));
        assert_eq!(stats(2_000, 800, 100).nearly_all_rejected(&before), None);
        assert_eq!(
            stats(1_050, 60, 5).nearly_all_rejected(&before),
            None,
            "too few"
        );
    }

    #[test]
    fn duplicates_cause_nothing() {
        let mut p = Processor::new(&config(0));
        let event = view("u", "a", 1000);
        let out = run(&mut p, &[record(0, &event), record(1, &event)], 0);
        assert_eq!(out[1].holds(), 0);
        assert_eq!(p.stats().duplicates, 1);
    }

    #[test]
    fn similar_items_are_published_only_on_material_change() {
        assert!(changed_materially(&[], &[1, 2], 0.2));
        assert!(!changed_materially(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5], 0.2));
        assert!(!changed_materially(
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 11],
            0.2
        ));
        assert!(changed_materially(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 9], 0.2));
        assert!(!changed_materially(&[1], &[], 0.0));
    }
}
