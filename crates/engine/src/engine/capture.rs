//! A cut of a shard's users taken in steps while learning goes on: copy-on-write capture.
//!
//! At the cut's point (step `at`) every user changed since the previous cut (touched in
//! `since..=at`) belongs to it. They are looked up a few hundred at a time between inputs
//! (`Engine::continue_users_cut`), and any of them about to be written first is captured as it
//! is (`Capture::write`, the copy-on-write every change to a user goes through, and
//! `Capture::before_write` where one is dropped): once written, its `touched` is past `at`, so
//! the lookup skips it. Either way each user is captured with its state at the cut, so the cut
//! is the same as one taken at once, for a pause of a few hundred lookups instead of all of
//! them (~1 µs each in a map of a million users).

use std::sync::Arc;

use super::records::{ShardRest, UserCut};
use super::{DirtyUsers, Engine, UserState};

/// Users looked up per step of a cut: tens of microseconds, so a step before each input adds
/// little to its latency (the edge takes more steps while no input waits).
pub const USERS_PER_STEP: usize = 32;

/// The steps whose changes a cut holds: users touched after `since` and no later than `at`.
#[derive(Clone, Copy, Debug)]
struct Span {
    since: u64,
    at: u64,
}

impl Span {
    fn holds(self, user: &UserState) -> bool {
        user.touched > self.since && user.touched <= self.at
    }
}

#[derive(Clone)]
pub(crate) struct Capture {
    span: Span,
    /// Users changed before the cut not looked up yet.
    pending: Vec<Box<str>>,
    users: Vec<(Box<str>, Arc<UserState>)>,
    shard: ShardRest,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (pending, captured) = (self.pending.len(), self.users.len());
        let at = self.span.at;
        write!(
            f,
            "Capture(at {at}, {pending} pending, {captured} captured)"
        )
    }
}

impl Capture {
    /// Captures a user about to be dropped if the cut holds it and has not got it.
    pub(crate) fn before_write(capture: &mut Option<Capture>, id: &str, user: &Arc<UserState>) {
        if let Some(capture) = capture {
            if capture.span.holds(user) {
                capture.users.push((id.into(), user.clone()));
            }
        }
    }

    /// The user to write, copy-on-write: captured first if a cut under way still wants it
    /// as it is, then copied if a cut (this one or one being encoded) still holds it. Every
    /// change to a stored user goes through here.
    pub(crate) fn write<'a>(
        capture: &mut Option<Capture>,
        id: &str,
        user: &'a mut Arc<UserState>,
    ) -> &'a mut UserState {
        Capture::before_write(capture, id, user);
        Arc::make_mut(user)
    }
}

impl Engine {
    /// Starts a cut of this worker's users at this point (see the module doc); from here on
    /// they count as checkpointed. The rest of the shard is copied now. A cut already under
    /// way is finished first and returned.
    pub fn begin_users_cut(&mut self) -> Option<UserCut> {
        let unfinished = self.continue_users_cut(usize::MAX);
        let dirty = std::mem::replace(&mut self.shard.dirty, DirtyUsers::after_cut());
        let span = Span {
            since: self.shard.checkpointed,
            at: self.shard.steps,
        };
        // A list dropped for its length: the cut scans every user now.
        let (pending, users) = match dirty.overflowed {
            true => (Vec::new(), self.changed_users(Some(dirty))),
            false => (dirty.ids, Vec::new()),
        };
        self.shard.capture = Some(Capture {
            span,
            pending,
            users,
            shard: self.shard_rest(),
        });
        self.mark_users_checkpointed();
        unfinished
    }

    /// Looks up at most `budget` more users of the cut under way; the cut once it is complete
    /// (None: more to do, or no cut under way).
    pub fn continue_users_cut(&mut self, budget: usize) -> Option<UserCut> {
        let shard = &mut self.shard;
        let capture = shard.capture.as_mut()?;
        let span = capture.span;
        let start = capture.pending.len().saturating_sub(budget);
        let looked_up = capture.pending.drain(start..);
        let held = looked_up.filter_map(|id| {
            let user = shard.users.get(&id).filter(|user| span.holds(user))?;
            Some((id, user.clone()))
        });
        let held: Vec<_> = held.collect();
        capture.users.extend(held);
        if !capture.pending.is_empty() {
            return None;
        }
        let Capture { users, shard, .. } = self.shard.capture.take()?;
        Some(UserCut { users, shard })
    }

    /// Whether a cut of the users is under way.
    pub fn cutting_users(&self) -> bool {
        self.shard.capture.is_some()
    }
}
