//! Profile updates: `{"type":"profile","user_id","ts","attributes":{key: value | null}}`.

use serde_json::{Map, Value};

use super::{
    attribute_within, count_within, id_within, kind_name, reject, required_id, timestamp, Cleaner,
    Reason, Rejection,
};
use crate::event::ProfileUpdate;

const FIELD: &str = "attributes";

impl Cleaner {
    pub(super) fn profile_from_object(
        &self,
        object: &Map<String, Value>,
    ) -> Result<ProfileUpdate, Rejection> {
        let user_id = id_within(
            &required_id(object, "user_id")?,
            "user_id",
            self.config.max_id_len,
        )?;
        let ts_ms = timestamp(object)?;
        let attributes = match object.get(FIELD) {
            None | Some(Value::Null) => {
                return Err(reject(
                    Reason::MissingField(FIELD),
                    "attributes is required",
                ))
            }
            Some(Value::Object(map)) => map,
            Some(other) => {
                return Err(reject(
                    Reason::WrongFieldType(FIELD),
                    format!("attributes must be an object, got {}", kind_name(other)),
                ))
            }
        };
        count_within(
            attributes.len(),
            FIELD,
            "attributes",
            self.config.max_attributes,
        )?;
        let mut pairs = Vec::with_capacity(attributes.len());
        for (key, value) in attributes {
            pairs.push((self.attribute_key(key)?, self.attribute_value(key, value)?));
        }
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Ok(ProfileUpdate {
            user_id,
            ts_ms,
            attributes: pairs,
        })
    }

    fn attribute_key(&self, key: &str) -> Result<String, Rejection> {
        attribute_within(key, FIELD, "an attribute name", self.config.max_id_len)
    }

    /// Strings, numbers and booleans are kept as text; null removes the attribute.
    fn attribute_value(&self, key: &str, value: &Value) -> Result<Option<String>, Rejection> {
        let text = match value {
            Value::Null => return Ok(None),
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(reject(
                    Reason::WrongFieldType(FIELD),
                    format!(
                        "attribute {key:?} must be a string, number, boolean or null, got {}",
                        kind_name(other)
                    ),
                ))
            }
        };
        let chars = text.chars().count();
        if chars > self.config.max_attribute_len {
            return Err(reject(
                Reason::AttributeTooLong(FIELD),
                format!(
                    "attribute {key:?} has {chars} characters, limit {}",
                    self.config.max_attribute_len
                ),
            ));
        }
        Ok(Some(text))
    }
}
