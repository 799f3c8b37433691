//! A `run` checkpoint of all workers (see `runtime::rounds`): each worker's part, and the
//! leader's write of the whole round — the changed users to the changelog, then every part
//! with the item side in one sled batch — whose outcome goes back to every member.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::oneshot;

use super::changelog::{send_records, ChangelogRecord};
use super::error::RunError;
use crate::admin::Metrics;
use crate::engine::{Engine, UserCut};
use crate::offsets::NextOffsets;
use crate::runtime::checkpoint::{Cut, WorkerCut};
use crate::runtime::rounds::{Abandoned, Release, Rounds};
use crate::store::{CheckpointSize, StateStore};

/// What a worker hands in to a round.
pub(super) struct Part {
    pub worker: usize,
    /// The positions of the worker's partitions at the cut.
    pub covers: NextOffsets,
    /// The worker's users at the cut, once looked up (in steps, after the round).
    pub users: oneshot::Receiver<UserCut>,
    /// The changelog topic and the records of the worker's changed users, with a changelog.
    pub changelog: Option<(String, Vec<ChangelogRecord>)>,
    /// Where the outcome of the round's write goes.
    pub done: oneshot::Sender<Result<CheckpointSize, RunError>>,
}

pub(super) type CheckpointRounds = Rounds<Part>;

/// Where a round's write goes, and what it reports to.
pub(super) struct WriteTo {
    pub store: StateStore,
    pub topics: Vec<String>,
    pub producer: FutureProducer,
    pub metrics: Arc<Metrics>,
}

/// The leader's part of a round: cuts the item side while the others wait, lets them go, and
/// writes the round on another task.
pub(super) fn lead(engine: &Engine, parts: Vec<Part>, release: Release, to: WriteTo) {
    let started = Instant::now();
    let items = engine.cut_items();
    drop(release);
    let mut users = Vec::with_capacity(parts.len());
    let mut changelog = Vec::new();
    let mut outcomes = Vec::with_capacity(parts.len());
    for part in parts {
        users.push((part.worker, part.covers, part.users));
        changelog.extend(part.changelog);
        outcomes.push(part.done);
    }
    tokio::spawn(async move {
        let metrics = to.metrics.clone();
        let written = match gather(users).await {
            Ok(cuts) => write(Cut::join(items, cuts, &to.topics), changelog, to).await,
            Err(abandoned) => Err(abandoned.into()),
        };
        let mut outcomes = outcomes.into_iter();
        match written {
            Ok(size) => {
                metrics
                    .checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
                for done in outcomes {
                    let _ = done.send(Ok(size));
                }
            }
            // One member gets the error itself, the others that the round failed.
            Err(err) => {
                if let Some(first) = outcomes.next() {
                    let _ = first.send(Err(err));
                }
                for done in outcomes {
                    let _ = done.send(Err(Abandoned.into()));
                }
            }
        }
    });
}

/// Every worker's users at the cut, as each completes them.
async fn gather(
    parts: Vec<(usize, NextOffsets, oneshot::Receiver<UserCut>)>,
) -> Result<Vec<WorkerCut>, Abandoned> {
    let mut cuts = Vec::with_capacity(parts.len());
    for (worker, covers, users) in parts {
        let users = users.await.map_err(|_| Abandoned)?;
        cuts.push(WorkerCut::new(worker, users, covers));
    }
    Ok(cuts)
}

/// Changed users to the changelog first, the checkpoint next, then the changelog's acks: a
/// checkpoint is durable only once both are.
async fn write(
    cut: Cut,
    changelog: Vec<(String, Vec<ChangelogRecord>)>,
    to: WriteTo,
) -> Result<CheckpointSize, RunError> {
    let mut acks = Vec::new();
    for (topic, records) in &changelog {
        let sent = send_records(&to.producer, topic, records).await;
        acks.extend(sent.map_err(RunError::Changelog)?);
    }
    let store = to.store;
    let written = tokio::task::spawn_blocking(move || cut.write(&store));
    let (size, _) = written.await.map_err(RunError::Panicked)??;
    for ack in acks {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err((err, _))) => return Err(RunError::Changelog(err)),
            Err(_) => return Err(RunError::Changelog(KafkaError::Canceled)),
        }
    }
    Ok(size)
}
