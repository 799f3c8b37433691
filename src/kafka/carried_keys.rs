//! The dedup keys a partition carries to its next owner: a changelog record of kind `dedup`,
//! written after the partition's position record by the same checkpoint, holding that position
//! and the partition's latest keys. A new owner takes the keys only when the position matches
//! the one it restores (a crash between the two records leaves an older one, which is not
//! used), so it drops the duplicates the previous owner would have.
//!
//! Binary, as the keys are hashes: a format byte, the next input offset (i64), the key count
//! (u32), then per key its 16 bytes and its event time (i64), all little-endian.

use crate::config::MAX_CHANGELOG_DEDUP_KEYS as MAX_KEYS;
use crate::dedup::CarriedKey;

/// The record kind, in the changelog's kind header.
pub const KIND: &str = "dedup";
/// Keys start with a byte no UTF-8 user id holds, and differ from position keys, so
/// compaction keeps the latest of each per input topic.
pub const KEY_PREFIX: &[u8] = b"\xffdedup/";

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
