//! A/B experiments on ranking: `[[engine.experiments]]` names variants, each with a traffic
//! share and the ranking settings it overrides. A user's variant is a stable hash of
//! (experiment, user) walked through the cumulative shares, so it never flips — across
//! restarts, instances and replays — and experiments are independent of each other and of
//! the user's partition. Variants of different experiments may not override the same setting,
//! so a user in several experiments gets every override and each effect stays attributable.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub use crate::config::experiments::{BlendOverride, Experiment, Variant};
use crate::config::RankingConfig;
use crate::ranking::Filters;

/// How a user is ranked: the base ranking with their variants' overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct Treatment {
    pub ranking: RankingConfig,
    /// Set when a variant decides whether the user's own recent items may be recommended.
    pub exclude_seen: Option<bool>,
}

impl Treatment {
    /// The base ranking, no variant.
    pub fn base(ranking: &RankingConfig) -> Treatment {
        Treatment {
            ranking: ranking.clone(),
            exclude_seen: None,
        }
    }

    /// `filters` with the treatment's word on the user's own recent items.
    pub fn filters<'a>(&self, filters: &Filters<'a>) -> Filters<'a> {
        Filters {
            exclude_seen: self.exclude_seen.unwrap_or(filters.exclude_seen),
            ..*filters
        }
    }
}

impl Variant {
    /// Applies this variant's overrides to `treatment`.
    pub fn apply(&self, treatment: &mut Treatment) {
        treatment.ranking = self.ranking_over(&treatment.ranking);
        treatment.exclude_seen = self.exclude_seen.or(treatment.exclude_seen);
    }
}

impl Experiment {
    /// The index of `user_id`'s variant.
    pub fn variant_of(&self, user_id: &str) -> usize {
        let point = bucket(&self.name, user_id);
        let mut upper = 0.0;
        for (index, variant) in self.variants.iter().enumerate() {
            upper += variant.share;
            if point < upper {
                return index;
            }
        }
        // Shares summing to a hair under 1 leave the last sliver to the last variant.
        self.variants.len() - 1
    }
}

/// A point in [0, 1) for (experiment, user): xxh3 of the user id seeded by the experiment's
/// name, its top 53 bits as a fraction.
fn bucket(experiment: &str, user_id: &str) -> f64 {
    let seed = xxh3_64(experiment.as_bytes());
    let hash = xxh3_64_with_seed(user_id.as_bytes(), seed);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Each experiment `user_id` is in, with their variant's index.
pub fn assignments<'a>(
    experiments: &'a [Experiment],
    user_id: &'a str,
) -> impl Iterator<Item = (&'a Experiment, usize)> + 'a {
    experiments.iter().map(move |e| (e, e.variant_of(user_id)))
}

/// The index of every (experiment, variant) pair `user_id` is in, counting variants in config
/// order across experiments (the order of `arms`).
pub fn arm_indices<'a>(
    experiments: &'a [Experiment],
    user_id: &'a str,
) -> impl Iterator<Item = usize> + 'a {
    let mut first = 0;
    experiments.iter().map(move |e| {
        let arm = first + e.variant_of(user_id);
        first += e.variants.len();
        arm
    })
}

/// Every (experiment, variant) name pair, in config order.
pub fn arms(experiments: &[Experiment]) -> Vec<(String, String)> {
    let pairs = experiments
        .iter()
        .flat_map(|e| (e.variants.iter()).map(|v| (e.name.clone(), v.name.clone())));
    pairs.collect()
}

/// How `user_id` is ranked under `base`.
pub fn treatment(experiments: &[Experiment], base: &RankingConfig, user_id: &str) -> Treatment {
    let mut treatment = Treatment::base(base);
    for (experiment, variant) in assignments(experiments, user_id) {
        experiment.variants[variant].apply(&mut treatment);
    }
    treatment
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(name: &str, shares: &[f64]) -> Experiment {
        Experiment::with_shares(name, shares)
    }

    #[test]
    fn users_split_by_share_and_keep_their_variant() {
        let split = experiment("split", &[0.2, 0.8]);
        let users: Vec<String> = (0..20_000).map(|u| format!("user-{u}")).collect();
        let first = users.iter().filter(|u| split.variant_of(u) == 0).count();
        assert!((3_700..4_300).contains(&first), "about 20 %: {first}");
        let again = split.clone();
        assert!(users
            .iter()
            .all(|u| split.variant_of(u) == again.variant_of(u)));
    }

    #[test]
    fn experiments_assign_independently() {
        let (a, b) = (experiment("a", &[0.5, 0.5]), experiment("b", &[0.5, 0.5]));
        let users: Vec<String> = (0..20_000).map(|u| format!("user-{u}")).collect();
        let both_first = (users.iter())
            .filter(|u| a.variant_of(u) == 0 && b.variant_of(u) == 0)
            .count();
        assert!(
            (4_600..5_400).contains(&both_first),
            "about 25 %: {both_first}"
        );
    }

    #[test]
    fn a_variant_overrides_only_what_it_names() {
        let mut tuned = Variant::new("b", 0.5);
        tuned.blend.mf = Some(0.0);
        tuned.seed_items = Some(3);
        tuned.exclude_seen = Some(true);
        let split = Experiment {
            name: "mf".into(),
            variants: vec![Variant::new("a", 0.5), tuned],
        };
        let base = RankingConfig::default();
        let users = (0..100).map(|u| format!("u{u}"));
        let treated = users
            .map(|u| treatment(std::slice::from_ref(&split), &base, &u))
            .find(|t| t.exclude_seen.is_some())
            .expect("someone is in b");
        let mut expected = base.clone();
        expected.blend.mf = 0.0;
        expected.seed_items = 3;
        assert_eq!(treated.ranking, expected);
        assert_eq!(treated.exclude_seen, Some(true));
    }

    #[test]
    fn arm_indices_count_variants_across_experiments() {
        let list = [
            experiment("a", &[0.5, 0.5]),
            experiment("b", &[0.3, 0.3, 0.4]),
        ];
        let arms = arms(&list);
        assert_eq!(arms.len(), 5);
        for user in ["x", "y", "z"] {
            let indices: Vec<usize> = arm_indices(&list, user).collect();
            assert_eq!(arms[indices[0]].0, "a");
            assert_eq!(arms[indices[1]].0, "b");
            assert_eq!(arms[indices[1]].1, format!("v{}", list[1].variant_of(user)));
        }
    }
}
