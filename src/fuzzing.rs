//! Entry points for coverage-guided fuzzing (`fuzz/`) of every decoder that reads bytes someone
//! else wrote, shared with the test that replays the seed corpus and past crashes. Each takes
//! arbitrary bytes and must return without a panic, an abort or an allocation sized by a length
//! the bytes claim.

use crate::clean::Cleaner;
use crate::config::EngineConfig;
use crate::engine::{
    apply_update, Engine, EngineRecords, ItemKeys, ItemOwner, ModelUpdate, PortableUser,
    Publication, WorkBatch,
};
use crate::event::{Event, EventType, FeedbackKind, Input};
use crate::kafka::{parse_dedup_record_key, CarriedKeys, PartitionPosition};
use crate::pipeline::decode_update;
use crate::ranking::Filters;

/// Input-topic messages (events, profile updates, feedback): what cleaning accepts is within
/// limits.
pub fn clean_input(data: &[u8]) {
    let cleaner = Cleaner::new(Default::default());
    match cleaner.clean_input(data, Some(1_767_225_600_000)) {
        Ok(Input::Event(event)) => {
            assert!(!event.user_id.is_empty() && event.user_id.chars().count() <= 128);
            assert!(!event.item_id.is_empty() && event.item_id.chars().count() <= 128);
        }
        Ok(Input::Feedback(feedback)) => {
            assert!(!feedback.user_id.is_empty() && feedback.user_id.chars().count() <= 128);
            if let FeedbackKind::Impression { item_ids } = &feedback.kind {
                assert!((1..=100).contains(&item_ids.len()));
            }
        }
        _ => {}
    }
    let _ = cleaner.clean_json(data);
}

