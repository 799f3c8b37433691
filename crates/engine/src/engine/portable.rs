//! User state another instance can restore: what the changelog carries when a partition moves.
//! Items and categories travel by name (each instance interns them in its own order); the
//! segment is recomputed from the attributes.
//!
//! Waiting trigger state, impressions and dismissals, and the list the user was last shown
//! (for online metrics) travel too, after the rest and only when there is some: a tail of
//! tagged sections, so that a build skips the sections of a later one. A record without a tail
//! is one of a user with none of them (or an earlier build's); a tail without the sections
//! marker is the bare trigger state the build before sections wrote.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    decode_prefix, decode_within, encode, intern_item, Capture, DecodeError, Engine, Position,
    UserState, SMALL_RECORD_LIMIT,
};
use crate::feedback::PortableFeedback;
use crate::intern::{Name, Naming};
use crate::online::PortableShown;
use crate::profile::{PortableProfile, UserProfile};
use crate::segments::segment_name;
use crate::triggers::PortableTriggers;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortableUser {
    pub profile: PortableProfile,
    pub factors: Vec<f32>,
    pub attributes: Vec<(String, String)>,
    pub position: Option<Position>,
    /// Encoded after the rest, and only when not empty (as is `feedback`).
    #[serde(skip)]
    pub triggers: PortableTriggers,
    #[serde(skip)]
    pub feedback: PortableFeedback,
    #[serde(skip)]
    pub shown: Option<PortableShown>,
}

/// Starts a tail of sections: a byte that no bare trigger tail starts with (its first byte
/// is a varint length, and bincode's varints never start with 0xFF).
const SECTIONS: u8 = 0xFF;
/// Section tags. A section of a tag a build does not know (a later build's) is skipped.
const TRIGGERS: u8 = 1;
const FEEDBACK: u8 = 2;
const SHOWN: u8 = 3;

impl PortableUser {
    pub fn encode(&self) -> Vec<u8> {
        let mut sections: Vec<(u8, Vec<u8>)> = Vec::new();
        if !self.triggers.is_empty() {
            sections.push((TRIGGERS, encode(&self.triggers)));
        }
        if !self.feedback.is_empty() {
            sections.push((FEEDBACK, encode(&self.feedback)));
        }
        if let Some(shown) = &self.shown {
            sections.push((SHOWN, encode(shown)));
        }
        let mut bytes = encode(self);
        if !sections.is_empty() {
            bytes.push(SECTIONS);
            sections
                .iter()
                .for_each(|section| bytes.extend(encode(section)));
        }
        bytes
    }

    pub fn decode(bytes: &[u8], user_id: &str) -> Result<PortableUser, DecodeError> {
        let what = format!("changelog record of user {user_id:?}");
        let (mut user, read) = decode_prefix::<PortableUser, SMALL_RECORD_LIMIT>(bytes, &what)?;
        match bytes[read..].split_first() {
            None => {}
            Some((&SECTIONS, sections)) => user.read_sections(sections, &what)?,
            Some(_) => {
                user.triggers = decode_within::<_, SMALL_RECORD_LIMIT>(&bytes[read..], &what)?
            }
        }
        Ok(user)
    }

