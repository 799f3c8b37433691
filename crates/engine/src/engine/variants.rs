//! Experiments as the engine applies them (see `experiments`): how a user is ranked, which
//! variants they are in, and the online counters of each variant.

use super::Engine;
use crate::experiments::{self, Treatment};

impl Engine {
    /// How `user_id` is ranked: the configured ranking with their variants' overrides.
    pub fn treatment(&self, user_id: &str) -> Treatment {
        experiments::treatment(&self.config.experiments, &self.config.ranking, user_id)
    }

    /// Each experiment `user_id` is in, with their variant: (experiment, variant) names.
    pub fn variants_of<'a>(
        &'a self,
        user_id: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let assigned = experiments::assignments(&self.config.experiments, user_id);
        assigned.map(|(e, v)| (e.name.as_str(), e.variants[v].name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::event::{Event, EventType};
    use crate::experiments::{Experiment, Variant};
    use crate::ranking::Filters;

    /// "history": a control, and a variant that ranks without the user's own history and
    /// never shows what they saw.
    fn with_experiment() -> EngineConfig {
        let mut off = Variant::new("off", 0.5);
        off.exclude_seen = Some(true);
        off.blend.history = Some(0.0);
        let control = Variant::new("control", 0.5);
        EngineConfig {
            experiments: vec![Experiment {
                name: "history".into(),
                variants: vec![control, off],
            }],
            ..EngineConfig::default()
        }
    }

    /// Users 0..40 each view items i0 and i1 (and user k also i{k+2}).
    fn engine(config: EngineConfig) -> Engine {
        let mut engine = Engine::new(config);
        for u in 0..40 {
            let user = format!("u{u}");
            for (i, item) in ["i0".to_string(), "i1".into(), format!("i{}", u + 2)]
                .iter()
                .enumerate()
            {
                engine.apply(&Event::new(
                    EventType::View,
                    &user,
                    item,
                    (u * 10 + i) as i64,
                ));
            }
        }
        engine
    }

    fn user_in(engine: &Engine, variant: &str) -> String {
        (0..40)
            .map(|u| format!("u{u}"))
            .find(|u| engine.variants_of(u).next() == Some(("history", variant)))
            .unwrap_or_else(|| panic!("someone is in {variant}"))
    }

    #[test]
    fn a_user_is_ranked_as_their_variant_says() {
        let engine = engine(with_experiment());
        let base = Filters::default();
        let control = user_in(&engine, "control");
        let plain = engine.recommend_ranked(&control, 10, &base, &engine.config.ranking);
        assert_eq!(engine.recommend(&control, 10, &base), plain);
        let off = user_in(&engine, "off");
        let list = engine.recommend(&off, 10, &base);
        let seen = engine.user(&off).unwrap().profile.recent.len();
        assert!(seen > 0 && !list.is_empty());
        for scored in &list {
            let item = scored.item;
            assert!(
                !engine
                    .user(&off)
                    .unwrap()
                    .profile
                    .recent
                    .iter()
                    .any(|r| r.item == item),
                "the off variant never shows {off} what they saw"
            );
        }
        let as_configured = engine.recommend_ranked(&off, 10, &base, &engine.config.ranking);
        assert_ne!(list, as_configured, "the variant changes the ranking");
    }

    #[test]
    fn online_counts_split_by_variant_and_survive_records() {
        let mut engine = engine(with_experiment());
        let users: Vec<String> = (0..40).map(|u| format!("u{u}")).collect();
        for (n, user) in users.iter().enumerate() {
            let list = engine.recommend(user, 10, &Filters::default());
            engine.show(user, &list);
            let item = engine.item_id(list[0].item).to_owned();
            engine.apply(&Event::new(EventType::View, user, &item, 1_000 + n as i64));
        }
        let tally = engine.online_tally().clone();
        let arms: Vec<(&str, &str)> = (tally.variants.iter())
            .map(|v| (v.experiment.as_str(), v.variant.as_str()))
            .collect();
        assert_eq!(arms, [("history", "control"), ("history", "off")]);
        let judged: Vec<u64> = tally.variants.iter().map(|v| v.counts.judged).collect();
        assert_eq!(tally.total.judged, 40);
        assert_eq!(judged.iter().sum::<u64>(), 40, "each user in one variant");
        assert!(judged.iter().all(|&j| j > 0), "{judged:?}");

        let records = engine.to_records();
        let restored = Engine::from_records(with_experiment(), &records).unwrap();
        assert_eq!(restored.online_tally(), &tally);
        let ended = Engine::from_records(EngineConfig::default(), &records).unwrap();
        assert!(
            ended.online_tally().variants.is_empty(),
            "an ended experiment's counts go"
        );
        assert_eq!(ended.online_tally().total, tally.total);
    }
}
