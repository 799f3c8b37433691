//! An experiment's online split finds an effect that is there and none that is not: synthetic
//! shoppers (taste clusters, so what a user viewed predicts what they view next) are shown
//! lists after every event, as `run` publishes them, by two variants; the two-proportion z
//! statistic of the variants' online HR@10 tells them apart.

use streamrec_engine::config::{Blend, EngineConfig};
use streamrec_engine::eval::{evaluate, Mode, Protocol, Publish};
use streamrec_engine::experiments::{BlendOverride, Experiment, Variant};
use streamrec_engine::online::{two_proportion_z, VariantCounts};
use streamrec_engine::synthetic::{ShopperConfig, Shoppers};

const EVENTS: usize = 40_000;

fn variant(name: &str, blend: BlendOverride) -> Variant {
    Variant {
        blend,
        ..Variant::new(name, 0.5)
    }
}

/// Only what is trending: blind to what the user viewed.
fn popular_only() -> BlendOverride {
    BlendOverride::all(&Blend::TRENDING)
}

/// Each variant's online counts after the synthetic stream, with `a` and `b` as the variants.
fn online_split(a: Variant, b: Variant) -> Vec<VariantCounts> {
    let shoppers = ShopperConfig {
        users: 1_000,
        items: 4_000,
        ..ShopperConfig::default()
    };
    let events: Vec<_> = Shoppers::new(shoppers).take(EVENTS).collect();
    let config = EngineConfig {
        experiments: vec![Experiment {
            name: "strategy".into(),
            variants: vec![a, b],
        }],
        ..EngineConfig::default()
    };
    config.validate().unwrap();
    let protocol = Protocol {
        publish: Some(Publish { exclude_seen: true }),
        ..Protocol::new(Mode::Discovery, 10)
    };
    let report = evaluate(events, &[], &protocol, &config, &[]);
    report.online_variants
}

fn z_of(split: &[VariantCounts]) -> f64 {
    let trials = |v: &VariantCounts| (v.counts.hits, v.counts.new_item_events);
    two_proportion_z(trials(&split[0]), trials(&split[1]))
}

#[test]
fn the_split_finds_the_better_variant() {
    let popular = variant("popular", popular_only());
    let hybrid = variant("hybrid", BlendOverride::default());
    let split = online_split(popular, hybrid);
    for v in &split {
        assert!(
            v.counts.new_item_events > 5_000,
            "{}: {:?}",
            v.variant,
            v.counts
        );
    }
    let z = z_of(&split);
    assert!(
        z > 3.0,
        "the hybrid follows the shoppers' tastes, popularity does not: z = {z}, {split:?}"
    );
}

#[test]
fn the_split_finds_no_effect_between_equal_variants() {
    let split = online_split(
        variant("a", BlendOverride::default()),
        variant("b", BlendOverride::default()),
    );
    let z = z_of(&split);
    assert!(
        z.abs() < 3.0,
        "an A/A split shows no effect: z = {z}, {split:?}"
    );
}
