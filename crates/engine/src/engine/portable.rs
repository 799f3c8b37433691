//! User state another instance can restore: what the changelog carries when a partition moves.
//! Items and categories travel by name (each instance interns them in its own order); the
//! segment is recomputed from the attributes. Waiting trigger state travels too, after the rest
//! and only when there is some (a record without it is one an earlier build wrote, or one of a
//! user with nothing waiting): the new owner sets its deadlines on the user's partition.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    decode_with_tail, encode, intern_item, Capture, DecodeError, Engine, Position, UserState,
    SMALL_RECORD_LIMIT,
};
use crate::profile::{PortableProfile, UserProfile};
use crate::segments::segment_name;
use crate::triggers::{Name, Naming, PortableTriggers};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortableUser {
    pub profile: PortableProfile,
    pub factors: Vec<f32>,
    pub attributes: Vec<(String, String)>,
    pub position: Option<Position>,
    /// Encoded after the rest, and only when not empty.
    #[serde(skip)]
    pub triggers: PortableTriggers,
}

impl PortableUser {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = encode(self);
        if !self.triggers.is_empty() {
            bytes.extend(encode(&self.triggers));
        }
        bytes
    }

    pub fn decode(bytes: &[u8], user_id: &str) -> Result<PortableUser, DecodeError> {
        let what = format!("changelog record of user {user_id:?}");
        let (mut user, triggers) =
            decode_with_tail::<PortableUser, PortableTriggers, SMALL_RECORD_LIMIT>(bytes, &what)?;
        user.triggers = triggers.unwrap_or_default();
        Ok(user)
    }

    /// The bytes of what only the user's own inputs decide (profile, attributes, position),
    /// not the factors, which also depend on the item vectors other users shaped: equal for
    /// the same inputs applied once each, whichever instances applied them.
    pub fn own_state_bytes(&self) -> Vec<u8> {
        encode(&(&self.profile, &self.attributes, &self.position))
    }
}

impl Engine {
    /// The users changed since the last checkpoint, portable, in id order.
    pub fn changed_portable_users(&self) -> Vec<(String, PortableUser)> {
        let since = self.shard.checkpointed;
        self.portable_users(|state| state.touched > since)
    }

    /// A digest of what only the users' own inputs decide (see
    /// [`PortableUser::own_state_bytes`]) and of the item ids known: equal for the same inputs
    /// applied once each, however many workers applied them in whatever interleaving (the
    /// factors and counts of a shared item model are not).
    pub fn own_state_digest(&self) -> String {
        let users = self.portable_users(|_| true);
        let own: Vec<Vec<u8>> = users
            .iter()
            .map(|(_, user)| user.own_state_bytes())
            .collect();
        let mut items: Vec<String> = self.item_ids(0..self.item_count() as u32);
        items.sort();
        let mut parts: Vec<&[u8]> = Vec::new();
        for ((id, _), bytes) in users.iter().zip(&own) {
            parts.extend([id.as_bytes(), bytes]);
        }
        parts.extend(items.iter().map(String::as_bytes));
        format!("{:032x}", crate::rng::hash128(&parts))
    }

