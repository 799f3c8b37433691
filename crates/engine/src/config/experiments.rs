//! `[[engine.experiments]]`: A/B experiments on the ranking as configured — each a name and
//! variants, each variant a traffic share and the ranking settings it overrides — and the
//! rules they must follow. How users are assigned and ranked: the top-level experiments module.

use serde::{Deserialize, Serialize};

use super::{invalid, Blend, InvalidSetting, RankingConfig};

/// At most this many experiments and variants per experiment: each variant has its own online
/// counters and metric series.
pub const MAX_EXPERIMENTS: usize = 16;
pub const MAX_VARIANTS: usize = 16;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub variants: Vec<Variant>,
}

/// One arm: its share of users and what it changes; a setting left out keeps the base
/// configuration's value (`engine.ranking`, `pipeline.exclude_seen`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    /// Fraction of users, in (0, 1]; an experiment's shares sum to 1.
    pub share: f64,
    #[serde(default, skip_serializing_if = "BlendOverride::is_empty")]
    pub blend: BlendOverride,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_items: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_decay: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_decay: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mf_rescore: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repurchase_weight: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_seen: Option<bool>,
}

/// Blend weights a variant sets; 0 turns a source off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlendOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooc: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mf: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popular: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<f32>,
}

impl BlendOverride {
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, value)| value.is_none())
    }

    fn fields(&self) -> [(&'static str, Option<f32>); 7] {
        [
            ("blend.history", self.history),
            ("blend.cooc", self.cooc),
            ("blend.cross", self.cross),
            ("blend.mf", self.mf),
            ("blend.popular", self.popular),
            ("blend.content", self.content),
            ("blend.segment", self.segment),
        ]
    }

    /// Every weight of `blend`: a variant that ranks with that blend whatever the base.
    pub fn all(blend: &Blend) -> BlendOverride {
        BlendOverride {
            history: Some(blend.history),
            cooc: Some(blend.cooc),
            cross: Some(blend.cross),
            mf: Some(blend.mf),
            popular: Some(blend.popular),
            content: Some(blend.content),
            segment: Some(blend.segment),
        }
    }

    fn apply(&self, blend: &mut Blend) {
        for (weight, (_, set)) in blend.weights_mut().into_iter().zip(self.fields()) {
            *weight = set.unwrap_or(*weight);
        }
    }
}

impl Variant {
    /// A variant with `share` of the users and no overrides yet.
    pub fn new(name: &str, share: f64) -> Variant {
        Variant {
            name: name.into(),
            share,
            ..Variant::default()
        }
    }

    /// The settings this variant overrides, by name.
    pub fn overrides(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = (self.blend.fields().into_iter())
            .filter_map(|(key, value)| value.map(|_| key))
            .collect();
        for (key, set) in [
            ("seed_items", self.seed_items.is_some()),
            ("seed_decay", self.seed_decay.is_some()),
            ("history_decay", self.history_decay.is_some()),
            ("mf_rescore", self.mf_rescore.is_some()),
            ("repurchase_weight", self.repurchase_weight.is_some()),
            ("exclude_seen", self.exclude_seen.is_some()),
        ] {
            if set {
                keys.push(key);
            }
        }
        keys
    }

    /// `base` with this variant's ranking overrides.
    pub fn ranking_over(&self, base: &RankingConfig) -> RankingConfig {
        let mut ranking = base.clone();
        self.blend.apply(&mut ranking.blend);
        ranking.seed_items = self.seed_items.unwrap_or(ranking.seed_items);
        ranking.seed_decay = self.seed_decay.unwrap_or(ranking.seed_decay);
        ranking.history_decay = self.history_decay.unwrap_or(ranking.history_decay);
        ranking.mf_rescore = self.mf_rescore.unwrap_or(ranking.mf_rescore);
        let repurchase = self.repurchase_weight;
        ranking.repurchase_weight = repurchase.unwrap_or(ranking.repurchase_weight);
        ranking
    }
}

const KEY: &str = "engine.experiments";

/// Checks names, shares, limits and overlaps; each variant's ranking is held to the base
/// ranking's own rules.
pub fn validate(experiments: &[Experiment], base: &RankingConfig) -> Result<(), InvalidSetting> {
    if experiments.len() > MAX_EXPERIMENTS {
        return Err(invalid(
            KEY,
            &format!("at most {MAX_EXPERIMENTS} experiments"),
        ));
    }
    let mut owner_of: Vec<(&str, &str)> = Vec::new();
    for (index, experiment) in experiments.iter().enumerate() {
        let name = &experiment.name;
        if name.is_empty() {
            return Err(invalid(KEY, &format!("experiment {index} has no name")));
        }
        if experiments[..index].iter().any(|e| &e.name == name) {
            return Err(invalid(KEY, &format!("experiment {name:?} is named twice")));
        }
        validate_variants(experiment, base)?;
        for key in (experiment.variants.iter()).flat_map(Variant::overrides) {
            match owner_of.iter().find(|(k, _)| *k == key) {
                Some((_, other)) if *other != name.as_str() => {
                    let rule = format!(
                        "experiments {other:?} and {name:?} both override {key}: a user in both \
                         would credit either with the other's effect"
                    );
                    return Err(invalid(KEY, &rule));
                }
                Some(_) => {}
                None => owner_of.push((key, name)),
            }
        }
    }
    Ok(())
}

