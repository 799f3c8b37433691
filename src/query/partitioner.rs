//! The partition a producer gives a keyed message, as librdkafka's and Java's partitioners
//! compute it: the query API finds the worker (and later the instance) that owns a user this
//! way. `*_random` differ from their plain names only for messages without a key.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioner {
    /// CRC-32 of the key (librdkafka's `consistent` and its default, `consistent_random`).
    Crc32,
    /// Kafka's murmur2 of the key, sign bit cleared (Java clients' default; librdkafka's
    /// `murmur2` and `murmur2_random`).
    Murmur2,
}

impl Partitioner {
    pub const NAMES: [&'static str; 4] = [
        "consistent_random",
        "consistent",
        "murmur2_random",
        "murmur2",
    ];

    /// The partitioner librdkafka's `partitioner` setting names.
    pub fn named(name: &str) -> Option<Partitioner> {
        match name {
            "consistent_random" | "consistent" => Some(Partitioner::Crc32),
            "murmur2_random" | "murmur2" => Some(Partitioner::Murmur2),
            _ => None,
        }
    }

    /// The partition of a message keyed `key` in a topic of `partitions` (at least 1).
    pub fn partition(self, key: &[u8], partitions: i32) -> i32 {
        let count = partitions.max(1) as u32;
        let hash = match self {
            Partitioner::Crc32 => crc32fast::hash(key),
            Partitioner::Murmur2 => murmur2(key) & 0x7fff_ffff,
        };
        (hash % count) as i32
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("four bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&first) = rest.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2 (Java ints).
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn crc32_is_the_ieee_checksum() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            Partitioner::Crc32.partition(b"123456789", 7),
            (0xcbf4_3926u32 % 7) as i32
        );
    }

    #[test]
    fn names_are_librdkafkas() {
        for name in Partitioner::NAMES {
            assert!(Partitioner::named(name).is_some(), "{name}");
        }
        assert_eq!(Partitioner::named("random"), None);
        assert_eq!(Partitioner::named("fnv1a"), None);
    }
}
