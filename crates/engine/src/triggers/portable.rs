//! A user's waiting trigger state as another instance reads it: what a partition's new owner
//! needs to fire the deadlines its previous owner set, and to keep the user's cooldowns.
//! Items, categories and rules travel by name (each instance interns items in its own order,
//! and its rules may differ): what waited on a rule the new owner lacks, or has as another
//! kind or scope, is dropped.

use serde::{Deserialize, Serialize};

use super::user::{Armed, Cart, MAX_VIEWS, MAX_WAITING};
use super::{Rule, RuleKind, Scope, TriggerState, UserTriggers};
use crate::intern::{Name, Naming, NO_CATEGORY};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortableTriggers {
    /// Recent views: item, category, time; oldest first.
    views: Vec<(String, Option<String>, i64)>,
    armed: Vec<PortableArmed>,
    carts: Vec<PortableCart>,
    /// When each rule last fired for the user.
    cooldowns: Vec<(String, i64)>,
}

/// A browse abandonment waiting for its quiet period (see `user::Armed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PortableArmed {
    rule: String,
    key: PortableKey,
    views: u32,
    first_ms: i64,
    last_ms: i64,
}

/// What a browse abandonment counts views of: an item or a category, by the rule's scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PortableKey {
    Item(String),
    Category(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PortableCart {
    rule: String,
    item: String,
    carted_ms: i64,
}

impl PortableTriggers {
    /// Nothing to carry: no views, nothing waiting, no cooldown.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
            && self.armed.is_empty()
            && self.carts.is_empty()
            && self.cooldowns.is_empty()
    }

    /// The trigger state of `user_id` on this instance, by name.
    pub fn new(
        user: (&str, &UserTriggers),
        state: &TriggerState,
        rules: &[Rule],
        names: &Naming<impl Fn(u32) -> String, impl Fn(u32) -> String>,
    ) -> PortableTriggers {
        let (user_id, triggers) = user;
        let rule_name = |rule: u16| rules.get(rule as usize).map(|r| r.name.clone());
        let views = triggers.views.iter().map(|&(item, category, ts)| {
            let category = (category != NO_CATEGORY).then(|| (names.category)(category));
            ((names.item)(item), category, ts)
        });
        let armed = triggers.armed.iter().filter_map(|a| {
            let rule = rules.get(a.rule as usize)?;
            let key = match browse_scope(rule)? {
                Scope::Item => PortableKey::Item((names.item)(a.key)),
                Scope::Category => PortableKey::Category((names.category)(a.key)),
            };
            Some(PortableArmed {
                rule: rule.name.clone(),
                key,
                views: a.views,
                first_ms: a.first_ms,
                last_ms: a.last_ms,
            })
        });
        let carts = triggers.carts.iter().filter_map(|c| {
            Some(PortableCart {
                rule: rule_name(c.rule)?,
                item: (names.item)(c.item),
                carted_ms: c.carted_ms,
            })
        });
        let cooldowns = (0..rules.len() as u16).filter_map(|rule| {
            let last = state.cooldowns.get(&(rule, user_id.into()))?;
            Some((rule_name(rule)?, *last))
        });
        PortableTriggers {
            views: views.collect(),
            armed: armed.collect(),
            carts: carts.collect(),
            cooldowns: cooldowns.collect(),
        }
    }

    /// The trigger state on this instance. Each waiting rule's deadline is set on `stream`,
    /// as this instance's rule gives it, and each cooldown is kept unless this instance has a
    /// later one. A record holding more than a user keeps (damaged or hostile) gives its
    /// latest entries only.
    pub fn localize(
        &self,
        (user_id, stream): (&str, u64),
        state: &mut TriggerState,
        rules: &[Rule],
        mut intern: impl FnMut(Name<'_>) -> u32,
    ) -> UserTriggers {
        let rule_index = |name: &str| rules.iter().position(|r| r.name == name);
        let mut triggers = UserTriggers::default();
        for (item, category, ts) in latest(&self.views, MAX_VIEWS) {
            let category = category.as_deref();
            let category = category.map_or(NO_CATEGORY, |c| intern(Name::Category(c)));
            triggers
                .views
                .push_back((intern(Name::Item(item)), category, *ts));
        }
        for armed in latest(&self.armed, MAX_WAITING) {
            let Some(rule) = rule_index(&armed.rule) else {
                continue;
            };
            let RuleKind::BrowseAbandonment { quiet_ms, .. } = rules[rule].kind else {
                continue;
            };
            let key = match (&armed.key, browse_scope(&rules[rule])) {
                (PortableKey::Item(item), Some(Scope::Item)) => intern(Name::Item(item)),
                (PortableKey::Category(name), Some(Scope::Category)) => {
                    intern(Name::Category(name))
                }
                _ => continue,
            };
            let armed = Armed {
                rule: rule as u16,
                key,
                views: armed.views,
                first_ms: armed.first_ms,
                last_ms: armed.last_ms,
            };
            state.schedule(stream, armed.timer(user_id, quiet_ms));
            triggers.armed.push(armed);
        }
        for cart in latest(&self.carts, MAX_WAITING) {
            let Some(rule) = rule_index(&cart.rule) else {
                continue;
            };
            let RuleKind::CartAbandonment { window_ms } = rules[rule].kind else {
                continue;
            };
            let cart = Cart {
                rule: rule as u16,
                item: intern(Name::Item(&cart.item)),
                carted_ms: cart.carted_ms,
            };
            state.schedule(stream, cart.timer(user_id, window_ms));
            triggers.carts.push(cart);
        }
        for (rule, last) in latest(&self.cooldowns, rules.len()) {
            if let Some(rule) = rule_index(rule) {
                let since = state.cooldowns.entry((rule as u16, user_id.into()));
                let kept = since.or_insert(*last);
                *kept = (*kept).max(*last);
            }
        }
        triggers
    }
}

/// What a browse abandonment rule counts views of; none for other kinds.
fn browse_scope(rule: &Rule) -> Option<Scope> {
    match rule.kind {
        RuleKind::BrowseAbandonment { scope, .. } => Some(scope),
        _ => None,
    }
}

/// The last `most` of a list kept oldest first.
fn latest<T>(list: &[T], most: usize) -> &[T] {
    &list[list.len().saturating_sub(most)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record holding more than a user keeps (damaged or hostile) grows no user past the
    /// bounds: the latest views are kept.
    #[test]
    fn a_record_past_the_bounds_keeps_the_latest_views() {
        let views = (0..1_000).map(|n| (format!("i{n}"), None, n as i64));
        let portable = PortableTriggers {
            views: views.collect(),
            ..PortableTriggers::default()
        };
        let mut state = TriggerState::default();
        let mut names = Vec::new();
        let triggers = portable.localize(("u", 0), &mut state, &[], |name| {
            names.push(format!("{name:?}"));
            names.len() as u32
        });
        assert_eq!(triggers.views.len(), MAX_VIEWS);
        assert_eq!(triggers.views.back().map(|v| v.2), Some(999));
        assert_eq!(state.pending(), 0);
    }
}
