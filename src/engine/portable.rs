//! User state another instance can restore: what the changelog carries when a partition moves.
//! Items and categories travel by name (each instance interns them in its own order); the
//! segment is recomputed from the attributes; pending trigger state stays behind (its deadlines
//! live in the shard that armed them).

use serde::{Deserialize, Serialize};

use super::{decode, encode, intern_item, DecodeError, Engine, Position, UserState};
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
        decode(bytes, &format!("changelog record of user {user_id:?}"))
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
        let items = self.read();
        let mut users: Vec<(String, PortableUser)> = self
            .shard
            .users
            .iter()
            .filter(|(_, state)| state.touched > since)
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
        self.shard.users.remove(user_id);
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
            touched: 0,
        })
    }
}
