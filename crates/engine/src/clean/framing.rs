//! The JSON inside a message, as producers frame it. Confluent's Schema Registry serializers
//! put a zero byte and a 4-byte schema id before it; some text writers start with a UTF-8 byte
//! order mark. Neither can begin JSON, so unframing never changes a plain JSON payload.

/// Confluent's wire format: magic byte 0, then the schema id (4 bytes, big-endian).
const CONFLUENT_MAGIC: u8 = 0;
const CONFLUENT_HEADER_BYTES: usize = 5;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The payload without its framing, if it has one. The schema id is not checked: the rules
/// that follow check the JSON itself.
pub(super) fn json_of(payload: &[u8]) -> &[u8] {
    if schema_id(payload).is_some() {
        return &payload[CONFLUENT_HEADER_BYTES..];
    }
    payload.strip_prefix(UTF8_BOM).unwrap_or(payload)
}

/// For an error's detail: the Schema Registry header the payload had, naming its schema id
/// (JSON is read after it; Avro or Protobuf behind one is not JSON).
pub(super) fn header_of(payload: &[u8]) -> Option<String> {
    schema_id(payload).map(|id| format!("after a Schema Registry header (schema id {id})"))
}

/// `json` in Confluent's wire format under `schema_id`, as its JSON Schema serializer writes
/// it: for consumers whose deserializer expects the header.
pub fn schema_registry_framed(schema_id: u32, json: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(CONFLUENT_HEADER_BYTES + json.len());
    framed.push(CONFLUENT_MAGIC);
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(json);
    framed
}

/// The schema id of a payload in Confluent's wire format.
fn schema_id(payload: &[u8]) -> Option<u32> {
    let (&magic, rest) = payload.split_first()?;
    let id = rest.first_chunk::<4>()?;
    (magic == CONFLUENT_MAGIC).then(|| u32::from_be_bytes(*id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_we_frame_unframes_to_its_json_and_names_its_id() {
        let json = br#"{"a":1}"#;
        let framed = schema_registry_framed(0x0102_0304, json);
        assert_eq!(&framed[..5], b"\x00\x01\x02\x03\x04");
        assert_eq!(json_of(&framed), json);
        assert_eq!(schema_id(&framed), Some(0x0102_0304));
    }

    #[test]
    fn plain_json_is_left_as_it_is() {
        assert_eq!(json_of(b"{\"a\":1}"), b"{\"a\":1}");
        assert_eq!(json_of(b" {}"), b" {}");
        assert_eq!(json_of(b""), b"");
    }

    #[test]
    fn a_schema_registry_header_or_a_byte_order_mark_is_removed() {
        assert_eq!(json_of(b"\x00\x00\x00\x01\x2a{\"a\":1}"), b"{\"a\":1}");
        assert_eq!(json_of(b"\xEF\xBB\xBF{\"a\":1}"), b"{\"a\":1}");
    }

    #[test]
    fn a_header_is_named_with_its_schema_id() {
        let named = header_of(b"\x00\x00\x00\x01\x2a\x02avro");
        assert_eq!(
            named.as_deref(),
            Some("after a Schema Registry header (schema id 298)")
        );
        assert_eq!(header_of(b"{\"a\":1}"), None);
    }

    #[test]
    fn a_zero_byte_too_short_for_a_header_stays() {
        assert_eq!(json_of(b"\x00\x01"), b"\x00\x01");
    }
}
