//! What users are shown, for online metrics (see `online`): the edge tells the engine which
//! list a user got (a published update, a query's answer), and `apply` judges the user's next
//! events against it.

use super::{touch, Capture, Engine, ItemModel};
use crate::event::Event;
use crate::online::{OnlineCounts, OnlineTally, Shown};
use crate::ranking::Scored;

impl Engine {
    /// Notes that `user_id` was shown `list` (best first) as of their latest event: a
    /// published update, made for that event. A user the shard does not hold is not noted (a
    /// query for a stranger creates no state).
    pub fn show(&mut self, user_id: &str, list: &[Scored]) {
        self.show_at(user_id, list, i64::MIN);
    }

    /// The same, for a list shown at `at_ms` (a query's time) if that is later than the user's
    /// latest event: their next events are judged from when they saw it.
    pub fn show_at(&mut self, user_id: &str, list: &[Scored], at_ms: i64) {
        let shard = &mut self.shard;
        let count = shard.users.len();
        let Some(shared) = shard.users.get_mut(user_id) else {
            return;
        };
        // A step of its own, so a checkpoint taken since the user's event still writes it.
        shard.steps += 1;
        let user = Capture::write(&mut shard.capture, user_id, shared);
        touch(
            &mut shard.dirty,
            (count, shard.checkpointed, shard.steps),
            user_id,
            user,
        );
        let at_ms = user.profile.last_seen_ms.max(at_ms);
        let items = list.iter().map(|s| (s.item, s.sources.bits()));
        user.shown
            .get_or_insert_with(Box::default)
            .replace(at_ms, items);
    }

    /// This shard's online counters.
    pub fn online_counts(&self) -> &OnlineCounts {
        &self.shard.online.total
    }

    /// This shard's online counters, with each experiment variant's.
    pub fn online_tally(&self) -> &OnlineTally {
        &self.shard.online
    }

    /// This worker's count of purchases and re-buys (see `rebuy`).
    pub fn rebuy_tally(&self) -> &crate::rebuy::RebuyTally {
        &self.shard.rebuys
    }

    /// What `user_id` was last shown, if the shard holds them and they were shown anything.
    pub fn shown(&self, user_id: &str) -> Option<&Shown> {
        self.shard.users.get(user_id)?.shown.as_deref()
    }
}

/// What a purchase is worth: its price (else the catalog's) × its quantity (else 1).
pub(super) fn worth(event: &Event, items: &ItemModel, item: u32) -> f64 {
    let listed = || items.catalog.listing(item).map(|l| l.price);
    let price = event.price.or_else(listed).unwrap_or(0.0);
    price * f64::from(event.quantity.unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::event::EventType;
    use crate::ranking::Filters;

    fn engine_with_history() -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        for (user, item, ts) in [("a", "x", 1), ("a", "y", 2), ("b", "x", 3), ("b", "y", 4)] {
            engine.apply(&Event::new(EventType::View, user, item, ts));
        }
        engine
    }

    fn shown_to(engine: &mut Engine, user: &str) -> Vec<Scored> {
        let filters = Filters {
            exclude_seen: true,
            ..Filters::default()
        };
        let list = engine.recommend(user, 10, &filters);
        engine.show(user, &list);
        list
    }

    #[test]
    fn an_event_on_a_shown_item_new_to_the_user_is_a_hit() {
        let mut engine = engine_with_history();
        engine.apply(&Event::new(EventType::View, "c", "x", 10));
        let list = shown_to(&mut engine, "c");
        assert_eq!(engine.item_id(list[0].item), "y");
        let mut purchase = Event::new(EventType::Purchase, "c", "y", 20);
        purchase.price = Some(12.5);
        purchase.quantity = Some(2);
        engine.apply(&purchase);
        let counts = engine.online_counts();
        assert_eq!(
            (counts.judged, counts.new_item_events, counts.hits),
            (1, 1, 1)
        );
        assert_eq!((counts.purchases, counts.conversions), (1, 1));
        assert_eq!(counts.attributed_revenue, 25.0);
    }

    #[test]
    fn a_list_queried_long_after_the_user_s_last_event_judges_from_the_query() {
        let hour = 3_600_000;
        let mut engine = engine_with_history();
        engine.apply(&Event::new(EventType::View, "c", "x", 10));
        let filters = Filters {
            exclude_seen: true,
            ..Filters::default()
        };
        let list = engine.recommend("c", 10, &filters);
        engine.show_at("c", &list, 2 * hour);
        engine.apply(&Event::new(EventType::View, "c", "y", 2 * hour + 60_000));
        assert_eq!(
            engine.online_counts().hits,
            1,
            "judged from the query's time"
        );
    }

    #[test]
    fn a_stranger_is_not_noted_and_nothing_shown_judges_nothing() {
        let mut engine = engine_with_history();
        shown_to(&mut engine, "nobody");
        assert!(engine.user("nobody").is_none());
        engine.apply(&Event::new(EventType::View, "a", "z", 10));
        assert_eq!(engine.online_counts(), &OnlineCounts::default());
    }

    #[test]
    fn lists_and_counts_survive_records_and_stay_out_of_the_digest() {
        let mut engine = engine_with_history();
        engine.apply(&Event::new(EventType::View, "c", "x", 10));
        let digest = engine.digest();
        assert!(!shown_to(&mut engine, "c").is_empty());
        assert_eq!(
            engine.digest(),
            digest,
            "what was shown is not learned state"
        );
        engine.apply(&Event::new(EventType::View, "c", "q", 20));
        shown_to(&mut engine, "c");
        let records = engine.to_records();
        let restored = Engine::from_records(EngineConfig::default(), &records).unwrap();
        assert!(engine.shown("c").is_some());
        assert_eq!(restored.shown("c"), engine.shown("c"));
        assert_eq!(restored.online_counts(), engine.online_counts());
        assert_eq!(restored.online_counts().judged, 1);
        assert_eq!(restored.digest(), engine.digest());
    }

    #[test]
    fn a_user_record_written_before_lists_were_kept_still_loads() {
        let engine = engine_with_history();
        let records = engine.to_records();
        let (_, bytes) = records.users.iter().find(|(id, _)| id == "a").unwrap();
        let mut fresh = Engine::from_records(EngineConfig::default(), &records).unwrap();
        fresh.insert_user("a", bytes).unwrap();
        assert!(fresh.shown("a").is_none());
        let mut damaged = bytes.clone();
        damaged.push(7);
        assert!(
            fresh.insert_user("a", &damaged).is_err(),
            "a tail must decode"
        );
    }
}
