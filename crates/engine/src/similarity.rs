//! Item-item similarity from (weighted) co-occurrence counts.

/// Cosine of two items' interaction vectors from the pair count and the marginals.
pub fn cosine(pair: f32, count_a: f32, count_b: f32) -> f32 {
    let denominator = (count_a * count_b).sqrt();
    if denominator > 0.0 {
        pair / denominator
    } else {
        0.0
    }
}

fn x_log_x(x: f64) -> f64 {
    if x > 0.0 {
        x * x.ln()
    } else {
        0.0
    }
}

fn entropy(parts: &[f64]) -> f64 {
    let sum: f64 = parts.iter().sum();
    x_log_x(sum) - parts.iter().map(|&p| x_log_x(p)).sum::<f64>()
}

/// Dunning's log-likelihood ratio for the 2x2 table of A and B occurring together or apart.
/// `total` is the number of observations; inconsistent inputs are clamped to a valid table.
pub fn llr(pair: f32, count_a: f32, count_b: f32, total: f32) -> f32 {
    let k11 = pair.max(0.0) as f64;
    let k12 = (count_a as f64 - k11).max(0.0);
    let k21 = (count_b as f64 - k11).max(0.0);
    let k22 = (total as f64 - k11 - k12 - k21).max(0.0);
    let row = entropy(&[k11 + k12, k21 + k22]);
    let column = entropy(&[k11 + k21, k12 + k22]);
    let matrix = entropy(&[k11, k12, k21, k22]);
    (2.0 * (row + column - matrix)).max(0.0) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_identical_and_disjoint() {
        assert!((cosine(4.0, 4.0, 4.0) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(0.0, 4.0, 9.0), 0.0);
        assert_eq!(cosine(1.0, 0.0, 9.0), 0.0);
    }

    #[test]
    fn llr_matches_mahout_reference_values() {
        // Values from Mahout's LogLikelihoodTest (k11, k12, k21, k22).
        let from_table = |k11: f32, k12: f32, k21: f32, k22: f32| {
            llr(k11, k11 + k12, k11 + k21, k11 + k12 + k21 + k22)
        };
        assert!((from_table(1.0, 0.0, 0.0, 1.0) - 2.772_588_7).abs() < 1e-4);
        assert!((from_table(10.0, 0.0, 0.0, 10.0) - 27.725_887).abs() < 1e-3);
        assert!((from_table(5.0, 1995.0, 0.0, 100_000.0) - 39.33).abs() < 0.01);
        assert!(from_table(1000.0, 1000.0, 1000.0, 1000.0).abs() < 1e-3);
    }

    #[test]
    fn llr_grows_with_evidence() {
        assert!(llr(10.0, 20.0, 20.0, 1000.0) > llr(2.0, 20.0, 20.0, 1000.0));
    }
}
