//! Event model v1: what a shopper did, to which item, and when (event time, not wall time).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The fields of an event object (event v1) the cleaning rules read.
pub const EVENT_FIELDS: [&str; 9] = [
    "type",
    "event_id",
    "user_id",
    "item_id",
    "ts",
    "session_id",
    "price",
    "quantity",
    "category",
];

/// Kinds of interaction, ordered by strength of intent: `View < Favorite < AddToCart < Purchase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    View,
    Favorite,
    AddToCart,
    Purchase,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::View,
        EventType::Favorite,
        EventType::AddToCart,
        EventType::Purchase,
    ];

    /// Parses a canonical name or one of the aliases shops send (`pv`, `cart`, `buy`, ...).
    pub fn parse(name: &str) -> Option<EventType> {
        let lowered = name.trim().to_ascii_lowercase();
        match lowered.as_str() {
            "view" | "browse" | "pv" | "click" => Some(EventType::View),
            "favorite" | "favourite" | "fav" => Some(EventType::Favorite),
            "add_to_cart" | "cart" => Some(EventType::AddToCart),
            "purchase" | "buy" | "order" => Some(EventType::Purchase),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Favorite => "favorite",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// Dense index for per-type arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        EventType::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {name:?}")))
    }
}

/// A cleaned event. Ids are trimmed and non-empty; `ts_ms` is epoch milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub user_id: String,
    pub item_id: String,
    #[serde(rename = "ts")]
    pub ts_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl Event {
    /// A minimal event; the optional fields start empty.
    pub fn new(kind: EventType, user_id: &str, item_id: &str, ts_ms: i64) -> Event {
        Event {
            event_id: None,
            kind,
            user_id: user_id.to_owned(),
            item_id: item_id.to_owned(),
            ts_ms,
            session_id: None,
            price: None,
            quantity: None,
            category: None,
        }
    }

    /// The v1 JSON encoding, as `produce` writes it and `clean::Cleaner` reads it back.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an Event always serialises")
    }
}

/// A change to a user's attributes (`"type":"profile"` on an input topic): age band, region,
/// any key/value. `None` removes the key. Attributes are personal data: never logged at info.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileUpdate {
    pub user_id: String,
    pub ts_ms: i64,
    /// Sorted by key, keys unique.
    pub attributes: Vec<(String, Option<String>)>,
}

/// What a page showed a user (`"type":"impression"`), or what they said they do not want
/// (`"type":"dismiss"`): feedback on recommendations, kept per user and never learned from.
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    pub user_id: String,
    pub ts_ms: i64,
    pub kind: FeedbackKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FeedbackKind {
    /// Items shown together (a page, a widget), each once, in the order given.
    Impression { item_ids: Vec<String> },
    /// "Not interested" in the item — or, with `category`, in every item of its category.
    Dismiss { item_id: String, category: bool },
}

/// A cleaned input message.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Event(Event),
    Profile(ProfileUpdate),
    Feedback(Feedback),
    Catalog(crate::catalog::CatalogUpdate),
}

impl Input {
    /// The user whose state the input touches, if any.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Input::Event(event) => Some(&event.user_id),
            Input::Profile(update) => Some(&update.user_id),
            Input::Feedback(feedback) => Some(&feedback.user_id),
            Input::Catalog(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_canonical_types() {
        let cases = [
            ("browse", EventType::View),
            ("PV", EventType::View),
            ("click", EventType::View),
            ("cart", EventType::AddToCart),
            ("fav", EventType::Favorite),
            ("buy", EventType::Purchase),
            ("order", EventType::Purchase),
            (" purchase ", EventType::Purchase),
        ];
        for (name, expected) in cases {
            assert_eq!(EventType::parse(name), Some(expected), "{name}");
        }
        assert_eq!(EventType::parse("refund"), None);
    }

    #[test]
    fn strength_order_puts_purchase_last() {
        assert!(EventType::View < EventType::Favorite);
        assert!(EventType::Favorite < EventType::AddToCart);
        assert!(EventType::AddToCart < EventType::Purchase);
    }

    #[test]
    fn json_uses_v1_field_names() {
        let json = Event::new(EventType::AddToCart, "u1", "i9", 1_700_000_000_000).to_json();
        assert_eq!(
            json,
            r#"{"type":"add_to_cart","user_id":"u1","item_id":"i9","ts":1700000000000}"#
        );
    }
}
