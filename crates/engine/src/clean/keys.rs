//! The id a message key holds, as a shop's client serialized it: plain text (a string
//! serializer), JSON (Kafka Connect's JsonConverter writes `"u42"`, or `{"schema":…,
//! "payload":"u42"}` with schemas on; Debezium a one-field object `{"id":42}`), either behind a
//! Schema Registry header, or a big-endian integer (Java's Long and Integer serializers).

use std::borrow::Cow;

use serde_json::Value;

use super::framing;

/// Keys longer than this are not decoded: no id serializer writes one.
const DECODED_KEY_BYTES: usize = 1024;

/// The id a key holds: the key as text unless it is one of the encodings above.
pub fn key_id(key: &[u8]) -> Cow<'_, str> {
    match decoded(key) {
        Some(id) => Cow::Owned(id),
        None => String::from_utf8_lossy(key),
    }
}

/// Whether `key` names `id`: the same bytes, or `id` in one of the encodings above.
pub fn key_names(key: &[u8], id: &str) -> bool {
    key == id.as_bytes() || decoded(key).is_some_and(|k| k == id) || binary_integer(key, id)
}

/// The id of a JSON key (behind a Schema Registry header or not), if the key is one.
fn decoded(key: &[u8]) -> Option<String> {
    if key.len() > DECODED_KEY_BYTES {
        return None;
    }
    let json = framing::json_of(key);
    let first = json.iter().find(|b| !b.is_ascii_whitespace())?;
    if !matches!(first, b'"' | b'{') {
        return None;
    }
    id_of(serde_json::from_slice(json).ok()?)
}

fn id_of(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => super::integral(&n).map(|i| i.to_string()),
        Value::Object(mut object) => {
            // Connect's envelope: {"schema": …, "payload": …}.
            if object.keys().all(|k| k == "schema" || k == "payload") {
                return id_of(object.remove("payload")?);
            }
            let mut fields = object.into_iter();
            match (fields.next(), fields.next()) {
                (Some((_, only)), None) => id_of(only),
                _ => None,
            }
        }
        _ => None,
    }
}

/// An 8- or 4-byte big-endian integer equal to `id`.
fn binary_integer(key: &[u8], id: &str) -> bool {
    let Ok(number) = id.parse::<i64>() else {
        return false;
    };
    match key.len() {
        8 => key == number.to_be_bytes(),
        4 => i32::try_from(number).is_ok_and(|n| key == n.to_be_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_id_however_the_shops_client_serialized_it() {
        let keys: [&[u8]; 9] = [
            b"u42",
            br#"{"payload":"u42"}"#,
            br#""u42""#,
            br#" "u42" "#,
            br#"{"schema":{"type":"string","optional":false},"payload":"u42"}"#,
            br#"{"user_id":"u42"}"#,
            br#"{"schema":{"type":"struct"},"payload":{"user_id":"u42"}}"#,
            b"\x00\x00\x00\x00\x07\"u42\"",
            br#"{"id":"u42"}"#,
        ];
        for key in keys {
            assert!(key_names(key, "u42"), "{}", String::from_utf8_lossy(key));
            assert_eq!(key_id(key), "u42", "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn numeric_ids_match_their_json_and_binary_integers() {
        for key in [&b"12345"[..], br#"{"id":12345}"#, br#"{"id":12345.0}"#] {
            assert!(key_names(key, "12345"), "{}", String::from_utf8_lossy(key));
        }
        assert!(key_names(&12345i64.to_be_bytes(), "12345"));
        assert!(key_names(&12345i32.to_be_bytes(), "12345"));
        assert!(!key_names(&12346i64.to_be_bytes(), "12345"));
    }

    #[test]
    fn other_keys_name_other_ids() {
        let keys: [&[u8]; 6] = [
            b"u43",
            br#""u43""#,
            br#"{"a":"u42","b":"u42"}"#,
            br#"["u42"]"#,
            b"",
            b"\xff\xfe",
        ];
        for key in keys {
            assert!(!key_names(key, "u42"), "{}", String::from_utf8_lossy(key));
        }
        assert_eq!(
            key_id(br#"["u42"]"#),
            r#"["u42"]"#,
            "not an id encoding: as it is"
        );
        let long = format!(r#""{}""#, "x".repeat(DECODED_KEY_BYTES));
        assert!(!key_names(long.as_bytes(), &"x".repeat(DECODED_KEY_BYTES)));
    }
}
