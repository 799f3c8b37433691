//! Aligned checkpoints of one process's workers: a *round* stops every worker at its next turn,
//! each hands in its part (its users and the offsets of its partitions), and the last to
//! arrive — the leader — cuts the shared item side while the others still wait, then lets them
//! go. Nothing is applied between the first part and the item cut, so the parts and the item
//! side describe one point of the stream: every partition's offset and the item model that
//! exactly those events built.
//!
//! A round costs what a cut costs (O(changed), see `engine::Changes`) plus the time the
//! slowest worker needs to reach its next turn. Members leave for good when they stop; a round
//! waiting only for a leaver completes with the leaver as leader. A member that fails aborts:
//! waiting members get an error instead of waiting forever.

use std::sync::Mutex;

use tokio::sync::{oneshot, watch};

/// A round cannot complete: a member stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("a checkpoint round was abandoned: another worker stopped")]
pub struct Abandoned;

pub struct Rounds<P> {
    state: Mutex<RoundsState<P>>,
    /// The number of the latest round called: members watch it and join at their next turn.
    called: watch::Sender<u64>,
}

struct RoundsState<P> {
    members: usize,
    /// Whether a round is being gathered.
    open: bool,
    parts: Vec<P>,
    /// Members that handed in their part, released once the leader has cut.
    waiting: Vec<oneshot::Sender<()>>,
    abandoned: bool,
}

/// What a member's arrival makes it.
pub enum Arrival<P> {
    /// The last to arrive: every part (in arrival order); cut the shared side, then drop the
    /// release to let the others go.
    Leader(Vec<P>, Release),
    /// Wait for the leader's release (an error: the round was abandoned).
    Follower(oneshot::Receiver<()>),
}

/// Lets the waiting members go when dropped.
pub struct Release(Vec<oneshot::Sender<()>>);

impl Drop for Release {
    fn drop(&mut self) {
        for waiting in self.0.drain(..) {
            let _ = waiting.send(());
        }
    }
}

impl<P> Rounds<P> {
    pub fn new(members: usize) -> Rounds<P> {
        Rounds {
            state: Mutex::new(RoundsState {
                members,
                open: false,
                parts: Vec::new(),
                waiting: Vec::new(),
                abandoned: false,
            }),
            called: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoundsState<P>> {
        self.state.lock().expect("not poisoned")
    }

    /// A member's view of the calls: `changed()` resolves when a round is called.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.called.subscribe()
    }

    /// Calls a round unless one is being gathered; the caller then arrives itself. Marks the
    /// caller's `seen` up to it, so its watch does not call it twice.
    pub fn call(&self, seen: &mut watch::Receiver<u64>) {
        let mut state = self.lock();
        if !state.open {
            state.open = true;
            self.called.send_modify(|round| *round += 1);
        }
        drop(state);
        seen.borrow_and_update();
    }

    /// Whether a round is being gathered (a member whose watch fired joins it).
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Hands in a member's part of the open round.
    pub fn arrive(&self, part: P) -> Result<Arrival<P>, Abandoned> {
        let mut state = self.lock();
        if state.abandoned {
            return Err(Abandoned);
        }
        state.open = true;
        state.parts.push(part);
        if state.parts.len() < state.members {
            let (release, released) = oneshot::channel();
            state.waiting.push(release);
            return Ok(Arrival::Follower(released));
        }
        let (parts, release) = Self::complete(&mut state);
        Ok(Arrival::Leader(parts, release))
    }

    /// A member stops taking part (it applies nothing more). When the open round waited only
    /// for it, it leads that round: the parts and the release come back.
    pub fn leave(&self) -> Option<(Vec<P>, Release)> {
        let mut state = self.lock();
        state.members = state.members.saturating_sub(1);
        let ready = state.open && !state.parts.is_empty();
        (ready && state.parts.len() >= state.members).then(|| Self::complete(&mut state))
    }

    /// A member failed: waiting members are woken with an error, later arrivals refused.
    pub fn abandon(&self) {
        let mut state = self.lock();
        state.abandoned = true;
        state.waiting.clear();
    }

    fn complete(state: &mut RoundsState<P>) -> (Vec<P>, Release) {
        state.open = false;
        let parts = std::mem::take(&mut state.parts);
        (parts, Release(std::mem::take(&mut state.waiting)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn follower<P>(arrival: Arrival<P>) -> oneshot::Receiver<()> {
        match arrival {
            Arrival::Follower(released) => released,
            Arrival::Leader(..) => panic!("not the last to arrive"),
        }
    }

    #[tokio::test]
    async fn the_last_to_arrive_leads_and_the_others_wait_for_its_release() {
        let rounds = Rounds::new(3);
        let (mut a, b) = (rounds.watch(), rounds.watch());
        rounds.call(&mut a);
        assert!(!a.has_changed().unwrap(), "the caller does not join twice");
        assert!(b.has_changed().unwrap(), "the others are called");
        let mut first = follower(rounds.arrive("a").unwrap());
        let second = follower(rounds.arrive("b").unwrap());
        let Arrival::Leader(parts, release) = rounds.arrive("c").unwrap() else {
            panic!("the last leads");
        };
        assert_eq!(parts, ["a", "b", "c"]);
        assert!(first.try_recv().is_err(), "held until the leader has cut");
        drop(release);
        first.await.unwrap();
        second.await.unwrap();
        assert!(!rounds.is_open());
    }

    #[tokio::test]
    async fn a_round_waiting_only_for_a_leaver_is_led_by_it() {
        let rounds = Rounds::new(2);
        let mut a = rounds.watch();
        rounds.call(&mut a);
        let waiting = follower(rounds.arrive(1).unwrap());
        let (parts, release) = rounds.leave().expect("the leaver completes the round");
        assert_eq!(parts, [1]);
        drop(release);
        waiting.await.unwrap();
        // Alone now: the remaining member leads its own rounds.
        rounds.call(&mut a);
        assert!(matches!(rounds.arrive(2).unwrap(), Arrival::Leader(..)));
    }

    #[tokio::test]
    async fn an_abandoned_round_wakes_the_waiting_with_an_error() {
        let rounds = Arc::new(Rounds::new(2));
        let mut a = rounds.watch();
        rounds.call(&mut a);
        let waiting = follower(rounds.arrive(()).unwrap());
        rounds.abandon();
        assert!(waiting.await.is_err());
        assert!(rounds.arrive(()).is_err(), "nobody waits after that");
    }

    #[test]
    fn a_leaver_with_no_round_open_only_shrinks_the_rounds() {
        let rounds: Rounds<u8> = Rounds::new(2);
        assert!(rounds.leave().is_none());
        let mut a = rounds.watch();
        rounds.call(&mut a);
        assert!(matches!(rounds.arrive(7).unwrap(), Arrival::Leader(..)));
    }
}