fn validate_variants(experiment: &Experiment, base: &RankingConfig) -> Result<(), InvalidSetting> {
    let name = &experiment.name;
    let variants = &experiment.variants;
    if !(2..=MAX_VARIANTS).contains(&variants.len()) {
        let rule = format!("experiment {name:?} needs 2 to {MAX_VARIANTS} variants");
        return Err(invalid(KEY, &rule));
    }
    for (index, variant) in variants.iter().enumerate() {
        let at = format!("experiment {name:?} variant {:?}", variant.name);
        if variant.name.is_empty() {
            let rule = format!("experiment {name:?} variant {index} has no name");
            return Err(invalid(KEY, &rule));
        }
        if variants[..index].iter().any(|v| v.name == variant.name) {
            return Err(invalid(KEY, &format!("{at} is named twice")));
        }
        if !(variant.share > 0.0 && variant.share <= 1.0) {
            let rule = format!("{at}: share must be in (0, 1], got {}", variant.share);
            return Err(invalid(KEY, &rule));
        }
        (variant.ranking_over(base).validate())
            .map_err(|err| invalid(KEY, &format!("{at}: {} {}", err.key, err.rule)))?;
    }
    let total: f64 = variants.iter().map(|v| v.share).sum();
    if (total - 1.0).abs() > 1e-9 {
        let rule = format!("experiment {name:?}: shares must sum to 1, got {total}");
        return Err(invalid(KEY, &rule));
    }
    Ok(())
}

#[cfg(test)]
impl Experiment {
    /// Variants v0, v1 … with these shares and no overrides.
    pub(crate) fn with_shares(name: &str, shares: &[f64]) -> Experiment {
        let named = |(i, &share): (usize, &f64)| Variant::new(&format!("v{i}"), share);
        Experiment {
            name: name.into(),
            variants: shares.iter().enumerate().map(named).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(name: &str, shares: &[f64]) -> Experiment {
        Experiment::with_shares(name, shares)
    }

    fn check(experiments: &[Experiment]) -> Result<(), String> {
        let base = RankingConfig::default();
        validate(experiments, &base).map_err(|e| e.rule)
    }

    #[test]
    fn shares_names_and_overlaps_are_checked() {
        assert_eq!(check(&[experiment("a", &[0.5, 0.5])]), Ok(()));
        let bad_sum = check(&[experiment("a", &[0.5, 0.4])]).unwrap_err();
        assert!(bad_sum.contains("sum to 1, got 0.9"), "{bad_sum}");
        let zero = check(&[experiment("a", &[0.0, 1.0])]).unwrap_err();
        assert!(zero.contains("share must be in (0, 1]"), "{zero}");
        let one = check(&[experiment("a", &[1.0])]).unwrap_err();
        assert!(one.contains("needs 2 to 16 variants"), "{one}");
        let twice = check(&[experiment("a", &[0.5, 0.5]), experiment("a", &[0.5, 0.5])]);
        assert!(twice.unwrap_err().contains("named twice"));
        let mut same_name = experiment("a", &[0.5, 0.5]);
        same_name.variants[1].name = "v0".into();
        assert!(check(&[same_name])
            .unwrap_err()
            .contains("\"v0\" is named twice"));

        let (mut a, mut b) = (experiment("a", &[0.5, 0.5]), experiment("b", &[0.5, 0.5]));
        a.variants[1].blend.cooc = Some(2.0);
        b.variants[0].blend.cooc = Some(0.0);
        let overlap = check(&[a.clone(), b.clone()]).unwrap_err();
        assert!(overlap.contains("both override blend.cooc"), "{overlap}");
        b.variants[0].blend = BlendOverride {
            mf: Some(0.0),
            ..BlendOverride::default()
        };
        assert_eq!(
            check(&[a, b]),
            Ok(()),
            "different settings may overlap in users"
        );
    }

    #[test]
    fn a_variant_s_ranking_is_held_to_the_base_rules() {
        let mut bad = experiment("a", &[0.5, 0.5]);
        bad.variants[1].seed_decay = Some(2.0);
        let rule = check(&[bad]).unwrap_err();
        assert_eq!(
            rule,
            "experiment \"a\" variant \"v1\": engine.ranking.seed_decay must be in (0.0, 1.0]"
        );
    }

    #[test]
    fn experiments_read_from_toml_and_typos_are_refused() {
        let text = r#"
            name = "blend"
            [[variants]]
            name = "control"
            share = 0.5
            [[variants]]
            name = "no-mf"
            share = 0.5
            blend = { mf = 0.0 }
        "#;
        let parsed: Experiment = toml::from_str(text).unwrap();
        assert_eq!(parsed.variants[1].blend.mf, Some(0.0));
        let typo = text.replace("mf = 0.0", "mff = 0.0");
        let err = toml::from_str::<Experiment>(&typo).unwrap_err().to_string();
        assert!(err.contains("unknown field `mff`"), "{err}");
    }
}
