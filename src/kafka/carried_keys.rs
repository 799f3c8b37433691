//! The dedup keys a partition carries to its next owner: changelog records of kind `dedup`,
//! each written after the partition's position record by the same checkpoint, holding that
//! position and the keys the partition took since its previous such record. They take a
//! partition's slots in turn (`\xffdedup/<input topic>/<slot>`), so compaction keeps the
//! records of its last checkpoints, and each costs what arrived since the last, not the
//! window's size. A new owner takes the keys of every record cut at or before the position
//! it restores (their events are in the state it restores; a record cut later is not), so it
//! drops the duplicates the previous owner would have.
//!
//! Binary, as the keys are hashes: a format byte, the next input offset (i64), the key count
//! (u32), then per key its 16 bytes and its event time (i64), all little-endian.

use crate::config::MAX_CHANGELOG_DEDUP_KEYS as MAX_KEYS;
use crate::dedup::CarriedKey;

/// The record kind, in the changelog's kind header.
pub const KIND: &str = "dedup";
/// Keys start with a byte no UTF-8 user id holds, and differ from position keys, so
/// compaction keeps the latest of each per input topic and slot.
const KEY_PREFIX: &[u8] = b"\xffdedup/";

/// The key of `input_topic`'s record in `slot`. No topic name holds a `/`.
pub fn record_key(input_topic: &str, slot: u32) -> Vec<u8> {
    [
        KEY_PREFIX,
        input_topic.as_bytes(),
        format!("/{slot}").as_bytes(),
    ]
    .concat()
}

/// The input topic and slot a record's key names; no slot for the one record per topic that
/// builds before slots wrote (still read: its keys are as good).
pub fn parse_key(key: &[u8]) -> (String, Option<u32>) {
    let named = String::from_utf8_lossy(key.strip_prefix(KEY_PREFIX).unwrap_or(key));
    match named.rsplit_once('/') {
        Some((topic, slot)) => match slot.parse() {
            Ok(slot) => (topic.to_owned(), Some(slot)),
            Err(_) => (named.into_owned(), None),
        },
        None => (named.into_owned(), None),
    }
}

const FORMAT: u8 = 1;
const HEADER_BYTES: usize = 1 + 8 + 4;
const KEY_BYTES: usize = 16 + 8;

/// A partition's latest dedup keys, oldest first, and the input position they were cut at.
#[derive(Clone, Debug, PartialEq)]
pub struct CarriedKeys {
    pub next_offset: i64,
    pub keys: Vec<CarriedKey>,
}

/// Why a `dedup` record cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum BadCarriedKeys {
    #[error("format {0}; this build reads format {FORMAT}")]
    Format(u8),
    #[error("{bytes} bytes, which is not a header and whole keys")]
    Length { bytes: usize },
    #[error("{0} keys, more than {MAX_KEYS}")]
    TooMany(usize),
}

impl CarriedKeys {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_BYTES + self.keys.len() * KEY_BYTES);
        bytes.push(FORMAT);
        bytes.extend_from_slice(&self.next_offset.to_le_bytes());
        bytes.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for key in &self.keys {
            bytes.extend_from_slice(&key.key.to_le_bytes());
            bytes.extend_from_slice(&key.ts_ms.to_le_bytes());
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<CarriedKeys, BadCarriedKeys> {
        let bad_length = BadCarriedKeys::Length { bytes: bytes.len() };
        let (&format, rest) = bytes.split_first().ok_or(bad_length)?;
        if format != FORMAT {
            return Err(BadCarriedKeys::Format(format));
        }
        let (header, body) = rest.split_at_checked(HEADER_BYTES - 1).ok_or(bad_length)?;
        let next_offset = i64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        if count > MAX_KEYS {
            return Err(BadCarriedKeys::TooMany(count));
        }
        if body.len() != count * KEY_BYTES {
            return Err(bad_length);
        }
        let keys = body.chunks_exact(KEY_BYTES).map(|chunk| CarriedKey {
            key: u128::from_le_bytes(chunk[..16].try_into().expect("16 bytes")),
            ts_ms: i64::from_le_bytes(chunk[16..].try_into().expect("8 bytes")),
        });
        Ok(CarriedKeys {
            next_offset,
            keys: keys.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carried(count: usize) -> CarriedKeys {
        let keys = (0..count).map(|n| CarriedKey {
            key: u128::MAX - n as u128,
            ts_ms: -(n as i64),
        });
        CarriedKeys {
            next_offset: 1 << 40,
            keys: keys.collect(),
        }
    }

    #[test]
    fn a_record_key_names_its_topic_and_slot() {
        let key = record_key("shop.events-v2", 17);
        assert_eq!(parse_key(&key), ("shop.events-v2".into(), Some(17)));
        assert!(
            std::str::from_utf8(&key).is_err(),
            "no user id can equal it"
        );
        assert_eq!(
            parse_key(b"\xffdedup/events"),
            ("events".into(), None),
            "before slots"
        );
    }

    #[test]
    fn keys_come_back_as_written() {
        for count in [0, 1, 3] {
            let record = carried(count);
            assert_eq!(CarriedKeys::decode(&record.encode()), Ok(record));
        }
    }

    /// librdkafka's `message.max.bytes` and a broker's `max.message.bytes` default to about
    /// 1 MB; the key, headers and batch framing take well under 1 KB more.
    #[test]
    fn the_largest_record_fits_a_default_kafka_message() {
        let largest = carried(MAX_KEYS).encode().len();
        assert!(largest + 1024 <= 1_000_000, "{largest} bytes");
        assert!(CarriedKeys::decode(&carried(MAX_KEYS).encode()).is_ok());
    }

    #[test]
    fn a_record_that_does_not_fit_its_rules_is_refused_naming_the_rule() {
        let bytes = carried(2).encode();
        let cut = &bytes[..bytes.len() - 1];
        assert_eq!(
            CarriedKeys::decode(cut),
            Err(BadCarriedKeys::Length { bytes: cut.len() })
        );
        assert_eq!(
            CarriedKeys::decode(&[]),
            Err(BadCarriedKeys::Length { bytes: 0 })
        );
        let mut later = bytes.clone();
        later[0] = 2;
        assert_eq!(CarriedKeys::decode(&later), Err(BadCarriedKeys::Format(2)));
        let mut claims_more = bytes;
        claims_more[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            CarriedKeys::decode(&claims_more),
            Err(BadCarriedKeys::TooMany(u32::MAX as usize))
        );
    }
}
