//! Feedback on recommendations:
//! `{"type":"impression","user_id","ts","item_ids":[…]}` — items a page showed the user — and
//! `{"type":"dismiss","user_id","ts","item_id","category":false}` — "not interested" in the
//! item (or, with `"category":true`, in its category).

use serde_json::{Map, Value};

use super::{
    id_value, id_within, kind_name, reject, required_id, timestamp, Cleaner, Reason, Rejection,
    View,
};
use crate::event::{Feedback, FeedbackKind};

const ITEMS: &str = "item_ids";

impl Cleaner {
    pub(super) fn feedback_from_object(
        &self,
        kind: &str,
        object: &Map<String, Value>,
    ) -> Result<Feedback, Rejection> {
        let max_len = self.config.max_id_len;
        let user_id = id_within(&required_id(object, "user_id")?, "user_id", max_len)?;
        let ts_ms = timestamp(object)?;
        let kind = match kind {
            "impression" => FeedbackKind::Impression {
                item_ids: self.shown_items(object)?,
            },
            _ => FeedbackKind::Dismiss {
                item_id: id_within(&required_id(object, "item_id")?, "item_id", max_len)?,
                category: dismisses_category(object)?,
            },
        };
        Ok(Feedback {
            user_id,
            ts_ms,
            kind,
        })
    }

    /// An impression's items: 1 to `max_impression_items` ids, each kept once.
    fn shown_items(&self, object: &Map<String, Value>) -> Result<Vec<String>, Rejection> {
        let listed = match object.get(ITEMS) {
            None | Some(Value::Null) => {
                return Err(reject(Reason::MissingField(ITEMS), "item_ids is required"))
            }
            Some(Value::Array(listed)) => listed,
            Some(other) => {
                let detail = format!("item_ids must be an array, got {}", kind_name(other));
                return Err(reject(Reason::WrongFieldType(ITEMS), detail));
            }
        };
        if listed.is_empty() {
            return Err(reject(Reason::MissingField(ITEMS), "item_ids holds no ids"));
        }
        let max = self.config.max_impression_items;
        if listed.len() > max {
            let detail = format!("{} items, limit {max}", listed.len());
            return Err(reject(Reason::TooManyItems(ITEMS), detail));
        }
        let mut ids: Vec<String> = Vec::with_capacity(listed.len());
        for value in listed {
            let id = id_value(ITEMS, View::of(value))?;
            let id = id_within(&id, ITEMS, self.config.max_id_len)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

fn dismisses_category(object: &Map<String, Value>) -> Result<bool, Rejection> {
    match object.get("category") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(whole)) => Ok(*whole),
        Some(other) => {
            let detail = format!("category must be a boolean, got {}", kind_name(other));
            Err(reject(Reason::WrongFieldType("category"), detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::clean::Cleaner;
    use crate::config::CleanConfig;
    use crate::event::{FeedbackKind, Input};

    fn clean(json: &str) -> Result<Input, String> {
        let cleaner = Cleaner::new(CleanConfig {
            max_impression_items: 3,
            ..CleanConfig::default()
        });
        cleaner
            .clean_input(json.as_bytes(), None)
            .map_err(|r| r.reason.code())
    }

    fn kind(json: &str) -> FeedbackKind {
        match clean(json) {
            Ok(Input::Feedback(feedback)) => feedback.kind,
            other => panic!("{json}: {other:?}"),
        }
    }

    const TS: &str = r#""ts":1700000000000"#;

    #[test]
    fn impressions_list_their_items_once_each() {
        let json = format!(r#"{{"type":"impression","user_id":"u","item_ids":["a",7,"a"],{TS}}}"#);
        let expected = FeedbackKind::Impression {
            item_ids: vec!["a".into(), "7".into()],
        };
        assert_eq!(kind(&json), expected);
    }

    #[test]
    fn dismissals_name_an_item_and_optionally_its_category() {
        let json = format!(r#"{{"type":"dismiss","user_id":"u","item_id":"a",{TS}}}"#);
        let item_only = FeedbackKind::Dismiss {
            item_id: "a".into(),
            category: false,
        };
        assert_eq!(kind(&json), item_only);
        let json = json.replace(r#""item_id":"a""#, r#""item_id":"a","category":true"#);
        assert!(matches!(
            kind(&json),
            FeedbackKind::Dismiss { category: true, .. }
        ));
    }

    #[test]
    fn bad_feedback_names_the_field_and_rule() {
        let cases = [
            (
                r#""type":"impression","user_id":"u""#,
                "missing_field:item_ids",
            ),
            (
                r#""type":"impression","user_id":"u","item_ids":[]"#,
                "missing_field:item_ids",
            ),
            (
                r#""type":"impression","user_id":"u","item_ids":"a""#,
                "wrong_field_type:item_ids",
            ),
            (
                r#""type":"impression","user_id":"u","item_ids":["a","b","c","d"]"#,
                "too_many_items:item_ids",
            ),
            (
                r#""type":"impression","user_id":"u","item_ids":["a",""]"#,
                "empty_id:item_ids",
            ),
            (
                r#""type":"impression","item_ids":["a"]"#,
                "missing_field:user_id",
            ),
            (r#""type":"dismiss","user_id":"u""#, "missing_field:item_id"),
            (
                r#""type":"dismiss","user_id":"u","item_id":"a","category":"yes""#,
                "wrong_field_type:category",
            ),
        ];
        for (fields, code) in cases {
            let json = format!("{{{fields},{TS}}}");
            assert_eq!(clean(&json), Err(code.to_owned()), "{json}");
        }
    }
}
