//! Event cleaning: raw bytes in, a valid [`Event`] or a [`Rejection`] with a stable reason code out.
//!
//! The reason codes are a contract: dead-letter headers and metrics carry them. A rule about one
//! field names it after a colon (`missing_field:user_id`); the detail says what was wrong.
//! Profile updates and catalog items have their own rules in `clean::profile` and `clean::catalog`.

mod catalog;
mod feedback;
mod fields;
mod framing;
mod keys;
mod profile;
#[cfg(test)]
mod shop_names_tests;

use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{CatalogNames, CleanConfig, ShopNames};
use crate::event::{Event, EventType, Input};
pub use framing::schema_registry_framed;
pub use keys::{key_id, key_names};

/// Why an input was refused. `code()` is the stable, low-cardinality name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    PayloadTooLarge,
    /// No value, or a value of zero bytes.
    EmptyPayload,
    NotJson,
    NotObject,
    MissingField(&'static str),
    WrongFieldType(&'static str),
    EmptyId(&'static str),
    IdTooLong(&'static str),
    BadType,
    BadTimestamp,
    BadPrice,
    BadQuantity,
    /// A catalog message without `"schema":"streamrec.item.v1"`.
    BadSchema,
    /// A tombstone (null value) without a key naming the item.
    MissingKey,
    /// A catalog message whose key is not its `item_id` (compaction would keep the wrong one).
    KeyMismatch,
    TooManyAttributes(&'static str),
    AttributeTooLong(&'static str),
    /// An impression listing more items than `engine.clean.max_impression_items`.
    TooManyItems(&'static str),
    /// An event naming a new item while the model holds `engine.max_items` (see `item_limit`).
    ItemLimit,
}

impl Reason {
    /// Each variant once (a field rule naming `field`), for contract tests; the match below makes
    /// a new variant fail to compile until it is listed.
    pub fn every(field: &'static str) -> Vec<Reason> {
        use Reason::*;
        let every = vec![
            PayloadTooLarge,
            NotJson,
            NotObject,
            MissingField(field),
            WrongFieldType(field),
            EmptyId(field),
            IdTooLong(field),
            BadType,
            BadTimestamp,
            BadPrice,
            BadQuantity,
            BadSchema,
            MissingKey,
            KeyMismatch,
            TooManyAttributes(field),
            AttributeTooLong(field),
            TooManyItems(field),
            EmptyPayload,
            ItemLimit,
        ];
        for reason in &every {
            match reason {
                PayloadTooLarge | NotJson | NotObject | MissingField(_) | WrongFieldType(_)
                | EmptyId(_) | IdTooLong(_) | BadType | BadTimestamp | BadPrice | BadQuantity
                | BadSchema | MissingKey | KeyMismatch | TooManyAttributes(_)
                | AttributeTooLong(_) | TooManyItems(_) | EmptyPayload | ItemLimit => {}
            }
        }
        every
    }

    /// The input field a rule is about: the one its code names, or the one its rule reads.
    pub fn field(self) -> Option<&'static str> {
        match self {
            Reason::BadType => Some("type"),
            Reason::BadTimestamp => Some("ts"),
            Reason::BadPrice => Some("price"),
            Reason::BadQuantity => Some("quantity"),
            Reason::ItemLimit => Some("item_id"),
            Reason::MissingField(f)
            | Reason::WrongFieldType(f)
            | Reason::EmptyId(f)
            | Reason::IdTooLong(f)
            | Reason::TooManyAttributes(f)
            | Reason::AttributeTooLong(f)
            | Reason::TooManyItems(f) => Some(f),
            _ => None,
        }
    }

    pub fn code(self) -> String {
        match self {
            Reason::PayloadTooLarge => "payload_too_large".into(),
            Reason::EmptyPayload => "empty_payload".into(),
            Reason::NotJson => "not_json".into(),
            Reason::NotObject => "not_object".into(),
            Reason::MissingField(f) => format!("missing_field:{f}"),
            Reason::WrongFieldType(f) => format!("wrong_field_type:{f}"),
            Reason::EmptyId(f) => format!("empty_id:{f}"),
            Reason::IdTooLong(f) => format!("id_too_long:{f}"),
            Reason::BadType => "bad_type".into(),
            Reason::BadTimestamp => "bad_timestamp".into(),
            Reason::BadPrice => "bad_price".into(),
            Reason::BadQuantity => "bad_quantity".into(),
            Reason::BadSchema => "bad_schema".into(),
            Reason::MissingKey => "missing_key".into(),
            Reason::KeyMismatch => "key_mismatch".into(),
            Reason::TooManyAttributes(f) => format!("too_many_attributes:{f}"),
            Reason::AttributeTooLong(f) => format!("attribute_too_long:{f}"),
            Reason::TooManyItems(f) => format!("too_many_items:{f}"),
            Reason::ItemLimit => "item_limit".into(),
        }
    }
}

/// What to look at when nearly every input is rejected with `code`.
pub fn hint(code: &str) -> &'static str {
    match code.split(':').next().unwrap_or(code) {
        "bad_timestamp" => "event times before engine.clean.min_ts_ms, or more than engine.clean.max_future_skew_ms ahead of their message's Kafka timestamp; a history loaded with `streamrec produce` wants --shift-to-now",
        "not_json" | "not_object" | "empty_payload" => "the topic does not carry event v1 JSON: check what produces to it (docs/configuration.md#events-v1-json)",
        "missing_field" | "wrong_field_type" | "bad_type" => "the producers' events do not follow event v1 (docs/schemas/event.v1.json)",
        "payload_too_large" | "id_too_long" | "too_many_attributes" | "attribute_too_long"
        | "too_many_items" => "inputs exceed the engine.clean limits: raise them if the inputs are legitimate",
        "item_limit" => "the model holds engine.max_items items: raise it if the shop sells that many, or find the producer that sends other ids as item ids",
        _ => "see the rejection reasons in docs/configuration.md#events-v1-json",
    }
}

/// The refusal of an event whose item is new to a model that holds `max_items` (`engine.max_items`):
/// the engine learns nothing from it (`Applied::ItemLimit`).
pub fn item_limit(item_id: &str, max_items: u64) -> Rejection {
    Rejection {
        reason: Reason::ItemLimit,
        detail: format!(
            "item_id {item_id:?} is new and the model holds engine.max_items ({max_items}) items; items are never forgotten"
        ),
    }
}

/// A refused input: the rule it broke and a human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.code())]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
}

fn expected_an_object(value: &Value) -> String {
    let batched = if value.is_array() {
        " (one event per message)"
    } else {
        ""
    };
    format!("expected a JSON object, got {}{batched}", kind_name(value))
}

/// The parser's error, and the Schema Registry header the JSON was looked for after, if any.
fn not_json_detail(payload: &[u8], err: &impl std::fmt::Display) -> String {
    match framing::header_of(payload) {
        Some(header) => format!("{header}: {err} (Avro and Protobuf are not read)"),
        None => err.to_string(),
    }
}

fn reject(reason: Reason, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// Validates events. Stateless: an event's time is judged against its message's own Kafka
/// timestamp (when it was written), so a restart, a replay or a gap in the stream changes
/// nothing.
#[derive(Clone, Debug)]
pub struct Cleaner {
    config: CleanConfig,
    names: ShopNames,
    catalog_names: CatalogNames,
}

impl Cleaner {
    /// A cleaner of a validated config (`EngineConfig::validate` checks the shop's names).
    pub fn new(config: CleanConfig) -> Cleaner {
        let names = ShopNames::of(&config).expect("engine.clean is validated before use");
        let catalog_names = CatalogNames::of(&config).expect("engine.clean is validated");
        Cleaner {
            config,
            names,
            catalog_names,
        }
    }

    /// A cleaner for files replayed out of time order: no floor on time, since a history file
    /// legitimately spans decades (and files carry no write time for the skew rule).
    pub fn for_files(config: &CleanConfig) -> Cleaner {
        Cleaner::new(CleanConfig {
            min_ts_ms: i64::MIN,
            ..config.clone()
        })
    }

    /// Decodes and validates one v1 JSON event (files hold events only, with no write time).
    pub fn clean_json(&self, payload: &[u8]) -> Result<Event, Rejection> {
        let event = if self.names.has_paths() {
            // Fields inside nested objects: the message is decoded as a whole.
            (self.input_object(payload)).and_then(|object| self.event_from(&object))
        } else {
            (self.fields(payload)).and_then(|fields| self.event_from(&fields))
        };
        event
            .and_then(|event| self.check(event, None))
            .map_err(|rejection| self.naming_shop_fields(rejection))
    }

    /// Decodes and validates a message of an input topic: an event, or a profile update
    /// (`"type":"profile"`). `written_ms` is the message's Kafka timestamp, if it has one.
    pub fn clean_input(&self, payload: &[u8], written_ms: Option<i64>) -> Result<Input, Rejection> {
        self.input(payload, written_ms)
            .map_err(|rejection| self.naming_shop_fields(rejection))
    }

    fn input(&self, payload: &[u8], written_ms: Option<i64>) -> Result<Input, Rejection> {
        if self.names.has_paths() {
            // Fields inside nested objects: the message is decoded as a whole.
            return self.input_of(&self.input_object(payload)?, payload, written_ms);
        }
        self.input_of(&self.fields(payload)?, payload, written_ms)
    }

    /// An input from its decoded fields; profile updates and feedback decode it again whole.
    fn input_of(
        &self,
        fields: &impl Fields,
        payload: &[u8],
        written_ms: Option<i64>,
    ) -> Result<Input, Rejection> {
        let kind = match fields.view("type") {
            Some(View::Str(sent)) => self.names.type_name(sent),
            _ => "",
        };
        match kind {
            "profile" => {
                // Decoded again as a whole: a profile's attributes are open-ended, and
                // profile updates are few next to events.
                let update = self.profile_from_object(&self.input_object(payload)?)?;
                self.check_time(update.ts_ms, written_ms)?;
                Ok(Input::Profile(update))
            }
            "impression" | "dismiss" => {
                let feedback = self.feedback_from_object(kind, &self.input_object(payload)?)?;
                self.check_time(feedback.ts_ms, written_ms)?;
                Ok(Input::Feedback(feedback))
            }
            _ => {
                let event = self.event_from(fields)?;
                self.check(event, written_ms).map(Input::Event)
            }
        }
    }

    /// A rejection about a field the shop names its own way says so: the detail names the
    /// shop's name, which is what the producer's authors know.
    fn naming_shop_fields(&self, mut rejection: Rejection) -> Rejection {
        let shop_name = rejection
            .reason
            .field()
            .and_then(|f| self.names.shop_name(f));
        if let Some(name) = shop_name {
            rejection.detail += &format!(" (read from {name:?}, engine.clean.field_names)");
        }
        rejection
    }

    /// An event object's fields, decoded without a map (see `clean::fields`).
    fn fields<'a>(&self, payload: &'a [u8]) -> Result<fields::EventFields<'a>, Rejection> {
        self.check_size(payload)?;
        match fields::decode(framing::json_of(payload), &self.names) {
            Ok(Some(fields)) => Ok(fields),
            // Decoded again as a whole to say what it is instead (rejections are rare).
            Ok(None) => Err(self
                .object(payload)
                .err()
                .unwrap_or_else(|| reject(Reason::NotObject, "expected a JSON object"))),
            Err(err) => Err(reject(Reason::NotJson, not_json_detail(payload, &err))),
        }
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), Rejection> {
        if payload.is_empty() {
            return Err(reject(
                Reason::EmptyPayload,
                "no value, or a value of zero bytes",
            ));
        }
        if payload.len() > self.config.max_payload_bytes {
            return Err(reject(
                Reason::PayloadTooLarge,
                format!(
                    "{} bytes, limit {}",
                    payload.len(),
                    self.config.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }

    /// An input's object as a whole, the shop's field names read as ours (see `ShopNames`).
    fn input_object(&self, payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
        let mut object = self.object(payload)?;
        read_as_ours(&mut object, self.names.fields());
        Ok(object)
    }

    fn object(&self, payload: &[u8]) -> Result<Map<String, Value>, Rejection> {
        self.check_size(payload)?;
        let value: Value = serde_json::from_slice(framing::json_of(payload))
            .map_err(|err| reject(Reason::NotJson, not_json_detail(payload, &err)))?;
        let Value::Object(object) = value else {
            return Err(reject(Reason::NotObject, expected_an_object(&value)));
        };
        Ok(object)
    }

    /// Applies the rules that do not depend on the encoding (ids, time, price) to a typed event
    /// written at `written_ms` (its Kafka timestamp; `None` for files).
    pub fn check(&self, mut event: Event, written_ms: Option<i64>) -> Result<Event, Rejection> {
        event.user_id = self.id(std::mem::take(&mut event.user_id), "user_id")?;
        event.item_id = self.id(std::mem::take(&mut event.item_id), "item_id")?;
        for (value, field) in [
            (&mut event.event_id, "event_id"),
            (&mut event.session_id, "session_id"),
            (&mut event.category, "category"),
        ] {
            if let Some(raw) = value.take() {
                *value = Some(self.id(raw, field)?);
            }
        }
        if let Some(price) = event.price {
            check_price(price)?;
        }
        self.check_time(event.ts_ms, written_ms)?;
        Ok(event)
    }

    /// `raw` itself when it needs no trimming (no copy per id per event).
    fn id(&self, raw: String, field: &'static str) -> Result<String, Rejection> {
        let trimmed = id_within_str(&raw, field, self.config.max_id_len)?;
        if trimmed.len() == raw.len() {
            Ok(raw)
        } else {
            Ok(trimmed.to_owned())
        }
    }

    /// The time rules alone: the floor, and the skew against `written_ms` when known.
    pub fn check_time(&self, ts_ms: i64, written_ms: Option<i64>) -> Result<(), Rejection> {
        if ts_ms < self.config.min_ts_ms {
            // A common producer mistake: the same instant in seconds is a 1970 date in ms.
            let in_seconds = if ts_ms.saturating_mul(1000) >= self.config.min_ts_ms {
                " (epoch seconds? ts is epoch milliseconds)"
            } else {
                ""
            };
            return Err(reject(
                Reason::BadTimestamp,
                format!(
                    "ts {ts_ms} is before the earliest allowed {} (engine.clean.min_ts_ms){in_seconds}",
                    self.config.min_ts_ms
                ),
            ));
        }
        // A message without a timestamp (pre-0.10 formats) or a file row has nothing to be
        // ahead of; nor has one whose producer left it at 0 or wrote seconds, from before any
        // event time this cleaner accepts.
        let plausible = |written: &i64| *written >= self.config.min_ts_ms;
        if let Some(written) = written_ms.filter(plausible) {
            let limit = written.saturating_add(self.config.max_future_skew_ms);
            if ts_ms > limit {
                // Another: microseconds (as GA4 exports them) read as milliseconds are
                // thousands of years ahead.
                let as_millis = ts_ms / 1000;
                let in_microseconds = if (self.config.min_ts_ms..=limit).contains(&as_millis) {
                    " (epoch microseconds? ts is epoch milliseconds)"
                } else {
                    ""
                };
                return Err(reject(
                    Reason::BadTimestamp,
                    format!(
                        "ts {ts_ms} is more than {} ms (engine.clean.max_future_skew_ms) ahead of the message's Kafka timestamp {written}{in_microseconds}",
                        self.config.max_future_skew_ms
                    ),
                ));
            }
        }
        Ok(())
    }

    fn event_from(&self, object: &impl Fields) -> Result<Event, Rejection> {
        let type_name = required_string(object, "type")?;
        let kind = EventType::parse(self.names.type_name(&type_name))
            .ok_or_else(|| reject(Reason::BadType, format!("unknown event type {type_name:?}")))?;
        Ok(Event {
            event_id: optional_id(object, "event_id")?,
            kind,
            user_id: required_id(object, "user_id")?,
            item_id: required_id(object, "item_id")?,
            ts_ms: timestamp(object)?,
            session_id: optional_id(object, "session_id")?,
            price: optional_number(object, "price", Reason::BadPrice)?,
            quantity: quantity(object)?,
            category: optional_id(object, "category")?,
        })
    }
}

/// A trimmed, non-empty id of at most `max_len` bytes.
fn id_within(raw: &str, field: &'static str, max_len: usize) -> Result<String, Rejection> {
    id_within_str(raw, field, max_len).map(str::to_owned)
}

fn id_within_str<'a>(
    raw: &'a str,
    field: &'static str,
    max_len: usize,
) -> Result<&'a str, Rejection> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(reject(Reason::EmptyId(field), format!("{field} is empty")));
    }
    // Characters, as JSON Schema's maxLength counts them: a schema-valid id is never refused.
    let chars = trimmed.chars().count();
    if chars > max_len {
        return Err(reject(
            Reason::IdTooLong(field),
            format!("{field} has {chars} characters, limit {max_len}"),
        ));
    }
    Ok(trimmed)
}

/// A trimmed attribute name, brand or tag of 1 to `max_len` bytes.
fn attribute_within(
    raw: &str,
    field: &'static str,
    what: &str,
    max_len: usize,
) -> Result<String, Rejection> {
    let text = raw.trim();
    let chars = text.chars().count();
    if chars == 0 || chars > max_len {
        return Err(reject(
            Reason::AttributeTooLong(field),
            format!("{what} must have 1 to {max_len} characters, got {chars}"),
        ));
    }
    Ok(text.to_owned())
}

/// At most `max` attributes (or tags) in one message.
fn count_within(
    count: usize,
    field: &'static str,
    what: &str,
    max: usize,
) -> Result<(), Rejection> {
    if count > max {
        return Err(reject(
            Reason::TooManyAttributes(field),
            format!("{count} {what}, limit {max}"),
        ));
    }
    Ok(())
}

fn check_price(price: f64) -> Result<(), Rejection> {
    if !price.is_finite() || price < 0.0 {
        return Err(reject(
            Reason::BadPrice,
            format!("price must be finite and >= 0, got {price}"),
        ));
    }
    Ok(())
}

/// The value at a dotted path under `value`, if every step is an object holding the next.
/// Puts each value a shop's name (or path) holds under our field's name.
fn read_as_ours<'a>(
    object: &mut Map<String, Value>,
    names: impl Iterator<Item = (&'a str, &'static str)>,
) {
    for (shop_name, field) in names {
        let value = match shop_name.split_once('.') {
            None => object.remove(shop_name),
            Some((top, path)) => at_path(object.get(top), path).cloned(),
        };
        if let Some(value) = value {
            object.insert(field.to_owned(), value);
        }
    }
}

fn at_path<'a>(value: Option<&'a Value>, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value?, |value, key| value.as_object()?.get(key))
}

