//! What the waiting rules remember per user (recent views, armed browse abandonments, open
//! carts) and the decisions they take on the user's events and deadlines. All bounded.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Firing, Rule, RuleKind, Scope, Subject, Timer, TriggerState};
use crate::event::EventType;
use crate::intern::NO_CATEGORY;

pub(super) const MAX_VIEWS: usize = 64;
pub(super) const MAX_WAITING: usize = 16;

/// A browse abandonment waiting for its quiet period: views of `key` from `first_ms` to
/// `last_ms`; the deadline anchored at `last_ms` is the live one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Armed {
    pub(super) rule: u16,
    pub(super) key: u32,
    pub(super) views: u32,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
}

impl Armed {
    /// Its deadline: `quiet_ms` after the last view.
    pub(super) fn timer(&self, user_id: &str, quiet_ms: i64) -> Timer {
        Timer {
            deadline_ms: self.last_ms.saturating_add(quiet_ms),
            user_id: user_id.into(),
            rule: self.rule,
            key: self.key,
            anchor_ms: self.last_ms,
        }
    }
}

/// An add-to-cart waiting for its purchase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Cart {
    pub(super) rule: u16,
    pub(super) item: u32,
    pub(super) carted_ms: i64,
}

impl Cart {
    /// Its deadline: `window_ms` after the add-to-cart.
    pub(super) fn timer(&self, user_id: &str, window_ms: i64) -> Timer {
        Timer {
            deadline_ms: self.carted_ms.saturating_add(window_ms),
            user_id: user_id.into(),
            rule: self.rule,
            key: self.item,
            anchor_ms: self.carted_ms,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserTriggers {
    /// Recent views: (item, category or `NO_CATEGORY`, time), oldest first.
    pub(super) views: VecDeque<(u32, u32, i64)>,
    pub(super) armed: Vec<Armed>,
    pub(super) carts: Vec<Cart>,
}

/// What the engine knows about one applied event, for the rules.
#[derive(Clone, Copy, Debug)]
pub struct EventFacts<'a> {
    pub user_id: &'a str,
    /// The input stream (partition) the event came on: deadlines it sets wait for its time.
    pub stream: u64,
    pub kind: EventType,
    pub item: u32,
    pub category: Option<u32>,
    pub ts_ms: i64,
    /// The user's last event time before this one (None: a new user).
    pub previous_seen_ms: Option<i64>,
    pub top_category_before: Option<u32>,
    pub top_category_after: Option<u32>,
    pub events: u64,
}

impl UserTriggers {
    /// Whether every item and category index held is below the given counts (a stored state is
    /// checked before use). Armed keys are items or categories, by the rule's scope.
    pub fn indices_within(&self, items: usize, categories: usize) -> bool {
        let category_ok = |c: u32| c == NO_CATEGORY || (c as usize) < categories;
        let views_ok = self
            .views
            .iter()
            .all(|&(item, category, _)| (item as usize) < items && category_ok(category));
        let any = items.max(categories);
        views_ok
            && self.armed.iter().all(|a| (a.key as usize) < any)
            && self.carts.iter().all(|c| (c.item as usize) < items)
    }

    /// Whether a deadline waits on this user's state (such users stay in memory).
    pub fn waiting(&self) -> bool {
        !self.armed.is_empty() || !self.carts.is_empty()
    }

    /// Updates the waiting rules' state with one event and returns what fires at once.
    pub fn on_event(
        &mut self,
        rules: &[Rule],
        state: &mut TriggerState,
        facts: &EventFacts,
    ) -> Vec<Firing> {
        if facts.kind == EventType::View {
            self.views.push_back((
                facts.item,
                facts.category.unwrap_or(NO_CATEGORY),
                facts.ts_ms,
            ));
            if self.views.len() > MAX_VIEWS {
                self.views.pop_front();
            }
        }
        let mut fired = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let index = index as u16;
            match rule.kind {
                RuleKind::BrowseAbandonment {
                    scope,
                    min_views,
                    window_ms,
                    quiet_ms,
                } => self.browse(state, facts, index, (scope, min_views, window_ms, quiet_ms)),
                RuleKind::CartAbandonment { window_ms } => {
                    self.cart(state, facts, index, window_ms)
                }
                RuleKind::ReEngagement { inactive_ms, items } => {
                    fired.extend(re_engagement(facts, index, inactive_ms, items))
                }
                RuleKind::AffinityShift { min_events } => {
                    fired.extend(affinity_shift(facts, index, min_events))
                }
                RuleKind::PriceDrop { .. } | RuleKind::BackInStock { .. } => {}
            }
        }
        fired
    }

    fn browse(
        &mut self,
        state: &mut TriggerState,
        facts: &EventFacts,
        rule: u16,
        (scope, min_views, window_ms, quiet_ms): (Scope, u32, i64, i64),
    ) {
        let key_of = |item: u32, category: u32| match scope {
            Scope::Item => Some(item),
            Scope::Category => (category != NO_CATEGORY).then_some(category),
        };
        let Some(key) = key_of(facts.item, facts.category.unwrap_or(NO_CATEGORY)) else {
            return;
        };
        match facts.kind {
            EventType::Purchase => {
                // A purchase of it ends the wait — unless it came before the views counted.
                self.armed
                    .retain(|a| a.rule != rule || a.key != key || facts.ts_ms < a.first_ms);
            }
            EventType::View => {
                let times: Vec<i64> = self
                    .views
                    .iter()
                    .filter(|(item, category, _)| key_of(*item, *category) == Some(key))
                    .map(|v| v.2)
                    .collect();
                let last = times.iter().copied().max().unwrap_or(facts.ts_ms);
                let counted: Vec<i64> = times
                    .into_iter()
                    .filter(|&t| t > last - window_ms)
                    .collect();
                if counted.len() < min_views as usize {
                    return;
                }
                let first = counted.iter().copied().min().unwrap_or(last);
                self.armed.retain(|a| a.rule != rule || a.key != key);
                let armed = Armed {
                    rule,
                    key,
                    views: counted.len() as u32,
                    first_ms: first,
                    last_ms: last,
                };
                state.schedule(facts.stream, armed.timer(facts.user_id, quiet_ms));
                self.armed.push(armed);
                if self.armed.len() > MAX_WAITING {
                    self.armed.remove(0);
                }
            }
            _ => {}
        }
    }

    fn cart(&mut self, state: &mut TriggerState, facts: &EventFacts, rule: u16, window_ms: i64) {
        match facts.kind {
            EventType::Purchase => self
                .carts
                .retain(|c| c.rule != rule || c.item != facts.item || facts.ts_ms < c.carted_ms),
            EventType::AddToCart => {
                // A later add-to-cart of the same item restarts the wait.
                let later = self
                    .carts
                    .iter()
                    .find(|c| c.rule == rule && c.item == facts.item)
                    .is_none_or(|c| facts.ts_ms > c.carted_ms);
                if !later {
                    return;
                }
                self.carts
                    .retain(|c| c.rule != rule || c.item != facts.item);
                let cart = Cart {
                    rule,
                    item: facts.item,
                    carted_ms: facts.ts_ms,
                };
                state.schedule(facts.stream, cart.timer(facts.user_id, window_ms));
                self.carts.push(cart);
                if self.carts.len() > MAX_WAITING {
                    self.carts.remove(0);
                }
            }
            _ => {}
        }
    }

    /// A deadline passed: fires if the state it was set for still waits.
    pub fn on_timer(&mut self, rules: &[Rule], timer: &Timer) -> Option<Firing> {
        let rule = rules.get(timer.rule as usize)?;
        match rule.kind {
            RuleKind::BrowseAbandonment {
                scope, quiet_ms, ..
            } => {
                let at = self.armed.iter().position(|a| {
                    a.rule == timer.rule && a.key == timer.key && a.last_ms == timer.anchor_ms
                })?;
                let armed = self.armed.remove(at);
                let (items, subject) = match scope {
                    Scope::Item => (vec![armed.key], Subject::Item(armed.key)),
                    Scope::Category => (self.viewed_in(armed.key), Subject::Category(armed.key)),
                };
                Some(Firing {
                    rule: timer.rule,
                    user_id: timer.user_id.to_string(),
                    items,
                    recommendations: 0,
                    at_ms: timer.deadline_ms,
                    subject,
                    anchor_ms: armed.last_ms,
                    evidence: json!({
                        "views": armed.views,
                        "first_view_at": armed.first_ms,
                        "last_view_at": armed.last_ms,
                        "quiet_ms": quiet_ms,
                    }),
                })
            }
            RuleKind::CartAbandonment { window_ms } => {
                let at = self.carts.iter().position(|c| {
                    c.rule == timer.rule && c.item == timer.key && c.carted_ms == timer.anchor_ms
                })?;
                let cart = self.carts.remove(at);
                Some(Firing {
                    rule: timer.rule,
                    user_id: timer.user_id.to_string(),
                    items: vec![cart.item],
                    recommendations: 0,
                    at_ms: timer.deadline_ms,
                    subject: Subject::Item(cart.item),
                    anchor_ms: cart.carted_ms,
                    evidence: json!({ "carted_at": cart.carted_ms, "window_ms": window_ms }),
                })
            }
            _ => None,
        }
    }

    /// Distinct items of a category among the recent views, newest first (at most 5).
    fn viewed_in(&self, category: u32) -> Vec<u32> {
        let mut items = Vec::new();
        for &(item, c, _) in self.views.iter().rev() {
            if c == category && !items.contains(&item) && items.len() < 5 {
                items.push(item);
            }
        }
        items
    }
}

fn re_engagement(facts: &EventFacts, rule: u16, inactive_ms: i64, items: usize) -> Option<Firing> {
    let previous = facts.previous_seen_ms?;
    let away = facts.ts_ms - previous;
    (away >= inactive_ms).then(|| Firing {
        rule,
        user_id: facts.user_id.to_owned(),
        items: Vec::new(),
        recommendations: items,
        at_ms: facts.ts_ms,
        subject: Subject::User,
        anchor_ms: facts.ts_ms,
        evidence: json!({ "last_seen_at": previous, "inactive_ms": away }),
    })
}

fn affinity_shift(facts: &EventFacts, rule: u16, min_events: u64) -> Option<Firing> {
    let (Some(from), Some(to)) = (facts.top_category_before, facts.top_category_after) else {
        return None;
    };
    (from != to && facts.events >= min_events).then(|| Firing {
        rule,
        user_id: facts.user_id.to_owned(),
        items: Vec::new(),
        recommendations: 0,
        at_ms: facts.ts_ms,
        subject: Subject::Category(to),
        anchor_ms: facts.ts_ms,
        // Category indices; the engine replaces them with names.
        evidence: json!({ "from_category": from, "to_category": to }),
    })
}
