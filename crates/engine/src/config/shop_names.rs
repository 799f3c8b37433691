//! A shop's own names for our input fields and event types, so its events are read as they
//! are produced (`{"userId":…,"productId":…,"eventType":"view_item"}`), with no translating
//! producer in between. A name with dots is a path into nested objects
//! (`properties.product_id`), as event collectors such as Segment or RudderStack nest them.

use std::collections::HashMap;

use super::{invalid, CleanConfig, InvalidSetting};
use crate::event::{EventType, EVENT_FIELDS};

/// The fields of input messages a shop may name its way: an event's, then an impression's
/// and a profile update's own.
fn renamable_fields() -> impl Iterator<Item = &'static str> {
    EVENT_FIELDS.into_iter().chain(["item_ids", "attributes"])
}

/// The `type` values of inputs that are not events.
const FEEDBACK_TYPES: [&str; 3] = ["profile", "impression", "dismiss"];

/// `engine.clean.field_names` and `engine.clean.event_types`, checked and ready for lookups.
/// A field's own name is read as well as the shop's, so a message valid by our schemas is read
/// as before; where a message holds both, the shop's name wins.
#[derive(Clone, Debug, Default)]
pub struct ShopNames {
    /// (shop's name, our field).
    fields: Vec<(String, &'static str)>,
    /// A shop's type name, lowercased, and the type it means (`view`, …, `dismiss`).
    types: HashMap<String, &'static str>,
}

const FIELD_NAMES: &str = "engine.clean.field_names";
const EVENT_TYPES: &str = "engine.clean.event_types";

impl ShopNames {
    /// The names of a config, or an error naming the entry and the rule it breaks.
    pub fn of(config: &CleanConfig) -> Result<ShopNames, InvalidSetting> {
        let mut names = ShopNames::default();
        for (field, shop_name) in &config.field_names {
            let field = renamable(field)?;
            names.add_field(field, shop_name, config.max_id_len)?;
        }
        for (shop_type, meaning) in &config.event_types {
            names.add_type(shop_type, meaning)?;
        }
        Ok(names)
    }

    fn add_field(
        &mut self,
        field: &'static str,
        shop_name: &str,
        max_len: usize,
    ) -> Result<(), InvalidSetting> {
        let name = NameRule {
            key: FIELD_NAMES,
            max_len,
            own_fields: &renamable_fields().collect::<Vec<_>>(),
        };
        name.check(field, shop_name, &self.fields)?;
        self.fields.push((shop_name.to_owned(), field));
        Ok(())
    }

    fn add_type(&mut self, shop_type: &str, meaning: &str) -> Result<(), InvalidSetting> {
        let rule = |what: String| {
            Err(invalid(
                EVENT_TYPES,
                &format!("{shop_type} = {meaning:?}: {what}"),
            ))
        };
        let lowered = shop_type.trim().to_ascii_lowercase();
        if lowered.is_empty() {
            return rule("a type name is not empty".into());
        }
        if let Some(means) = built_in(&lowered) {
            return rule(format!("type {shop_type:?} already means {means}"));
        }
        let Some(meaning) = built_in(meaning) else {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            let known = known.iter().chain(&FEEDBACK_TYPES);
            let known: Vec<&str> = known.copied().collect();
            return rule(format!("the meaning must be one of {}", known.join(", ")));
        };
        if self.types.insert(lowered, meaning).is_some() {
            return rule("another entry differs from it only in case".into());
        }
        Ok(())
    }

    /// Our field that a key of the shop's names, if any.
    pub fn field_of(&self, key: &str) -> Option<&'static str> {
        let found = self.fields.iter().find(|(name, _)| name == key);
        found.map(|&(_, field)| field)
    }

    /// The shop's name for our field, if it has one.
    pub fn shop_name(&self, field: &str) -> Option<&str> {
        let found = self.fields.iter().find(|&&(_, f)| f == field);
        found.map(|(name, _)| name.as_str())
    }

    /// Every (shop's name, our field).
    pub fn fields(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.fields
            .iter()
            .map(|(name, field)| (name.as_str(), *field))
    }

    /// Whether a name is a path into nested objects, which only a message decoded as a whole
    /// can follow.
    pub fn has_paths(&self) -> bool {
        self.fields.iter().any(|(name, _)| name.contains('.'))
    }

    /// What a `type` value means: our name of the type a shop's name stands for, or the value.
    pub fn type_name<'a>(&self, sent: &'a str) -> &'a str {
        if self.types.is_empty() {
            return sent;
        }
        let trimmed = sent.trim();
        let meaning = self.types.get(trimmed).copied();
        meaning
            .or_else(|| self.types.get(&trimmed.to_ascii_lowercase()).copied())
            .unwrap_or(sent)
    }
}

