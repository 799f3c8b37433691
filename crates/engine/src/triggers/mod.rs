//! Campaign triggers: rules (see [`rules`]) evaluated on the engine's state as inputs arrive,
//! sans-IO like the rest of the core. Time is event time: a rule that waits for something not
//! to happen (abandonment) fires when the stream time of the user's input partition — the
//! latest event time applied from it — passes its deadline; another partition's time never
//! counts, so a backlog or a replay cannot fire a deadline early.
//!
//! A trigger's id is a hash of the rule, the user, what it is about and the event time that
//! anchors it, so a redelivered or replayed input fires the same id and downstream can drop
//! the repeat.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

mod portable;
pub mod rules;
mod user;
mod watch;

pub use portable::PortableTriggers;
pub use rules::{kind_names, Rule, RuleKind, Rules, RulesError, Scope};
pub use user::{EventFacts, UserTriggers};
pub use watch::Watchers;

/// A trigger that fired, ready to publish as `streamrec.trigger.v1`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fired {
    pub trigger_id: String,
    pub rule: String,
    pub kind: &'static str,
    pub user_id: String,
    pub items: Vec<String>,
    pub fired_at_ms: i64,
    pub evidence: serde_json::Value,
}

/// A rule's decision before the engine resolves names and applies the cooldown.
#[derive(Clone, Debug, PartialEq)]
pub struct Firing {
    pub rule: u16,
    pub user_id: String,
    /// Engine item indices.
    pub items: Vec<u32>,
    /// Attach this many fresh recommendations to `items`.
    pub recommendations: usize,
    pub at_ms: i64,
    /// What the trigger is about, and the event time anchoring it: with the rule and the user,
    /// they make the trigger's id.
    pub subject: Subject,
    pub anchor_ms: i64,
    pub evidence: serde_json::Value,
}

/// What a trigger is about (engine indices; the id hashes their names, which are stable).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    User,
    Item(u32),
    Category(u32),
}

/// A deadline a waiting rule set: at `deadline_ms` (event time), check whether what it waits
/// for happened since `anchor_ms`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timer {
    pub deadline_ms: i64,
    pub user_id: Box<str>,
    pub rule: u16,
    pub key: u32,
    pub anchor_ms: i64,
}

/// A shard's trigger state: pending deadlines per input stream, and when each (rule, user) last
/// fired. A deadline belongs to the stream of the event that set it and fires when that
/// stream's time passes it, never another's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TriggerState {
    timers: BTreeMap<u64, BTreeSet<Timer>>,
    cooldowns: BTreeMap<(u16, Box<str>), i64>,
    /// Decisions since cooldowns were last pruned.
    since_prune: u32,
}

const PRUNE_EVERY: u32 = 4096;

impl TriggerState {
    /// Whether `rule` may fire for `user_id` at `at_ms`; if so, the cooldown starts.
    pub fn pass_cooldown(&mut self, rule: &Rule, index: u16, user_id: &str, at_ms: i64) -> bool {
        let key = (index, Box::<str>::from(user_id));
        // Out-of-order inputs can fire earlier than the last firing: the gap counts either way.
        if let Some(&last) = self.cooldowns.get(&key) {
            if at_ms.abs_diff(last) < rule.cooldown_ms as u64 {
                return false;
            }
        }
        self.cooldowns.insert(key, at_ms);
        self.since_prune += 1;
        if self.since_prune >= PRUNE_EVERY {
            self.prune(at_ms);
        }
        true
    }

    /// Forgets cooldowns that ended (bounded memory whatever the number of users).
    fn prune(&mut self, now_ms: i64) {
        self.since_prune = 0;
        self.cooldowns
            .retain(|_, last| now_ms.saturating_sub(*last) < 366 * 24 * 3_600_000);
    }

    /// Sets a deadline on `stream`.
    pub fn schedule(&mut self, stream: u64, timer: Timer) {
        self.timers.entry(stream).or_default().insert(timer);
    }

    /// Pops the timers of `stream` due at its time `now_ms`, earliest first.
    pub fn due(&mut self, stream: u64, now_ms: i64) -> Vec<Timer> {
        let Some(timers) = self.timers.get_mut(&stream) else {
            return Vec::new();
        };
        let mut due = Vec::new();
        while timers.first().is_some_and(|t| t.deadline_ms <= now_ms) {
            due.push(timers.pop_first().expect("checked"));
        }
        due
    }

    /// The users the pending deadlines name.
    pub fn awaited_users(&self) -> BTreeSet<&str> {
        let timers = self.timers.values().flatten();
        timers.map(|timer| &*timer.user_id).collect()
    }

    /// Deadlines waiting, over all streams.
    pub fn pending(&self) -> usize {
        self.timers.values().map(BTreeSet::len).sum()
    }

    pub fn heap_bytes(&self) -> usize {
        (self.pending() + self.cooldowns.len()) * 64
    }
}

/// The deterministic id of a trigger: rule, user, subject (by name) and anchoring time.
pub fn trigger_id(rule: &str, user_id: &str, subject: &str, anchor_ms: i64) -> String {
    let text = format!("{rule}\u{0}{user_id}\u{0}{subject}\u{0}{anchor_ms}");
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(text.as_bytes()))
}

/// Whether the user's attributes satisfy the rule's `user_attributes`.
pub fn attributes_match(rule: &Rule, attributes: &[(Box<str>, Box<str>)]) -> bool {
    rule.user_attributes.iter().all(|(key, value)| {
        attributes
            .iter()
            .any(|(k, v)| **k == **key && **v == **value)
    })
}
