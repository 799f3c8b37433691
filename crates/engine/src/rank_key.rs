//! Ranked entries as 8-byte integers: sorting and selecting them compares integers, not floats
//! and then items.

/// Best first as ascending integers: the highest score (in `f32::total_cmp`'s order), then the
/// lowest item. A score's bits, negatives all flipped and positives with the sign bit set, order
/// as `total_cmp` orders the floats; inverted, the highest comes first.
#[inline]
pub(crate) fn rank_key(score: f32, item: u32) -> u64 {
    let bits = score.to_bits();
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    (u64::from(!ascending) << 32) | u64::from(item)
}

/// The score `rank_key` was given, bit for bit.
#[inline]
pub(crate) fn score_of_key(key: u64) -> f32 {
    let ascending = !((key >> 32) as u32);
    let bits = if ascending >> 31 == 1 {
        ascending & !(1 << 31)
    } else {
        !ascending
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{rank_key, score_of_key};

    /// The order ranking promises: the highest score by `total_cmp`, then the lowest item.
    fn best_first(a: (f32, u32), b: (f32, u32)) -> std::cmp::Ordering {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
    }

    fn score() -> impl Strategy<Value = f32> {
        prop_oneof![
            any::<f32>(),
            Just(0.0),
            Just(-0.0),
            Just(f32::INFINITY),
            Just(f32::NEG_INFINITY),
            Just(f32::NAN),
            Just(-f32::NAN),
            Just(f32::MIN_POSITIVE),
            (0u32..4).prop_map(|i| i as f32 * 0.5),
        ]
    }

    proptest! {
        #[test]
        fn rank_keys_order_as_scores_then_items_do(
            a in (score(), 0u32..4), b in (score(), 0u32..4)
        ) {
            let keys = rank_key(a.0, a.1).cmp(&rank_key(b.0, b.1));
            prop_assert_eq!(keys, best_first(a, b), "{:?} vs {:?}", a, b);
        }

        #[test]
        fn a_rank_key_gives_its_score_back_bit_for_bit(s in score(), item in any::<u32>()) {
            let key = rank_key(s, item);
            prop_assert_eq!(score_of_key(key).to_bits(), s.to_bits());
            prop_assert_eq!(key as u32, item);
        }
    }
}