/// What a shop's name for one of our fields must be, in the table `key`.
pub(super) struct NameRule<'a> {
    pub key: &'static str,
    pub max_len: usize,
    /// Our fields of the messages the table renames: a shop's name may not be one of them.
    pub own_fields: &'a [&'static str],
}

impl NameRule<'_> {
    /// Whether `shop_name` may stand for `field`, beside the names already `taken`.
    pub fn check(
        &self,
        field: &str,
        shop_name: &str,
        taken: &[(String, &'static str)],
    ) -> Result<(), InvalidSetting> {
        let rule = |what: String| {
            Err(invalid(
                self.key,
                &format!("{field} = {shop_name:?}: {what}"),
            ))
        };
        let max_len = self.max_len;
        if shop_name.is_empty() || shop_name.chars().count() > max_len {
            return rule(format!("a name has 1 to {max_len} characters"));
        }
        if self.own_fields.contains(&shop_name) {
            return rule(format!("{shop_name} is a field of its own"));
        }
        if shop_name.split('.').any(str::is_empty) {
            return rule("a path has no empty part".into());
        }
        if let Some((_, other)) = taken.iter().find(|(name, _)| name == shop_name) {
            return rule(format!("{other} has that name already"));
        }
        Ok(())
    }
}

fn renamable(field: &str) -> Result<&'static str, InvalidSetting> {
    renamable_fields().find(|&f| f == field).ok_or_else(|| {
        let fields: Vec<&str> = renamable_fields().collect();
        let rule = format!(
            "{field:?} is not an input field; fields are {}",
            fields.join(", ")
        );
        invalid(FIELD_NAMES, &rule)
    })
}

/// Our name of a type the `type` field accepts as it is (a name or alias), if it is one.
fn built_in(name: &str) -> Option<&'static str> {
    let feedback = FEEDBACK_TYPES.iter().find(|&&t| t == name).copied();
    feedback.or_else(|| EventType::parse(name).map(EventType::as_str))
}

#[cfg(test)]
impl CleanConfig {
    /// The defaults with a shop's names: (our field, the shop's name), (its type, the meaning).
    pub fn with_shop_names(fields: &[(&str, &str)], types: &[(&str, &str)]) -> CleanConfig {
        let pairs = |list: &[(&str, &str)]| {
            (list.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        CleanConfig {
            field_names: pairs(fields),
            event_types: pairs(types),
            ..CleanConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fields: &[(&str, &str)], types: &[(&str, &str)]) -> CleanConfig {
        CleanConfig::with_shop_names(fields, types)
    }

    type Entries<'a> = &'a [(&'a str, &'a str)];

    fn refusal(fields: &[(&str, &str)], types: &[(&str, &str)]) -> String {
        let err = ShopNames::of(&config(fields, types)).expect_err("refused");
        format!("{}: {}", err.key, err.rule)
    }

    #[test]
    fn a_shops_names_are_looked_up_both_ways_and_types_ignore_case() {
        let names = ShopNames::of(&config(
            &[("user_id", "userId"), ("type", "eventType")],
            &[("View_Item", "view"), ("product_impression", "impression")],
        ))
        .unwrap();
        assert_eq!(names.field_of("userId"), Some("user_id"));
        assert_eq!(
            names.field_of("user_id"),
            None,
            "our own names need no entry"
        );
        assert_eq!(names.shop_name("type"), Some("eventType"));
        assert_eq!(names.type_name("view_item"), "view");
        assert_eq!(names.type_name(" VIEW_ITEM "), "view");
        assert_eq!(names.type_name("product_impression"), "impression");
        assert_eq!(
            names.type_name("refund"),
            "refund",
            "unknown types stay as sent"
        );
    }

    #[test]
    fn entries_that_cannot_work_are_refused_with_the_entry_and_the_rule() {
        let cases: [(Entries, Entries, &str); 8] = [
            (
                &[("item_id", "properties..id")],
                &[],
                "a path has no empty part",
            ),
            (
                &[("userid", "uid")],
                &[],
                "\"userid\" is not an input field",
            ),
            (
                &[("user_id", "item_id")],
                &[],
                "item_id is a field of its own",
            ),
            (
                &[("user_id", "id"), ("item_id", "id")],
                &[],
                "user_id = \"id\": item_id has that name already",
            ),
            (&[("user_id", "")], &[], "a name has 1 to 128 characters"),
            (
                &[],
                &[("click", "purchase")],
                "type \"click\" already means view",
            ),
            (
                &[],
                &[("sale", "refund")],
                "the meaning must be one of view, favorite",
            ),
            (
                &[],
                &[("Sale", "purchase"), ("sale", "purchase")],
                "differs from it only in case",
            ),
        ];
        for (fields, types, rule) in cases {
            let refusal = refusal(fields, types);
            assert!(refusal.contains(rule), "{refusal:?} should say {rule:?}");
            assert!(refusal.starts_with("engine.clean."), "{refusal}");
        }
    }
}