    fn read_sections(&mut self, mut rest: &[u8], what: &str) -> Result<(), DecodeError> {
        while !rest.is_empty() {
            let ((tag, section), read) =
                decode_prefix::<(u8, Vec<u8>), SMALL_RECORD_LIMIT>(rest, what)?;
            rest = &rest[read..];
            match tag {
                TRIGGERS => self.triggers = decode_within::<_, SMALL_RECORD_LIMIT>(&section, what)?,
                FEEDBACK => self.feedback = decode_within::<_, SMALL_RECORD_LIMIT>(&section, what)?,
                SHOWN => self.shown = Some(decode_within::<_, SMALL_RECORD_LIMIT>(&section, what)?),
                _ => {}
            }
        }
        Ok(())
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
                let names = Naming {
                    item: |i| items.ids.name(i).to_owned(),
                    category: |c| items.categories.name(c).to_owned(),
                };
                let profile = state.profile.to_portable(names.item, names.category);
                let feedback = state.feedback.as_deref();
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
                        &names,
                    ),
                    feedback: feedback.map_or_else(PortableFeedback::default, |memory| {
                        PortableFeedback::new(memory, &names)
                    }),
                    shown: (state.shown.as_deref())
                        .map(|shown| PortableShown::new(shown, names.item)),
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
        let mut intern = |name: Name<'_>| match name {
            Name::Item(id) => intern_item(items, id, config).0,
            Name::Category(name) => items.categories.intern(name),
        };
        let triggers = portable.triggers.localize(
            (user_id, stream),
            &mut self.shard.triggers,
            &rules.rules,
            &mut intern,
        );
        let feedback = (!portable.feedback.is_empty())
            .then(|| Box::new(portable.feedback.localize(&config.feedback, &mut intern)));
        let shown = portable
            .shown
            .as_ref()
            .map(|shown| Box::new(shown.localize(&config.online, |id| intern(Name::Item(id)))));
        let state = UserState {
            profile,
            factors: portable.factors.clone().into_boxed_slice(),
            attributes,
            segment,
            triggers,
            position: portable.position,
            stream,
            feedback,
            touched: 0,
            shown,
        };
        let record = super::records::encode_user(&state);
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
    use crate::event::{Event, EventType, Feedback};

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

    /// Users u0..u9 view x, y and z in turns, after `first` viewed `first_item`: an engine that
    /// interns in the order `first_item` gives.
    fn shop(first_item: &str) -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        engine.apply(&Event::new(EventType::View, "first", first_item, 0));
        for u in 0..10 {
            for (i, item) in ["x", "y", "z"].iter().enumerate() {
                let ts = 10 + u * 10 + i as i64;
                engine.apply(&Event::new(EventType::View, &format!("u{u}"), item, ts));
            }
        }
        engine
    }

    fn listed(engine: &Engine, user: &str) -> Vec<String> {
        let list = engine.recommend(user, 10, &crate::ranking::Filters::default());
        list.iter()
            .map(|s| engine.item_id(s.item).to_owned())
            .collect()
    }

    fn feedback(user: &str, ts_ms: i64, kind: crate::event::FeedbackKind) -> Feedback {
        Feedback {
            user_id: user.into(),
            ts_ms,
            kind,
        }
    }

    /// A user dismissed y and was shown z three times without a touch: on a new owner that
    /// interns items in another order, y stays out of their list and z stays demoted.
    #[test]
    fn impressions_and_dismissals_move_with_the_user() {
        use crate::event::FeedbackKind::{Dismiss, Impression};
        let mut owner = shop("x");
        owner.apply(&Event::new(EventType::View, "me", "x", 1_000));
        let y = Dismiss {
            item_id: "y".into(),
            category: false,
        };
        owner.apply_feedback(&feedback("me", 2_000, y));
        for n in 0..3 {
            let z = Impression {
                item_ids: vec!["z".into()],
            };
            owner.apply_feedback(&feedback("me", 2_001 + n, z));
        }
        owner.record_position("me", Position { stream: 1, seq: 5 });
        let portable = portable_of(&mut owner, "me");
        assert!(!portable.feedback.is_empty());
        let moved = PortableUser::decode(&portable.encode(), "me").unwrap();
        assert_eq!(moved, portable);

        let mut other = shop("z");
        assert_ne!(other.item_index("y"), owner.item_index("y"));
        let record = other.localize_user("me", &moved);
        other.insert_user("me", &record).unwrap();
        let list = listed(&other, "me");
        assert!(!list.contains(&"y".to_owned()), "y was dismissed: {list:?}");
        assert_eq!(
            list.last().map(String::as_str),
            Some("z"),
            "z is demoted: {list:?}"
        );
        assert_eq!(list, listed(&owner, "me"));
    }

    /// A user was shown a list and viewed its first item: on a new owner that interns items
    /// in another order, their view of the second is judged a hit at rank 2, and a purchase of
    /// the first (engaged on the old owner, no longer in the list) a conversion.
    #[test]
    fn the_list_last_shown_moves_with_the_user() {
        let mut owner = shop("x");
        owner.apply(&Event::new(EventType::View, "me", "x", 1_000));
        let list = owner.recommend("me", 10, &crate::ranking::Filters::default());
        owner.show("me", &list);
        let names: Vec<String> = list
            .iter()
            .map(|s| owner.item_id(s.item).to_owned())
            .collect();
        assert!(names.len() >= 2, "{names:?}");
        owner.apply(&Event::new(EventType::View, "me", &names[0], 1_001));
        owner.record_position("me", Position { stream: 1, seq: 5 });
        let portable = portable_of(&mut owner, "me");
        let moved = PortableUser::decode(&portable.encode(), "me").unwrap();
        assert_eq!(moved, portable);

        let mut other = shop("z");
        assert_ne!(other.item_index(&names[1]), owner.item_index(&names[1]));
        let record = other.localize_user("me", &moved);
        other.insert_user("me", &record).unwrap();
        other.apply(&Event::new(EventType::View, "me", &names[1], 1_002));
        let counts = other.online_counts();
        assert_eq!((counts.judged, counts.hits), (1, 1));
        assert_eq!(counts.reciprocal_rank, 0.5);
        other.show("me", &[]);
        other.apply(&Event::new(EventType::Purchase, "me", &names[0], 1_003));
        assert_eq!(other.online_counts().conversions, 1);
    }

    /// Records of the build before sections (a bare trigger tail) still read; a section of a
    /// tag this build does not know (a later build's) is skipped; a cut section is refused.
    #[test]
    fn tails_of_earlier_and_later_builds_read() {
        let mut owner = engine_with_rules();
        on(&mut owner, EventType::AddToCart, ("u", "boot"), 1_000);
        let portable = portable_of(&mut owner, "u");
        assert!(!portable.triggers.is_empty());
        let mut bare = encode(&portable);
        bare.extend(encode(&portable.triggers));
        assert_eq!(PortableUser::decode(&bare, "u").unwrap(), portable);
        let mut later = portable.encode();
        later.extend(encode(&(9u8, vec![1u8, 2, 3])));
        assert_eq!(PortableUser::decode(&later, "u").unwrap(), portable);
        let mut cut = portable.encode();
        cut.pop();
        assert!(PortableUser::decode(&cut, "u").is_err());
    }
}
