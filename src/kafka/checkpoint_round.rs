//! A `run` checkpoint of all workers (see `runtime::rounds`): each worker's part, and the
//! leader's write of the whole round — the changed users to the changelog, then every part
//! with the item side in one sled batch — whose outcome goes back to every member.

use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::oneshot;

use super::changelog::{send_records, ChangelogRecord};
use super::error::RunError;
use crate::engine::Engine;
use crate::runtime::checkpoint::{Cut, WorkerCut};
use crate::runtime::rounds::{Abandoned, Release, Rounds};
use crate::store::{CheckpointSize, StateStore};

/// What a worker hands in to a round.
pub(super) struct Part {
    pub cut: WorkerCut,
    /// The changelog topic and the records of the worker's changed users, with a changelog.
    pub changelog: Option<(String, Vec<ChangelogRecord>)>,
    /// Where the outcome of the round's write goes.
    pub done: oneshot::Sender<Result<CheckpointSize, RunError>>,
}

pub(super) type CheckpointRounds = Rounds<Part>;

/// Where a round's write goes.
pub(super) struct WriteTo {
    pub store: StateStore,
    pub topics: Vec<String>,
    pub producer: FutureProducer,
}

/// The leader's part of a round: cuts the item side while the others wait, lets them go, and
/// writes the round on another task.
pub(super) fn lead(engine: &Engine, parts: Vec<Part>, release: Release, to: WriteTo) {
    let items = engine.cut_items();
    drop(release);
    let mut cuts = Vec::with_capacity(parts.len());
    let mut changelog = Vec::new();
    let mut outcomes = Vec::with_capacity(parts.len());
    for part in parts {
        cuts.push(part.cut);
        changelog.extend(part.changelog);
        outcomes.push(part.done);
    }
    let cut = Cut::join(items, cuts, &to.topics);
    tokio::spawn(async move {
        let written = write(cut, changelog, to).await;
        // One member gets the error itself, the others that the round failed.
        let mut outcome = Some(written);
        for done in outcomes {
            let sent = match &outcome {
                Some(Ok(size)) => Ok(*size),
                _ => outcome.take().unwrap_or(Err(Abandoned.into())),
            };
            let _ = done.send(sent);
        }
    });
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
