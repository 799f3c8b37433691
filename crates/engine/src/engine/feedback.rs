//! Impressions and dismissals as the engine applies them (see `feedback`): into the user's
//! bounded memory and the online counters, never into the item model.

use super::{step_user, Effects, Engine};
use crate::event::{Feedback, FeedbackKind};
use crate::experiments;
use crate::feedback::Dismissed;
use crate::state::NO_CATEGORY;

impl Engine {
    /// Applies feedback that arrived on `stream`. Items the model does not know are ignored
    /// (nothing can recommend them); the stream's time moves on, as with any input. True
    /// when the user's ranking changed: a dismissal, or an impression that demoted an item.
    pub fn apply_feedback_on(&mut self, stream: u64, feedback: &Feedback) -> (bool, Effects) {
        self.shard.clocks.advance(stream, feedback.ts_ms);
        let items = self
            .items
            .read()
            .expect("a worker panicked while updating the item model");
        let config = &self.config;
        let input = (&*feedback.user_id, feedback.ts_ms, stream);
        let clock = (self.shard.checkpointed, &mut self.shard.steps);
        let marks = (&mut self.shard.dirty, &mut self.shard.capture);
        let user = step_user(&mut self.shard.users, marks, clock, input, config);
        let memory = user.feedback.get_or_insert_with(Box::default);
        let limits = &config.feedback;
        let reranks = match &feedback.kind {
            FeedbackKind::Impression { item_ids } => {
                let known: Vec<u32> = item_ids.iter().filter_map(|id| items.ids.get(id)).collect();
                let mut demoted = false;
                for &item in &known {
                    demoted |= memory.shown(item, feedback.ts_ms, limits);
                }
                let arms = experiments::arm_indices(&config.experiments, &feedback.user_id);
                (self.shard.online).count_impressions(known.len() as u64, arms);
                demoted
            }
            FeedbackKind::Dismiss { item_id, category } => {
                if let Some(item) = items.ids.get(item_id) {
                    let at_ms = feedback.ts_ms;
                    let of_item = items.category_of.get(item as usize).copied();
                    let dismissed = match of_item.filter(|&c| *category && c != NO_CATEGORY) {
                        Some(category) => Dismissed::Category { category, at_ms },
                        None => Dismissed::Item { item, at_ms },
                    };
                    memory.dismiss(dismissed, limits);
                }
                true
            }
        };
        drop(items);
        (reranks, self.take_effects())
    }

    pub fn apply_feedback(&mut self, feedback: &Feedback) -> (bool, Effects) {
        self.apply_feedback_on(super::DEFAULT_STREAM, feedback)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::EngineConfig;
    use crate::event::{Event, EventType};
    use crate::ranking::Filters;

    const DAY: i64 = 24 * 3_600_000;

    fn impression(user: &str, items: &[&str], ts_ms: i64) -> Feedback {
        Feedback {
            user_id: user.into(),
            ts_ms,
            kind: FeedbackKind::Impression {
                item_ids: items.iter().map(|&i| i.to_owned()).collect(),
            },
        }
    }

    fn dismiss(user: &str, item: &str, ts_ms: i64) -> Feedback {
        Feedback {
            user_id: user.into(),
            ts_ms,
            kind: FeedbackKind::Dismiss {
                item_id: item.into(),
                category: false,
            },
        }
    }

    /// Users u0..u9 each view x, y and z (in turns), so every item is a neighbour of the others.
    fn shop() -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        for u in 0..10 {
            for (i, item) in ["x", "y", "z"].iter().enumerate() {
                engine.apply(&Event::new(
                    EventType::View,
                    &format!("u{u}"),
                    item,
                    u * 10 + i as i64,
                ));
            }
        }
        engine.apply(&Event::new(EventType::View, "me", "x", 1_000));
        engine
    }

    fn listed(engine: &Engine, user: &str) -> Vec<String> {
        let list = engine.recommend(user, 10, &Filters::default());
        list.iter()
            .map(|s| engine.item_id(s.item).to_owned())
            .collect()
    }

    #[test]
    fn an_item_shown_again_and_again_without_a_touch_sinks() {
        let mut engine = shop();
        let first = listed(&engine, "me")[1].clone();
        let mut reranked = Vec::new();
        for n in 0..3 {
            let (reranks, _) = engine.apply_feedback(&impression("me", &[&first], 2_000 + n));
            reranked.push(reranks);
        }
        assert_eq!(
            reranked,
            [false, false, true],
            "the third showing demotes it"
        );
        assert_eq!(listed(&engine, "me").last(), Some(&first));
        engine.apply(&Event::new(EventType::View, "me", &first, 3_000));
        let counts = engine.online_counts();
        assert_eq!((counts.impressions, counts.impression_clicks), (3, 1));
        assert_eq!(counts.click_through_rate(), 1.0 / 3.0);
    }

    #[test]
    fn impressions_and_dismissals_never_reach_the_item_model() {
        let (mut plain, mut with_feedback) = (shop(), shop());
        for (n, user) in ["u1", "u2", "me", "new"].iter().enumerate() {
            let ts = 2_000 + n as i64;
            with_feedback.apply_feedback(&impression(user, &["x", "y", "z", "unknown"], ts));
            with_feedback.apply_feedback(&dismiss(user, "y", ts));
        }
        for engine in [&mut plain, &mut with_feedback] {
            engine.apply(&Event::new(EventType::View, "u3", "z", 3_000));
        }
        let (a, b) = (plain.to_records(), with_feedback.to_records());
        assert_eq!(
            a.item_records, b.item_records,
            "co-occurrence, factors, popularity"
        );
        assert!(with_feedback.item_index("unknown").is_none());
    }

    #[test]
    fn a_dismissal_survives_the_user_s_record() {
        let mut engine = shop();
        engine.apply_feedback(&dismiss("me", "y", 2_000));
        let records = engine.to_records();
        let mut restored = Engine::from_records(EngineConfig::default(), &records).unwrap();
        let (_, bytes) = records.users.iter().find(|(id, _)| id == "me").unwrap();
        restored.insert_user("me", bytes).unwrap();
        assert!(!listed(&restored, "me").contains(&"y".to_owned()));
        let feedback = |e: &Engine| e.user("me").unwrap().feedback.clone();
        assert_eq!(feedback(&restored), feedback(&engine));
        assert!(feedback(&engine).is_some());
    }

    proptest! {
        /// Whatever the user does after dismissing an item the model knows (x, y or z; v and
        /// w come later), it is not recommended to them until `dismiss_for_ms` has passed.
        #[test]
        fn a_dismissed_item_stays_out_within_the_horizon(
            steps in proptest::collection::vec((0usize..5, 0usize..4, 1i64..3 * DAY), 1..30),
            dismissed in 0usize..3,
        ) {
            let items = ["x", "y", "z", "v", "w"];
            let mut engine = shop();
            let horizon = engine.config().feedback.dismiss_for_ms;
            let at = 2_000;
            engine.apply_feedback(&dismiss("me", items[dismissed], at));
            let mut now = at;
            for (item, kind, gap) in steps {
                now += gap;
                let kind = EventType::ALL[kind];
                engine.apply(&Event::new(kind, "me", items[item], now));
                let list = listed(&engine, "me");
                let shown = list.contains(&items[dismissed].to_owned());
                prop_assert!(!shown || now - at >= horizon, "{list:?} at {now}");
            }
        }
    }
}
