//! The engine's side of campaign triggers: it feeds the rules its state, applies their
//! cooldowns and user filters, and turns decisions into [`Fired`] triggers with names and
//! fresh recommendations. The input that fired them returns them among its `Effects`.

use std::sync::Arc;

use serde_json::Value;

use super::{touch, Capture, Effects, Engine};
use crate::catalog::ListingChange;
use crate::ranking::Filters;
use crate::triggers::{attributes_match, trigger_id, EventFacts, Fired, Firing, Rules, Subject};

impl Engine {
    /// Sets the campaign trigger rules (none by default).
    pub fn set_trigger_rules(&mut self, rules: Arc<Rules>) {
        self.rules = rules;
    }

    pub(super) fn evaluate_triggers(&mut self, facts: &EventFacts) {
        let rules = self.rules.clone();
        let Some(user) = self.shard.users.get_mut(facts.user_id) else {
            return;
        };
        let user = Capture::write(&mut self.shard.capture, facts.user_id, user);
        let firings = user
            .triggers
            .on_event(&rules.rules, &mut self.shard.triggers, facts);
        self.emit(&rules, firings);
        self.fire_due(facts.stream);
    }

    /// The users a pending deadline waits on that are not in memory. A restart that loads
    /// users on their next event loads these at once: a deadline fires for its user without an
    /// event of theirs.
    pub fn awaited_users(&self) -> Vec<String> {
        let awaited = self.shard.triggers.awaited_users().into_iter();
        let absent = awaited.filter(|user| !self.shard.users.contains_key(*user));
        absent.map(str::to_owned).collect()
    }

    /// Runs the deadlines of `stream` that its time has passed.
    pub(super) fn fire_due(&mut self, stream: u64) {
        let rules = self.rules.clone();
        let Some(now_ms) = self.shard.clocks.time(stream) else {
            return;
        };
        let mut firings = Vec::new();
        for timer in self.shard.triggers.due(stream, now_ms) {
            // Users with a deadline pending are never evicted, so the user is here.
            let shard = &mut self.shard;
            let users = shard.users.len();
            if let Some(user) = shard.users.get_mut(&*timer.user_id) {
                let user = Capture::write(&mut shard.capture, &timer.user_id, user);
                if let Some(firing) = user.triggers.on_timer(&rules.rules, &timer) {
                    // A step of its own: a firing with no event since the last checkpoint
                    // (a stream's time moved on restore) is still a change to write.
                    shard.steps += 1;
                    let clock = (users, shard.checkpointed, shard.steps);
                    touch(&mut shard.dirty, clock, &timer.user_id, user);
                    firings.push(firing);
                }
            }
        }
        self.emit(&rules, firings);
    }

    pub(super) fn evaluate_catalog_triggers(
        &mut self,
        item: u32,
        change: &ListingChange,
        updated_at_ms: i64,
        now_ms: i64,
    ) {
        let rules = self.rules.clone();
        let firings =
            self.read()
                .watchers
                .on_change(&rules.rules, item, change, updated_at_ms, now_ms);
        self.emit(&rules, firings);
    }

    /// A listing change that another part of the process applied to the shared item model
    /// (`apply_listing`: with item-owned scale-out, every instance follows the whole catalog):
    /// the catalog triggers of this shard's watchers (a deferring engine's; none otherwise).
    pub fn listing_changed(
        &mut self,
        item: u32,
        change: &ListingChange,
        updated_at_ms: i64,
    ) -> Effects {
        if self.shard.defer && self.rules.watch_items() {
            let rules = self.rules.clone();
            let now_ms = self.read().latest_ts_ms;
            let firings =
                (self.shard.watchers).on_change(&rules.rules, item, change, updated_at_ms, now_ms);
            self.emit(&rules, firings);
        }
        self.take_effects()
    }

    fn emit(&mut self, rules: &Rules, firings: Vec<Firing>) {
        for firing in firings {
            let rule = &rules.rules[firing.rule as usize];
            if !rule.user_attributes.is_empty() {
                // A user not in this shard's memory cannot be checked: no trigger.
                let matches = self
                    .shard
                    .users
                    .get(firing.user_id.as_str())
                    .is_some_and(|u| attributes_match(rule, &u.attributes));
                if !matches {
                    continue;
                }
            }
            if !self
                .shard
                .triggers
                .pass_cooldown(rule, firing.rule, &firing.user_id, firing.at_ms)
            {
                continue;
            }
            let mut items = self.item_ids(firing.items.iter().copied());
            if firing.recommendations > 0 {
                let fresh =
                    self.recommend(&firing.user_id, firing.recommendations, &Filters::default());
                items.extend(self.item_ids(fresh.iter().map(|s| s.item)));
            }
            let subject = match firing.subject {
                Subject::User => String::new(),
                Subject::Item(item) => self.item_id(item),
                Subject::Category(c) => self.read().categories.name(c).to_owned(),
            };
            let fired = Fired {
                trigger_id: trigger_id(&rule.name, &firing.user_id, &subject, firing.anchor_ms),
                rule: rule.name.clone(),
                kind: rule.kind.name(),
                user_id: firing.user_id,
                items,
                fired_at_ms: firing.at_ms,
                evidence: self.named_categories(firing.evidence),
            };
            self.shard.fired.push(fired);
        }
    }

    /// Category indices in evidence (`*_category`) become their names.
    fn named_categories(&self, mut evidence: Value) -> Value {
        if let Value::Object(fields) = &mut evidence {
            let model = self.read();
            for (key, value) in fields.iter_mut() {
                if let (true, Some(index)) = (key.ends_with("_category"), value.as_u64()) {
                    *value = Value::from(model.categories.name(index as u32));
                }
            }
        }
        evidence
    }
}
