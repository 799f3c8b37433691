//! An event's JSON object decoded without building a map: the nine fields the rules read are
//! kept, strings borrowed from the payload where they have no escapes. Anything else (unknown
//! fields, arrays, objects) is still decoded in full as a `Value` and dropped, so the bytes
//! accepted and refused, and the parser's messages, are those of decoding the whole object.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use super::{Fields, View};
use crate::config::ShopNames;
use crate::event::EVENT_FIELDS;

/// The fields of an event object the rules read; a field's place here is its slot in
/// `EventFields`.
const NAMES: [&str; 9] = EVENT_FIELDS;

fn slot_of(name: &str) -> Option<usize> {
    NAMES.iter().position(|known| *known == name)
}

/// One field's value: what the rules tell apart, and the kind of the rest for their messages.
#[derive(Clone, Debug, PartialEq)]
enum Field<'a> {
    Null,
    Str(Cow<'a, str>),
    Number(Number),
    Other(&'static str),
}

/// The object's fields by their slot in `NAMES` (a later duplicate replaces an earlier one, as
/// in a map).
#[derive(Debug, Default)]
pub(super) struct EventFields<'a> {
    fields: [Option<Field<'a>>; NAMES.len()],
}

/// A payload's top level: an object's fields, or `None` for any other JSON value.
struct Decoded<'a>(Option<EventFields<'a>>);

/// Decodes a payload, the shop's field names read as ours; `Err` is the parser's error, as
/// decoding it into a `Value` gives it.
pub(super) fn decode<'a>(
    payload: &'a [u8],
    names: &ShopNames,
) -> Result<Option<EventFields<'a>>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let Decoded(fields) = TopVisitor { names }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(fields)
}

impl Fields for EventFields<'_> {
    fn view(&self, field: &str) -> Option<View<'_>> {
        match self.fields[slot_of(field)?].as_ref()? {
            Field::Null => None,
            Field::Str(s) => Some(View::Str(s)),
            Field::Number(n) => Some(View::Number(n)),
            Field::Other(kind) => Some(View::Other(kind)),
        }
    }
}

/// An object's key: a field the rules read, or `None`.
struct Key(Option<Slot>);

/// A field's slot, and whether the key was the shop's name for it.
#[derive(Clone, Copy)]
struct Slot {
    at: usize,
    shop_name: bool,
}

