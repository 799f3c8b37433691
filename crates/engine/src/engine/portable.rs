//! User state another instance can restore: what the changelog carries when a partition moves.
//! Items and categories travel by name (each instance interns them in its own order); the
//! segment is recomputed from the attributes; pending trigger state stays behind (its deadlines
//! live in the shard that armed them).

use serde::{Deserialize, Serialize};

use super::{
    decode_within, encode, intern_item, Capture, DecodeError, Engine, Position, UserState,
    SMALL_RECORD_LIMIT,
};
use crate::profile::{PortableProfile, UserProfile};
use crate::segments::segment_name;
use crate::triggers::UserTriggers;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortableUser {
    pub profile: PortableProfile,
    pub factors: Vec<f32>,
    pub attributes: Vec<(String, String)>,
    pub position: Option<Position>,
}

impl PortableUser {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    pub fn decode(bytes: &[u8], user_id: &str) -> Result<PortableUser, DecodeError> {
        let what = format!("changelog record of user {user_id:?}");
        decode_within::<_, SMALL_RECORD_LIMIT>(bytes, &what)
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
                };
                (id.to_string(), portable)
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users
    }

    /// A portable user as this instance's stored record (unknown items and categories are
    /// interned), and the user's in-memory copy dropped: the record replaces it.
    pub fn localize_user(&mut self, user_id: &str, portable: &PortableUser) -> Vec<u8> {
        if let Some(user) = self.shard.users.remove(user_id) {
            Capture::before_write(&mut self.shard.capture, user_id, &user);
        }
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
        encode(&UserState {
            profile,
            factors: portable.factors.clone().into_boxed_slice(),
            attributes,
            segment,
            triggers: UserTriggers::default(),
            position: portable.position,
            stream: portable
                .position
                .map_or(super::DEFAULT_STREAM, |p| p.stream),
            // Impressions and dismissals stay behind, as the list shown does.
            feedback: None,
            touched: 0,
            shown: None,
        })
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
}