    fn portable_users(&self, wanted: impl Fn(&UserState) -> bool) -> Vec<(String, PortableUser)> {
        let items = self.read();
        let rules = &self.rules.rules;
        let mut users: Vec<(String, PortableUser)> = self
            .shard
            .users
            .iter()
            .filter(|(_, state)| wanted(state))
            .map(|(id, state)| {
                let profile = state.profile.to_portable(
                    |i| items.ids.name(i).to_owned(),
                    |c| items.categories.name(c).to_owned(),
                );
                let portable = PortableUser {
                    profile,
                    factors: state.factors.to_vec(),
                    attributes: state
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    position: state.position,
                    triggers: PortableTriggers::new(
                        (id, &state.triggers),
                        &self.shard.triggers,
                        rules,
                        Naming {
                            item: |i| items.ids.name(i).to_owned(),
                            category: |c| items.categories.name(c).to_owned(),
                        },
                    ),
                };
                (id.to_string(), portable)
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users
    }

    /// A portable user as this instance's stored record (unknown items and categories are
    /// interned), and the user's in-memory copy dropped: the record replaces it. A user with
    /// trigger deadlines waiting stays in memory, as such users always do, with the deadlines
    /// set on the user's partition.
    pub fn localize_user(&mut self, user_id: &str, portable: &PortableUser) -> Vec<u8> {
        if let Some(user) = self.shard.users.remove(user_id) {
            Capture::before_write(&mut self.shard.capture, user_id, &user);
        }
        let rules = self.rules.clone();
        let config = &self.config;
        let mut guard = self
            .items
            .write()
            .expect("a worker panicked while updating the item model");
        let items = &mut *guard;
        let categories: rustc_hash::FxHashMap<&str, u32> = portable
            .profile
            .categories
            .iter()
            .map(|(name, _)| (name.as_str(), items.categories.intern(name)))
            .collect();
        let profile = UserProfile::from_portable(
            &portable.profile,
            |id| intern_item(items, id, config).0,
            |name| categories[name],
        );
        let attributes: Vec<(Box<str>, Box<str>)> = portable
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect();
        let segment = segment_name(&attributes, &config.content)
            .and_then(|name| items.segments.intern(&name, config.content.max_segments));
        let stream = portable
            .position
            .map_or(super::DEFAULT_STREAM, |p| p.stream);
        let triggers = portable.triggers.localize(
            (user_id, stream),
            &mut self.shard.triggers,
            &rules.rules,
            |name| match name {
                Name::Item(id) => intern_item(items, id, config).0,
                Name::Category(name) => items.categories.intern(name),
            },
        );
        let state = UserState {
            profile,
            factors: portable.factors.clone().into_boxed_slice(),
            attributes,
            segment,
            triggers,
            position: portable.position,
            stream,
            // Impressions and dismissals stay behind, as the list shown does.
            feedback: None,
            touched: 0,
            shown: None,
        };
        let record = encode(&state);
        if state.triggers.waiting() {
            self.shard.users.insert(user_id.into(), Arc::new(state));
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::event::{Event, EventType};

    fn portable_of(engine: &mut Engine, user: &str) -> PortableUser {
        engine
            .changed_portable_users()
            .into_iter()
            .find(|(id, _)| id == user)
            .map(|(_, p)| p)
            .expect("the user changed")
    }

    /// A user moved between instances that interned items in different orders keeps the same
    /// history, categories, vector and position.
    #[test]
    fn a_user_moves_between_instances_that_intern_differently() {
        let mut owner = Engine::new(EngineConfig::default());
        for (n, kind) in [EventType::View, EventType::Purchase, EventType::View]
            .into_iter()
            .enumerate()
        {
            let mut event = Event::new(kind, "u", &format!("i{n}"), 1_000 + n as i64);
            event.category = Some(format!("c{n}"));
            owner.apply(&event);
        }
        let at = Position { stream: 3, seq: 41 };
        owner.record_position("u", at);
        let portable = portable_of(&mut owner, "u");

        let mut other = Engine::new(EngineConfig::default());
        let mut first = Event::new(EventType::View, "w", "i2", 500);
        first.category = Some("c9".into());
        other.apply(&first); // i2 and c9 come first here: other indices
        let record = other.localize_user("u", &portable);
        other.insert_user("u", &record).unwrap();
        assert!(other.already_applied("u", at));
        assert!(!other.already_applied("u", Position { stream: 3, seq: 42 }));
        other.record_position("u", Position { stream: 3, seq: 42 }); // mark it changed
        std::sync::Arc::make_mut(other.shard.users.get_mut("u").unwrap()).touched =
            other.shard.steps + 1;
        let moved = portable_of(&mut other, "u");
        assert_eq!(moved.profile, portable.profile);
        assert_eq!(moved.factors, portable.factors);
        assert_eq!(moved.position, Some(Position { stream: 3, seq: 42 }));
        assert_ne!(
            other.item_index("i0"),
            owner.item_index("i0"),
            "the test needs different interning"
        );
    }

    const WINDOW: i64 = 600_000;
    const QUIET: i64 = 300_000;

    fn rules() -> std::sync::Arc<crate::triggers::Rules> {
        let text = format!(
            "[[rule]]\nname = \"cart\"\nkind = \"cart_abandonment\"\nwindow_ms = {WINDOW}\n\
             cooldown_ms = 86400000\n\n[[rule]]\nname = \"browsed\"\n\
             kind = \"browse_abandonment\"\nscope = \"category\"\nmin_views = 2\n\
             window_ms = {WINDOW}\nquiet_ms = {QUIET}\ncooldown_ms = 1"
        );
        std::sync::Arc::new(crate::triggers::Rules::parse(&text).unwrap())
    }

    fn engine_with_rules() -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        engine.set_trigger_rules(rules());
        engine
    }

    fn on(
        engine: &mut Engine,
        kind: EventType,
        (user, item): (&str, &str),
        ts: i64,
    ) -> Vec<String> {
        let mut event = Event::new(kind, user, item, ts);
        let shoe = ["boot", "sandal"].contains(&item);
        event.category = Some(if shoe {
            "shoes".into()
        } else {
            format!("c-{item}")
        });
        let fired = engine.apply_on(3, &event).effects.fired;
        fired
            .into_iter()
            .map(|f| format!("{} {} {:?}", f.rule, f.user_id, f.items))
            .collect()
    }

    /// A partition moves after its user carted an item and browsed a category: the new owner,
    /// which interns items in another order, fires both abandonments when the partition's time
    /// passes their deadlines, and keeps the cart rule's cooldown.
    #[test]
    fn waiting_triggers_move_with_the_user_and_fire_on_the_new_owner() {
        let mut owner = engine_with_rules();
        on(&mut owner, EventType::View, ("u", "boot"), 1_000);
        on(&mut owner, EventType::View, ("u", "sandal"), 2_000);
        on(&mut owner, EventType::AddToCart, ("u", "boot"), 3_000);
        owner.record_position("u", Position { stream: 3, seq: 3 });
        let portable = portable_of(&mut owner, "u");
        let moved = PortableUser::decode(&portable.encode(), "u").unwrap();
        assert_eq!(moved, portable);

        let mut other = engine_with_rules();
        on(&mut other, EventType::View, ("w", "sandal"), 500);
        let record = other.localize_user("u", &moved);
        assert!(
            other.has_user("u"),
            "a user with deadlines waiting stays in memory"
        );
        let in_memory = other.shard.users["u"].triggers.clone();
        other.insert_user("u", &record).unwrap();
        assert_eq!(
            other.shard.users["u"].triggers, in_memory,
            "the record holds them too"
        );
        assert!(on(
            &mut other,
            EventType::View,
            ("w", "hat1"),
            2_000 + QUIET - 1
        )
        .is_empty());
        let browsed = on(&mut other, EventType::View, ("w", "hat2"), 2_000 + QUIET);
        assert_eq!(browsed, [r#"browsed u ["sandal", "boot"]"#]);
        let carted = on(&mut other, EventType::View, ("w", "hat3"), 3_000 + WINDOW);
        assert_eq!(carted, [r#"cart u ["boot"]"#]);

        // The cart rule fired on the new owner: its cooldown moves back with the user.
        other.record_position("u", Position { stream: 3, seq: 9 });
        std::sync::Arc::make_mut(other.shard.users.get_mut("u").unwrap()).touched =
            other.shard.steps + 1;
        let back = portable_of(&mut other, "u");
        owner.localize_user("u", &back);
        on(
            &mut owner,
            EventType::AddToCart,
            ("u", "hat"),
            5_000 + WINDOW,
        );
        let again = on(
            &mut owner,
            EventType::View,
            ("w", "hat4"),
            5_000 + 2 * WINDOW,
        );
        assert!(
            again.is_empty(),
            "within the cart rule's cooldown: {again:?}"
        );
    }

    /// A record written before trigger state travelled (or of a user with none) has no tail,
    /// and reads as a user with nothing waiting; a damaged tail is refused.
    #[test]
    fn a_record_without_trigger_state_reads_as_nothing_waiting() {
        let mut owner = Engine::new(EngineConfig::default());
        owner.apply(&Event::new(EventType::View, "u", "i", 1_000));
        let portable = portable_of(&mut owner, "u");
        assert!(portable.triggers.is_empty());
        let bytes = portable.encode();
        assert_eq!(bytes, encode(&portable), "no tail when nothing waits");
        assert_eq!(PortableUser::decode(&bytes, "u").unwrap(), portable);
        let mut damaged = bytes;
        damaged.push(7);
        assert!(PortableUser::decode(&damaged, "u").is_err());
    }
}
