//! Seeded randomness and stable hashing: the engine must give the same state for the same events,
//! seed and config on every machine, so nothing here depends on process-random state.

use xxhash_rust::xxh3::{xxh3_128, xxh3_64_with_seed, Xxh3};

/// SplitMix64: tiny, fast, and good enough for negative sampling and initialisation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0), by multiply-shift.
    pub fn below(&mut self, bound: usize) -> usize {
        (((self.next_u64() >> 32) * bound as u64) >> 32) as usize
    }

    /// Uniform in `[-0.5, 0.5)`.
    pub fn centered_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// A stable 64-bit hash of a string under a seed.
pub fn hash64(text: &str, seed: u64) -> u64 {
    xxh3_64_with_seed(text.as_bytes(), seed)
}

/// A stable 128-bit hash of byte parts, each length-prefixed so ("ab","c") differs from ("a","bc").
pub fn hash128(parts: &[&[u8]]) -> u128 {
    // The digest is that of the concatenation. It runs once per event (the dedup key): a key
    // that fits xxh3's short-input paths is written to the stack and hashed in one call,
    // rather than through the streaming hasher, whose state (its secret and buffer, ~600
    // bytes) is set up on each call; a longer one is streamed.
    let written: usize = parts.iter().map(|part| LENGTH_BYTES + part.len()).sum();
    if written <= SHORT_INPUT {
        return hash128_short(parts, written);
    }
    let mut hasher = Xxh3::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hasher.digest128()
}

/// Each part's length prefix.
const LENGTH_BYTES: usize = 8;

/// The most bytes xxh3 hashes by its short-input paths.
const SHORT_INPUT: usize = 240;

fn hash128_short(parts: &[&[u8]], written: usize) -> u128 {
    let mut buffer = [0u8; SHORT_INPUT];
    let mut at = 0;
    for part in parts {
        buffer[at..at + LENGTH_BYTES].copy_from_slice(&(part.len() as u64).to_le_bytes());
        at += LENGTH_BYTES;
        buffer[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    xxh3_128(&buffer[..written])
}

#[cfg(test)]
mod tests {
    use xxhash_rust::xxh3::xxh3_128_with_seed;

    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let mut c = SplitMix64::new(8);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..5).map(|_| c.next_u64()).collect::<Vec<_>>());
    }

    #[test]
    fn below_stays_in_range_and_centered_unit_is_centered() {
        let mut rng = SplitMix64::new(1);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            assert!(rng.below(7) < 7);
            let x = rng.centered_unit();
            assert!((-0.5..0.5).contains(&x));
            sum += x;
        }
        assert!((sum / 10_000.0f32).abs() < 0.02);
    }

    #[test]
    fn hash128_separates_part_boundaries() {
        assert_ne!(hash128(&[b"ab", b"c"]), hash128(&[b"a", b"bc"]));
        assert_eq!(hash128(&[b"ab", b"c"]), hash128(&[b"ab", b"c"]));
        // Keys are stored (dedup windows, record names): the value is the hash of each part
        // after its length, short or long.
        let long = vec![7u8; 300];
        let at_the_bound = vec![7u8; SHORT_INPUT - 2 * LENGTH_BYTES - 1];
        let past_the_bound = vec![7u8; SHORT_INPUT - 2 * LENGTH_BYTES];
        for parts in [
            &[&b"id"[..], b"e1"][..],
            &[&b"x"[..], &long],
            &[&b"x"[..], &at_the_bound],
            &[&b"xy"[..], &at_the_bound],
            &[&b"x"[..], &past_the_bound],
        ] {
            let mut written = Vec::new();
            for part in parts {
                written.extend_from_slice(&(part.len() as u64).to_le_bytes());
                written.extend_from_slice(part);
            }
            assert_eq!(hash128(parts), xxh3_128_with_seed(&written, 0));
        }
    }
}
