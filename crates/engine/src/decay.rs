//! Exponential time decay in event time.

/// `2^(-age / half_life)`; ages below zero (out-of-order events) count as zero.
pub fn decay_factor(age_ms: i64, half_life_ms: i64) -> f32 {
    let age = age_ms.max(0) as f64;
    (-(age / half_life_ms as f64)).exp2() as f32
}

/// A value that halves every half-life: stored with the event time it is valid at.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decayed {
    pub value: f32,
    pub at_ms: i64,
}

impl Decayed {
    /// Adds `amount` observed at `ts_ms`; an older observation is decayed to the stored time.
    pub fn add(&mut self, amount: f32, ts_ms: i64, half_life_ms: i64) {
        if self.value == 0.0 || ts_ms >= self.at_ms {
            self.value = self.value_at(ts_ms, half_life_ms) + amount;
            self.at_ms = ts_ms.max(self.at_ms);
        } else {
            self.value += amount * decay_factor(self.at_ms.saturating_sub(ts_ms), half_life_ms);
        }
    }

    /// The value at `ts_ms`; times are saturated, so an engine with no time yet
    /// (`i64::MIN`) reads stored values as they are rather than overflowing.
    pub fn value_at(&self, ts_ms: i64, half_life_ms: i64) -> f32 {
        self.value * decay_factor(ts_ms.saturating_sub(self.at_ms), half_life_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_every_half_life() {
        assert!((decay_factor(100, 100) - 0.5).abs() < 1e-6);
        assert!((decay_factor(200, 100) - 0.25).abs() < 1e-6);
        assert_eq!(decay_factor(-50, 100), 1.0);
        let stored = Decayed {
            value: 2.0,
            at_ms: 1_700_000_000_000,
        };
        assert_eq!(
            stored.value_at(i64::MIN, 100),
            2.0,
            "no time yet: no overflow"
        );
    }

    #[test]
    fn late_observations_are_decayed_not_refreshed() {
        let mut d = Decayed::default();
        d.add(1.0, 1000, 100);
        d.add(1.0, 900, 100);
        assert_eq!(d.at_ms, 1000);
        assert!((d.value - 1.5).abs() < 1e-6);
        assert!((d.value_at(1100, 100) - 0.75).abs() < 1e-6);
    }
}
