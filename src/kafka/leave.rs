//! Leaving the consumer group at the end of a run, within a bound.
//!
//! librdkafka's close (what dropping a group consumer does) revokes the partitions, commits
//! what is stored and sends LeaveGroup, and has no time limit: a close caught in a rebalance
//! can wait on the group for as long as the broker holds the rebalance (with Tansu, a member
//! stopped just after a revoke waited more than 25 s, until `pipeline.shutdown_limit_ms` ended
//! the process with 75). The run and the item owners close their consumers on a thread of
//! their own and wait a bounded time: past it, they end without the close. What they did is
//! committed or checkpointed by then, so nothing is lost; the group moves the partitions at
//! its session timeout, as after a crash.

use std::time::{Duration, Instant};

/// The least time a run waits for its consumer's close, whatever is left of the drain budget.
const LEAVE_AT_LEAST: Duration = Duration::from_secs(5);

/// [`leave_group_blocking`] from the async run, on the runtime's blocking pool.
pub(super) async fn leave_group<C: Send + 'static>(consumer: C, by: Instant) -> bool {
    let leaving = tokio::task::spawn_blocking(move || leave_group_blocking(consumer, by));
    leaving.await.unwrap_or(false)
}

/// Drops `consumer` on a thread of its own and waits for that until `by` (or `LEAVE_AT_LEAST`
/// from now, if later). Returns whether the drop finished in time; if not, it goes on behind.
pub(super) fn leave_group_blocking<C: Send + 'static>(consumer: C, by: Instant) -> bool {
    let (closed, done) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new().name("leave-group".into());
    let spawned = closing.spawn(move || {
        drop(consumer);
        let _ = closed.send(());
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "no thread for the consumer's close: the group is left at exit");
        return false;
    }
    let limit = by
        .saturating_duration_since(Instant::now())
        .max(LEAVE_AT_LEAST);
    let left = done.recv_timeout(limit).is_ok();
    if !left {
        tracing::warn!(
            waited_ms = limit.as_millis() as u64,
            "a consumer's close did not finish (a rebalance holds it): ending without it; what \
             was done is committed or checkpointed, and the group moves the partitions at its \
             session timeout"
        );
    }
    left
}

/// Shuts `runtime` down, waiting for its tasks at most `LEAVE_AT_LEAST`. After a run that
/// ended on an error, tasks still draining hold the group consumer: the last one to end
/// closes it in its drop, and an unbounded wait there would keep the process from exiting
/// (no shutdown limit runs without a signal). Past the bound, those tasks are left behind.
pub fn shut_down_within_bound(runtime: tokio::runtime::Runtime) {
    runtime.shutdown_timeout(LEAVE_AT_LEAST);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose drop takes as long as it says.
    struct SlowClose(Duration);

    impl Drop for SlowClose {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
        }
    }

    #[tokio::test]
    async fn a_close_that_hangs_is_left_behind_at_the_bound() {
        let started = Instant::now();
        let hanging = SlowClose(Duration::from_secs(60));
        let by = started + LEAVE_AT_LEAST + Duration::from_millis(500);
        assert!(!leave_group(hanging, by).await);
        let waited = started.elapsed();
        assert!(
            waited >= LEAVE_AT_LEAST && waited < LEAVE_AT_LEAST + Duration::from_secs(5),
            "waited {waited:?}"
        );
    }

    #[test]
    fn a_thread_of_its_own_leaves_a_hanging_close_behind_too() {
        let started = Instant::now();
        assert!(!leave_group_blocking(
            SlowClose(Duration::from_secs(60)),
            started
        ));
        assert!(started.elapsed() < LEAVE_AT_LEAST + Duration::from_secs(5));
        assert!(leave_group_blocking(
            SlowClose(Duration::ZERO),
            Instant::now()
        ));
    }

    #[test]
    fn a_runtime_whose_task_holds_a_hanging_close_shuts_down_at_the_bound() {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let holder = SlowClose(Duration::from_secs(60));
        runtime.spawn(async move {
            // Never finishes: dropped at the shutdown, as a draining worker's future is.
            let _held = holder;
            std::future::pending::<()>().await;
        });
        let started = Instant::now();
        shut_down_within_bound(runtime);
        let waited = started.elapsed();
        assert!(
            waited >= LEAVE_AT_LEAST && waited < LEAVE_AT_LEAST + Duration::from_secs(5),
            "waited {waited:?}"
        );
    }

    #[tokio::test]
    async fn a_prompt_close_is_waited_for() {
        let started = Instant::now();
        assert!(leave_group(SlowClose(Duration::from_millis(200)), started).await);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < LEAVE_AT_LEAST,
            "waited {waited:?}"
        );
    }
}
