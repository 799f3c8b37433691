//! What the followers of a whole topic share (the item records, the catalog): a consumer
//! outside any group with every partition assigned from its start, how far it is from the
//! ends the partitions had then, and the thread it runs on until told to stop (the item owners
//! run on one too).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{partition_count, replay_consumer_config};
use super::error::RunError;
use crate::config::KafkaConfig;

/// A consumer over every partition of `topic` from its start, named `<group_id>.<role>.<pid>`
/// (it never commits), and the catch-up to the partitions' ends as they are now.
pub fn from_start(
    kafka: &KafkaConfig,
    role: &str,
    topic: &str,
) -> Result<(BaseConsumer, CatchUp), RunError> {
    let group = format!("{}.{role}.{}", kafka.group_id, std::process::id());
    let mut client = replay_consumer_config(kafka, &group);
    client.set("enable.partition.eof", "false");
    let consumer: BaseConsumer = client.create()?;
    let mut assignment = TopicPartitionList::new();
    let mut targets = BTreeMap::new();
    for partition in 0..partition_count(&consumer, topic)? as i32 {
        assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        if high > low {
            targets.insert(partition, high);
        }
    }
    consumer.assign(&assignment)?;
    Ok((consumer, CatchUp::new(targets)))
}

/// How many messages a follower has left before the ends its partitions had at its start.
pub struct CatchUp {
    targets: BTreeMap<i32, i64>,
    read: BTreeMap<i32, i64>,
    left: u64,
}

impl CatchUp {
    fn new(targets: BTreeMap<i32, i64>) -> CatchUp {
        let left = behind(&targets, &BTreeMap::new());
        CatchUp {
            targets,
            read: BTreeMap::new(),
            left,
        }
    }

    /// Notes a message read (nothing once caught up: it stays caught up).
    pub fn read(&mut self, partition: i32, offset: i64) {
        if self.left > 0 {
            self.read.insert(partition, offset + 1);
            self.left = behind(&self.targets, &self.read);
        }
    }

    pub fn left(&self) -> u64 {
        self.left
    }

    pub fn done(&self) -> bool {
        self.left == 0
    }
}

/// Messages between each partition's position and its target, summed (the catch-ups of the followers
/// and of `model-updates`).
pub(super) fn behind(targets: &BTreeMap<i32, i64>, followed: &BTreeMap<i32, i64>) -> u64 {
    targets
        .iter()
        .map(|(partition, &target)| {
            let at = followed.get(partition).copied().unwrap_or(0);
            (target - at).max(0) as u64
        })
        .sum()
}

/// A thread that runs until told to stop.
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), RunError>>,
    /// What it is, for the error if it panicked.
    what: &'static str,
}

impl Background {
    /// Runs `run` on a thread named `name`; `run` returns once the flag it is given is set.
    pub fn spawn(
        name: &str,
        what: &'static str,
        run: impl FnOnce(&AtomicBool) -> Result<(), RunError> + Send + 'static,
    ) -> Result<Background, RunError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&stopping))
            .map_err(RunError::Thread)?;
        Ok(Background { stop, thread, what })
    }

    /// Tells it to stop and waits for its result.
    pub fn stop(self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::Relaxed);
        (self.thread.join()).map_err(|_| RunError::ThreadPanicked(self.what))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_up_ends_at_the_targets_and_stays_done() {
        let mut catch_up = CatchUp::new([(0, 10), (1, 4)].into());
        assert_eq!(catch_up.left(), 14);
        catch_up.read(0, 6);
        assert_eq!(catch_up.left(), 7);
        catch_up.read(1, 3);
        catch_up.read(0, 9);
        assert!(catch_up.done());
        catch_up.read(0, 2);
        assert!(
            catch_up.done(),
            "an earlier offset read later changes nothing"
        );
        assert!(CatchUp::new(BTreeMap::new()).done(), "an empty topic");
    }

    #[test]
    fn behind_counts_what_is_left_up_to_the_targets() {
        let targets: BTreeMap<i32, i64> = [(0, 10), (1, 4), (2, 0)].into();
        assert_eq!(behind(&targets, &BTreeMap::new()), 14, "nothing read yet");
        let followed: BTreeMap<i32, i64> = [(0, 7), (1, 9)].into();
        assert_eq!(
            behind(&targets, &followed),
            3,
            "partition 1 is past its target"
        );
        let done: BTreeMap<i32, i64> = [(0, 10), (1, 4)].into();
        assert_eq!(behind(&targets, &done), 0);
    }
}