/// Reads a key, knowing the shop's names.
#[derive(Clone, Copy)]
struct KeySeed<'n> {
    names: &'n ShopNames,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        let own = slot_of(key).map(|at| Slot {
            at,
            shop_name: false,
        });
        let shop = || {
            let field = self.names.field_of(key)?;
            let at = slot_of(field)?;
            Some(Slot {
                at,
                shop_name: true,
            })
        };
        Ok(Key(own.or_else(shop)))
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Field<'de>, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other("a boolean"))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Field<'de>, E> {
        Ok(Field::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Field<'de>, E> {
        // As `Value` does: a float JSON cannot hold is null.
        Ok(Number::from_f64(n).map_or(Field::Null, Field::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Field::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<String, Value>()?.is_some() {}
        Ok(Field::Other("an object"))
    }
}

struct TopVisitor<'n> {
    names: &'n ShopNames,
}

impl<'de> DeserializeSeed<'de> for TopVisitor<'_> {
    type Value = Decoded<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Decoded<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = Decoded<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded<'de>, A::Error> {
        let mut object = EventFields::default();
        // Fields set under the shop's name, which a field's own name does not replace.
        let mut by_shop_name = [false; NAMES.len()];
        let seed = KeySeed { names: self.names };
        while let Some(Key(slot)) = map.next_key_seed(seed)? {
            let Some(Slot { at, shop_name }) = slot else {
                drop(map.next_value::<Value>()?);
                continue;
            };
            let value = map.next_value::<Field<'de>>()?;
            if shop_name || !by_shop_name[at] {
                object.fields[at] = Some(value);
                by_shop_name[at] |= shop_name;
            }
        }
        Ok(Decoded(Some(object)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Decoded<'de>, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Decoded(None))
    }

    fn visit_unit<E>(self) -> Result<Decoded<'de>, E> {
        Ok(Decoded(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Decoded<'de>, E> {
        Ok(Decoded(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Decoded<'de>, E> {
        Ok(Decoded(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Decoded<'de>, E> {
        Ok(Decoded(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Decoded<'de>, E> {
        Ok(Decoded(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Decoded<'de>, E> {
        Ok(Decoded(None))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::clean::{Cleaner, Rejection};
    use crate::config::CleanConfig;
    use crate::event::Event;

    /// The reference: the whole payload decoded into a `Value` map, then the same rules.
    fn judged_as_a_map(cleaner: &Cleaner, payload: &[u8]) -> Result<Event, Rejection> {
        let event = (cleaner.input_object(payload)).and_then(|o| cleaner.event_from(&o));
        let event = event.and_then(|event| cleaner.check(event, None));
        event.map_err(|rejection| cleaner.naming_shop_fields(rejection))
    }

    /// A cleaner that reads a shop's names: `userId`, `productId`, `eventType`, `view_item`.
    fn shop_cleaner() -> Cleaner {
        let names = [
            ("user_id", "userId"),
            ("item_id", "productId"),
            ("type", "eventType"),
        ];
        Cleaner::new(CleanConfig::with_shop_names(
            &names,
            &[("view_item", "view")],
        ))
    }

    fn value() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| serde_json::json!(n).to_string()),
            "[ a-z0-9\"\\\\\u{e9}]{0,10}".prop_map(|s| serde_json::json!(s).to_string()),
            Just(r#""\u0041\n""#.to_string()),
            Just(r#""2024-05-01T12:00:00Z""#.to_string()),
            Just("1700000000000".to_string()),
            Just(r#"[1,{"a":[null]}]"#.to_string()),
            Just(r#"{"k":"v","k":1}"#.to_string()),
        ];
        scalar
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("type"),
            Just("event_id"),
            Just("user_id"),
            Just("item_id"),
            Just("ts"),
            Just("session_id"),
            Just("price"),
            Just("quantity"),
            Just("category"),
            Just("extra"),
            Just("us\\u0065r_id"),
            Just("userId"),
            Just("productId"),
            Just("eventType"),
        ]
        .prop_map(str::to_string)
    }

    /// Objects written as text, so a key can repeat (a map keeps the last).
    fn object() -> impl Strategy<Value = String> {
        let kind = prop_oneof![
            Just("view"),
            Just("buy"),
            Just("profile"),
            Just("refund"),
            Just("view_item"),
        ];
        let base = (kind, proptest::collection::vec((key(), value()), 0..12));
        base.prop_map(|(kind, fields)| {
            let mut text =
                format!(r#"{{"type":"{kind}","user_id":" u ","item_id":7,"ts":1700000000000"#);
            for (key, value) in fields {
                text.push_str(&format!(r#","{key}":{value}"#));
            }
            text.push('}');
            text
        })
    }

    proptest! {
        #[test]
        fn fields_are_judged_as_a_value_map_judges_them(text in object()) {
            let cleaner = Cleaner::new(CleanConfig::default());
            let payload = text.as_bytes();
            prop_assert_eq!(cleaner.clean_json(payload), judged_as_a_map(&cleaner, payload), "{}", text);
        }

        #[test]
        fn a_shops_names_are_judged_as_a_value_map_judges_them(text in object()) {
            let cleaner = shop_cleaner();
            let payload = text.as_bytes();
            prop_assert_eq!(cleaner.clean_json(payload), judged_as_a_map(&cleaner, payload), "{}", text);
        }

        #[test]
        fn damaged_bytes_are_refused_with_the_same_reason_and_detail(
            text in object(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let cleaner = Cleaner::new(CleanConfig::default());
            let mut payload = text.into_bytes();
            let at = at.index(payload.len());
            payload[at] = byte;
            prop_assert_eq!(cleaner.clean_json(&payload), judged_as_a_map(&cleaner, &payload));
        }
    }
}