fn present<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).filter(|value| !value.is_null())
}

/// What the event rules read of a decoded object: its fields that are present and not null.
/// A `Value` map and `fields::EventFields` both answer, so the rules are written once.
trait Fields {
    fn view(&self, field: &str) -> Option<View<'_>>;
}

/// A present field's value as the rules tell it apart.
#[derive(Clone, Copy, Debug)]
enum View<'a> {
    Str(&'a str),
    Number(&'a Number),
    /// Any other kind, by its name in messages ("a boolean").
    Other(&'static str),
}

impl Fields for Map<String, Value> {
    fn view(&self, field: &str) -> Option<View<'_>> {
        present(self, field).map(View::of)
    }
}

impl<'a> View<'a> {
    /// A map's value (not null) as the rules see it.
    fn of(value: &'a Value) -> View<'a> {
        match value {
            Value::String(s) => View::Str(s),
            Value::Number(n) => View::Number(n),
            other => View::Other(kind_name(other)),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            View::Str(_) => "a string",
            View::Number(_) => "a number",
            View::Other(kind) => kind,
        }
    }
}

fn required_string(object: &impl Fields, field: &'static str) -> Result<String, Rejection> {
    match object.view(field) {
        None => Err(reject(
            Reason::MissingField(field),
            format!("{field} is required"),
        )),
        Some(View::Str(s)) => Ok(s.to_owned()),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

/// Ids may arrive as strings or as integers (many shops use numeric ids).
fn id_value(field: &'static str, value: View<'_>) -> Result<String, Rejection> {
    match value {
        View::Str(s) => Ok(s.to_owned()),
        View::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        View::Number(n) => integral(n).map(|id| id.to_string()).ok_or_else(|| {
            reject(
                Reason::WrongFieldType(field),
                format!(
                    "{field} must be a string or an integer, got {n}{}",
                    past_exact(n)
                ),
            )
        }),
        other => Err(wrong_type(field, "a string or an integer", other)),
    }
}

/// The largest integer every smaller one of which a double holds exactly.
const EXACT_IN_A_DOUBLE: f64 = 9_007_199_254_740_992.0; // 2^53

/// A number's integer value, whether written as one or with a zero fraction or an exponent
/// (`12.0`, `1.764E12`, as some serializers write doubles): JSON Schema's `integer` takes
/// both. Past 2^53 such a number was rounded when it was read, so it has no exact value.
pub(crate) fn integral(n: &Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= EXACT_IN_A_DOUBLE).then_some(f as i64)
}

/// Why an integral number written as a double is refused, if that is why.
fn past_exact(n: &Number) -> &'static str {
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && !n.is_i64() && !n.is_u64() => {
            " (past 2^53 a number with a fraction or exponent is not exact: send it as an integer or a string)"
        }
        _ => "",
    }
}

fn required_id(object: &impl Fields, field: &'static str) -> Result<String, Rejection> {
    match object.view(field) {
        None => Err(reject(
            Reason::MissingField(field),
            format!("{field} is required"),
        )),
        Some(value) => id_value(field, value),
    }
}

fn optional_id(object: &impl Fields, field: &'static str) -> Result<Option<String>, Rejection> {
    object
        .view(field)
        .map(|value| id_value(field, value))
        .transpose()
}

fn optional_number(
    object: &impl Fields,
    field: &'static str,
    reason: Reason,
) -> Result<Option<f64>, Rejection> {
    match object.view(field) {
        None => Ok(None),
        Some(View::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(reject(
            reason,
            format!("{field} must be a number, got {}", other.kind()),
        )),
    }
}

fn quantity(object: &impl Fields) -> Result<Option<u32>, Rejection> {
    match object.view("quantity") {
        None => Ok(None),
        Some(View::Number(n)) => match integral(n) {
            Some(q) if q >= 1 && q <= u32::MAX as i64 => Ok(Some(q as u32)),
            _ => Err(reject(
                Reason::BadQuantity,
                format!("quantity must be a positive integer, got {n}"),
            )),
        },
        Some(other) => Err(reject(
            Reason::BadQuantity,
            format!("quantity must be a positive integer, got {}", other.kind()),
        )),
    }
}

fn timestamp(object: &impl Fields) -> Result<i64, Rejection> {
    let bad = |detail: String| reject(Reason::BadTimestamp, detail);
    match object.view("ts") {
        None => Err(reject(Reason::MissingField("ts"), "ts is required")),
        Some(View::Number(n)) => integral(n).ok_or_else(|| {
            bad(format!(
                "ts must be integer epoch milliseconds, got {n}{}",
                past_exact(n)
            ))
        }),
        Some(View::Str(s)) => parse_time_text(s.trim()).ok_or_else(|| {
            bad(format!(
                "ts {s:?} is neither epoch milliseconds nor RFC 3339"
            ))
        }),
        Some(other) => Err(bad(format!(
            "ts must be a number or an RFC 3339 string, got {}",
            other.kind()
        ))),
    }
}

/// Epoch milliseconds as digits, or an RFC 3339 date-time.
pub fn parse_time_text(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let instant = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).ok()
}

fn wrong_type(field: &'static str, expected: &str, got: View<'_>) -> Rejection {
    reject(
        Reason::WrongFieldType(field),
        format!("{field} must be {expected}, got {}", got.kind()),
    )
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cleaner() -> Cleaner {
        Cleaner::new(CleanConfig::default())
    }

    fn code_of(payload: &str) -> String {
        cleaner()
            .clean_json(payload.as_bytes())
            .unwrap_err()
            .reason
            .code()
    }

    #[test]
    fn accepts_a_full_event_and_trims_ids() {
        let event = cleaner()
            .clean_json(
                br#"{"event_id":"e1","type":"buy","user_id":" u1 ","item_id":42,
                     "ts":"2024-05-01T12:00:00Z","price":9.5,"quantity":2,"category":"shoes"}"#,
            )
            .unwrap();
        assert_eq!(event.kind, EventType::Purchase);
        assert_eq!(event.user_id, "u1");
        assert_eq!(event.item_id, "42");
        assert_eq!(event.ts_ms, 1_714_564_800_000);
        assert_eq!(event.price, Some(9.5));
        assert_eq!(event.quantity, Some(2));
    }

    #[test]
    fn each_rule_has_its_code() {
        let ok_ts = 1_700_000_000_000i64;
        let cases = [
            ("nope".to_string(), "not_json"),
            ("[1,2]".to_string(), "not_object"),
            (
                format!(r#"{{"type":"view","item_id":"i","ts":{ok_ts}}}"#),
                "missing_field:user_id",
            ),
            (
                format!(r#"{{"type":"view","user_id":null,"item_id":"i","ts":{ok_ts}}}"#),
                "missing_field:user_id",
            ),
            (
                format!(r#"{{"type":"view","user_id":"  ","item_id":"i","ts":{ok_ts}}}"#),
                "empty_id:user_id",
            ),
            (
                format!(r#"{{"type":"view","user_id":"u","item_id":[1],"ts":{ok_ts}}}"#),
                "wrong_field_type:item_id",
            ),
            (
                format!(r#"{{"type":"refund","user_id":"u","item_id":"i","ts":{ok_ts}}}"#),
                "bad_type",
            ),
            (
                r#"{"type":"view","user_id":"u","item_id":"i","ts":"yesterday"}"#.to_string(),
                "bad_timestamp",
            ),
            (
                r#"{"type":"view","user_id":"u","item_id":"i","ts":1000}"#.to_string(),
                "bad_timestamp",
            ),
            (
                format!(r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ok_ts},"price":-1}}"#),
                "bad_price",
            ),
            (
                format!(
                    r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ok_ts},"price":"9"}}"#
                ),
                "bad_price",
            ),
            (
                format!(
                    r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ok_ts},"quantity":0}}"#
                ),
                "bad_quantity",
            ),
            (
                format!(
                    r#"{{"type":"view","user_id":"{}","item_id":"i","ts":{ok_ts}}}"#,
                    "x".repeat(200)
                ),
                "id_too_long:user_id",
            ),
            (
                format!(
                    r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ok_ts},"pad":"{}"}}"#,
                    "x".repeat(20_000)
                ),
                "payload_too_large",
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(code_of(&payload), expected, "{payload}");
        }
    }

    #[test]
    fn future_skew_is_measured_from_the_message_kafka_timestamp() {
        let cleaner = cleaner();
        let written = 1_700_000_000_000i64;
        let day = 24 * 3600 * 1000;
        let event = |ts: i64| format!(r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ts}}}"#);
        let clean = |ts: i64, at: Option<i64>| cleaner.clean_input(event(ts).as_bytes(), at);
        let far = clean(written + 2 * day, Some(written)).unwrap_err();
        assert_eq!(far.reason, Reason::BadTimestamp);
        assert!(far
            .detail
            .contains("ahead of the message's Kafka timestamp"));
        assert!(clean(written + day, Some(written)).is_ok());
        assert!(
            clean(written + 2 * day, None).is_ok(),
            "nothing to be ahead of"
        );
    }

    #[test]
    fn a_kafka_timestamp_before_the_earliest_event_time_judges_nothing() {
        // A producer that leaves the record timestamp at 0, or writes it in seconds: every
        // event would be "ahead" of it. Such a write time says nothing, as a missing one.
        let cleaner = cleaner();
        let now = 1_700_000_000_000i64;
        let event = format!(r#"{{"type":"view","user_id":"u","item_id":"i","ts":{now}}}"#);
        for written in [0, now / 1000, cleaner.config.min_ts_ms - 1] {
            let cleaned = cleaner.clean_input(event.as_bytes(), Some(written));
            assert!(cleaned.is_ok(), "written at {written}: {cleaned:?}");
        }
        let written = cleaner.config.min_ts_ms;
        let far = cleaner.clean_input(event.as_bytes(), Some(written));
        assert_eq!(far.unwrap_err().reason, Reason::BadTimestamp);
    }

    #[test]
    fn a_gap_in_the_stream_rejects_nothing_after_it() {
        // A stream that jumps days ahead (an idle shop, sparse history) is judged message by
        // message: the old rule, relative to the latest accepted event, rejected everything
        // after such a gap.
        let cleaner = cleaner();
        let day = 24 * 3600 * 1000;
        let base = 1_700_000_000_000i64;
        for ts in [base, base + 30 * day, base + 30 * day + 1] {
            let payload = format!(r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ts}}}"#);
            assert!(cleaner.clean_input(payload.as_bytes(), Some(ts)).is_ok());
        }
    }

    #[test]
    fn a_batch_of_events_in_one_message_is_not_an_object_and_says_so() {
        let batch = br#"[{"type":"view","user_id":"u","item_id":"i","ts":1700000000000}]"#;
        for rejection in [
            cleaner().clean_json(batch).unwrap_err(),
            cleaner().clean_input(batch, None).unwrap_err(),
        ] {
            assert_eq!(rejection.reason, Reason::NotObject);
            let detail = "expected a JSON object, got an array (one event per message)";
            assert_eq!(rejection.detail, detail);
        }
        let text = cleaner().clean_json(br#""view""#).unwrap_err();
        assert_eq!(text.detail, "expected a JSON object, got a string");
    }

    #[test]
    fn a_timestamp_in_seconds_is_refused_with_a_hint() {
        let seconds = br#"{"type":"view","user_id":"u","item_id":"i","ts":1700000000}"#;
        let rejection = cleaner().clean_json(seconds).unwrap_err();
        assert_eq!(rejection.reason, Reason::BadTimestamp);
        assert!(rejection
            .detail
            .ends_with("(epoch seconds? ts is epoch milliseconds)"));
        let ancient = br#"{"type":"view","user_id":"u","item_id":"i","ts":5}"#;
        let rejection = cleaner().clean_json(ancient).unwrap_err();
        assert!(
            !rejection.detail.contains("seconds"),
            "{}",
            rejection.detail
        );
        let far_past = format!(
            r#"{{"type":"view","user_id":"u","item_id":"i","ts":{}}}"#,
            i64::MIN
        );
        assert!(cleaner().clean_json(far_past.as_bytes()).is_err());
    }

    #[test]
    fn a_timestamp_in_microseconds_is_refused_with_a_hint() {
        let written = 1_700_000_000_000;
        let event = |ts: i64| format!(r#"{{"type":"view","user_id":"u","item_id":"i","ts":{ts}}}"#);
        let micros = event(written * 1000 + 5);
        let rejection = cleaner()
            .clean_input(micros.as_bytes(), Some(written))
            .unwrap_err();
        assert_eq!(rejection.reason, Reason::BadTimestamp);
        assert!(
            (rejection.detail).ends_with("(epoch microseconds? ts is epoch milliseconds)"),
            "{}",
            rejection.detail
        );
        let two_days_ahead = event(written + 2 * 86_400_000);
        let rejection = cleaner()
            .clean_input(two_days_ahead.as_bytes(), Some(written))
            .unwrap_err();
        assert!(!rejection.detail.contains("micro"), "{}", rejection.detail);
    }

    #[test]
    fn integers_written_as_doubles_read_as_the_integers_they_are() {
        // As Jackson writes a double (1.7E12) or Python a float (42.0): JSON Schema's
        // `integer` takes them, so the cleaner must too.
        let event = cleaner()
            .clean_json(
                br#"{"type":"purchase","user_id":42.0,"item_id":"i","ts":1.7E12,
                     "price":5,"quantity":2.0,"session_id":7.0}"#,
            )
            .unwrap();
        assert_eq!(event.user_id, "42", "the same user as an integer 42");
        assert_eq!(event.ts_ms, 1_700_000_000_000);
        assert_eq!(event.quantity, Some(2));
        let fraction = br#"{"type":"view","user_id":"u","item_id":"i","ts":1700000000000.5}"#;
        assert_eq!(
            cleaner().clean_json(fraction).unwrap_err().detail,
            "ts must be integer epoch milliseconds, got 1700000000000.5"
        );
        let past_exact = br#"{"type":"view","user_id":1.2e20,"item_id":"i","ts":1700000000000}"#;
        let rejection = cleaner().clean_json(past_exact).unwrap_err();
        assert_eq!(rejection.reason, Reason::WrongFieldType("user_id"));
        assert!(
            rejection.detail.contains("past 2^53"),
            "{}",
            rejection.detail
        );
        let half = br#"{"type":"view","user_id":1.5,"item_id":"i","ts":1700000000000}"#;
        let detail = cleaner().clean_json(half).unwrap_err().detail;
        assert_eq!(detail, "user_id must be a string or an integer, got 1.5");
    }

    #[test]
    fn inputs_framed_by_a_schema_registry_serializer_read_as_their_json() {
        let event = br#"{"type":"view","user_id":"u","item_id":"i","ts":1700000000000}"#;
        let plain = cleaner().clean_input(event, None).unwrap();
        let framed = cleaner().clean_input(&schema_registry_framed(7, event), None);
        assert_eq!(framed.unwrap(), plain);
        let profile = br#"{"type":"profile","user_id":"u","ts":1700000000000,"attributes":{}}"#;
        let framed = cleaner().clean_input(&schema_registry_framed(7, profile), None);
        assert!(matches!(framed, Ok(Input::Profile(_))), "{framed:?}");
    }

    #[test]
    fn avro_behind_a_schema_registry_header_is_not_json_and_says_so() {
        let avro = schema_registry_framed(7, b"\x02u\x02i");
        let rejection = cleaner().clean_input(&avro, None).unwrap_err();
        assert_eq!(rejection.reason, Reason::NotJson);
        assert!(
            rejection
                .detail
                .starts_with("after a Schema Registry header (schema id 7): "),
            "{}",
            rejection.detail
        );
        assert!(rejection
            .detail
            .ends_with("(Avro and Protobuf are not read)"));
    }

    #[test]
    fn a_rejection_displays_code_and_detail() {
        let rejection = cleaner()
            .clean_json(br#"{"type":"view","user_id":"u","item_id":"i"}"#)
            .unwrap_err();
        assert_eq!(rejection.to_string(), "missing_field:ts: ts is required");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cleaning_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Cleaner::new(CleanConfig::default()).clean_json(&bytes);
        }

        #[test]
        fn cleaning_never_panics_on_event_shaped_json(
            kind in "[a-z_]{0,12}",
            user in any::<String>(),
            item in prop_oneof![any::<String>().prop_map(serde_json::Value::from), any::<i64>().prop_map(serde_json::Value::from), any::<f64>().prop_map(serde_json::Value::from)],
            ts in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), any::<f64>().prop_map(serde_json::Value::from), any::<String>().prop_map(serde_json::Value::from)],
            price in any::<f64>(),
        ) {
            let payload = serde_json::json!({"type": kind, "user_id": user, "item_id": item, "ts": ts, "price": price});
            let cleaner = Cleaner::new(CleanConfig::default());
            if let Ok(event) = cleaner.clean_json(payload.to_string().as_bytes()) {
                prop_assert!(!event.user_id.is_empty() && event.user_id.len() <= 128);
                prop_assert!(event.ts_ms >= CleanConfig::default().min_ts_ms);
            }
        }
    }
}