/// Catalog messages: the first byte says how much of the rest is the key; the remainder is the
/// value (a tombstone when empty).
pub fn clean_catalog(data: &[u8]) {
    let Some((&key_len, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at((key_len as usize).min(rest.len()));
    let value = (!value.is_empty()).then_some(value);
    let _ = Cleaner::new(Default::default()).clean_catalog(value, Some(key));
}

/// Values read back from a state dir. Every value's version and checksum are checked before its
/// body is decoded, so a damaged file is refused there; past that, a body is what this build
/// wrote. The input is also decoded as a user record, a shard record and an item record against
/// a real item model: a record whose checksum holds but whose contents do not fit is refused,
/// never used.
pub fn state_records(data: &[u8]) {
    let _ = crate::store::record_body(data);
    let template = TEMPLATE.with(Clone::clone);
    let mut engine =
        Engine::from_records(template.config.clone(), &template.records).expect("it decodes");
    if engine.insert_user("u", data).is_ok() {
        let _ = engine.recommend("u", 10, &Filters::default());
    }
    let records = EngineRecords {
        items: template.records.items.clone(),
        item_records: template.records.item_records.clone(),
        users: Vec::new(),
        shards: vec![data.to_vec()],
    };
    if let Ok(mut engine) = Engine::from_records(template.config.clone(), &records) {
        engine.apply_on(
            0,
            &Event::new(EventType::View, "u", "i1", 1_700_000_100_000),
        );
        let _ = engine.digest();
    }
    let mut records = template.records;
    records.item_records[1].1 = data.to_vec();
    if let Ok(mut engine) = Engine::from_records(template.config, &records) {
        engine.apply_on(
            0,
            &Event::new(EventType::View, "u", "i1", 1_700_000_100_000),
        );
        let _ = engine.recommend("u", 10, &Filters::default());
    }
}

#[derive(Clone)]
struct Template {
    config: EngineConfig,
    /// Item model and shard, no users.
    records: EngineRecords,
}

thread_local! {
    static TEMPLATE: Template = {
        let engine = template_engine();
        let mut records = engine.to_records();
        records.users.clear();
        Template { config: engine.config().clone(), records }
    };
}

/// A small shop's engine: what records are checked against (the binary seeds are its records).
pub fn template_engine() -> Engine {
    template_engine_and_updates().0
}

/// `template_engine` and the item-model updates its events published, in order.
pub fn template_engine_and_updates() -> (Engine, Vec<ModelUpdate>) {
    let mut updates = Vec::new();
    let mut engine = Engine::new(EngineConfig::default());
    engine.publish_model_updates(true);
    let kinds = [EventType::View, EventType::AddToCart, EventType::Purchase];
    for n in 0..60i64 {
        let user = format!("u{}", n % 4);
        let item = format!("i{}", n % 9);
        let mut event = Event::new(
            kinds[n as usize % 3],
            &user,
            &item,
            1_700_000_000_000 + n * 1000,
        );
        event.category = Some(format!("c{}", n % 3));
        updates.extend(
            engine
                .apply_on((n % 2) as u64, &event)
                .effects
                .model_updates,
        );
    }
    (engine, updates)
}

/// The trigger rules `config/triggers.toml` ships: one of each kind.
pub fn shipped_trigger_rules() -> std::sync::Arc<crate::triggers::Rules> {
    let text = include_str!("../config/triggers.toml");
    std::sync::Arc::new(crate::triggers::Rules::parse(text).expect("the shipped rules parse"))
}

/// Changelog records of other instances: a user record decoded and installed (items by name,
/// waiting triggers under the shipped rules), a position record parsed, a dedup record's key
/// parsed, a partition's dedup keys decoded and adopted, then an event applied.
pub fn changelog_record(data: &[u8]) {
    let _ = PartitionPosition::parse(data);
    let _ = parse_dedup_record_key(data);
    if let Ok(carried) = CarriedKeys::decode(data) {
        let mut engine = Engine::new(EngineConfig::default());
        engine.adopt_dedup_keys(0, &carried.keys);
        engine.apply(&Event::new(EventType::View, "u", "i", 1_700_000_000_000));
    }
    let Ok(user) = PortableUser::decode(data, "u") else {
        return;
    };
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_trigger_rules(shipped_trigger_rules());
    let record = engine.localize_user("u", &user);
    if engine.insert_user("u", &record).is_ok() {
        let _ = engine.recommend("u", 10, &Filters::default());
    }
}

/// `model-updates` records of other instances: decoded and applied to an item model.
pub fn model_update(data: &[u8]) {
    let Ok(update) = decode_update(data) else {
        return;
    };
    let config = EngineConfig::default();
    let engine = Engine::new(config.clone());
    let items = engine.shared_items();
    apply_update(&mut items.write().expect("not poisoned"), &update, &config);
    let _ = engine.recommend("u", 10, &Filters::default());
}

/// Item-side records of other instances (see `engine::item_view`): the bytes as a work batch
/// that an owner applies and publishes from, and as a publication that a reader installs and
/// ranks on. A batch or record out of its rules is refused, never applied.
pub fn item_records(data: &[u8]) {
    let config = EngineConfig::default();
    if let Ok(batch) = WorkBatch::decode(data) {
        let mut owner = ItemOwner::new(&config);
        if owner.apply(batch, &config).is_ok() {
            read_and_rank(&owner.publish(), &config);
        }
    }
    if let Ok(publication) = Publication::decode(data) {
        read_and_rank(&publication, &config);
    }
}

/// A reader installs the records, then learns an event and ranks on them.
fn read_and_rank(publication: &Publication, config: &EngineConfig) {
    let mut engine = Engine::new(config.clone());
    engine.defer_item_work(true);
    {
        let items = engine.shared_items();
        let mut read = items.write().expect("not poisoned");
        ItemKeys::default().install(&mut read, publication, config);
    }
    for item in ["i1", "i2"] {
        engine.apply(&Event::new(EventType::View, "u", item, 1_700_000_100_000));
    }
    let _ = engine.recommend("u", 10, &Filters::default());
}

/// A work batch of a small shop's events and the records its owner published from it: the
/// `item_records` seeds.
pub fn item_records_seeds() -> (WorkBatch, Publication) {
    let config = EngineConfig::default();
    let mut user_side = Engine::new(config.clone());
    user_side.defer_item_work(true);
    let mut work = crate::engine::ItemWork::default();
    for n in 0..30i64 {
        let (user, item) = (format!("u{}", n % 3), format!("i{}", n % 5));
        let mut event = Event::new(EventType::View, &user, &item, 1_700_000_000_000 + n * 1000);
        event.category = Some(format!("c{}", n % 2));
        work.append(user_side.apply(&event).effects.item_work);
    }
    let items = user_side.shared_items();
    let read = items.read().expect("not poisoned");
    let (_, batch) = work.batches(&read, 1).remove(0);
    let mut owner = ItemOwner::new(&config);
    owner
        .apply(batch.clone(), &config)
        .expect("a batch made here passes");
    (batch, owner.publish())
}
