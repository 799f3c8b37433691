//! The follower of the `model-updates` topic: every instance reads all of its partitions and
//! applies the other instances' item-model updates to its own replica (the item model its
//! workers share). Its own updates, already applied when they were made, are skipped by the
//! `streamrec-instance` header.
//!
//! Where it reads from: the positions the item model records (`ItemModel::followed`, moved under
//! the same write lock that applies each update, so a checkpoint of the item model holds exactly
//! the updates it reflects and a restart continues there); for a partition without a position,
//! the beginning — a fresh instance rebuilds what the others learned before it joined, as far as
//! the topic's retention keeps it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use super::client::{partition_count, replay_consumer_config};
use super::error::RunError;
use super::follow::behind;
use super::health::Health;
use crate::config::{Config, EngineConfig};
use crate::engine::{apply_update, SharedItems};
use crate::pipeline::{decode_update, INSTANCE_HEADER};

/// Assigns every partition of the topic and applies what other instances publish, until the
/// returned task is aborted.
pub fn follow(
    config: &Config,
    items: SharedItems,
    health: Arc<Health>,
) -> Result<JoinHandle<()>, RunError> {
    let kafka = &config.kafka;
    let group = format!("{}.model.{}", kafka.group_id, kafka.instance_id);
    let mut client = replay_consumer_config(kafka, &group);
    client.set("enable.partition.eof", "false");
    let consumer: StreamConsumer = client.create()?;
    let topic = kafka.model_updates_topic.clone();
    let partitions = partition_count(&consumer, &topic)?;
    if partitions == 0 {
        return Err(RunError::ModelUpdatesTopicMissing { topic });
    }
    let followed = items.read().expect("not poisoned").followed.clone();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        let start = followed
            .get(&partition)
            .map_or(Offset::Beginning, |&next| Offset::Offset(next));
        assignment.add_partition_offset(&topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    // Ready once what others published before this start is applied.
    let mut targets = BTreeMap::new();
    for partition in 0..partitions as i32 {
        let (_, high) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
        targets.insert(partition, high);
    }
    let mut catching_up = behind(&targets, &followed) > 0;
    health.set_model_behind(behind(&targets, &followed));
    let own = kafka.instance_id.clone();
    let engine = config.engine.clone();
    Ok(tokio::spawn(async move {
        let mut stream = consumer.stream();
        while let Some(message) = stream.next().await {
            match message {
                Ok(message) => apply_message(&message, &own, &items, &engine),
                Err(err) => tracing::warn!(error = %err, "model updates: consumer error"),
            }
            if catching_up {
                let followed = items.read().expect("not poisoned").followed.clone();
                let left = behind(&targets, &followed);
                health.set_model_behind(left);
                catching_up = left > 0;
            }
        }
    }))
}

fn apply_message(message: &impl Message, own: &str, items: &SharedItems, engine: &EngineConfig) {
    let from_self = message.headers().is_some_and(|headers| {
        headers
            .iter()
            .any(|h| h.key == INSTANCE_HEADER && h.value == Some(own.as_bytes()))
    });
    let decoded = (!from_self).then(|| decode_update(message.payload().unwrap_or_default()));
    let mut model = items
        .write()
        .expect("a worker panicked while updating the item model");
    match decoded {
        Some(Ok(update)) => apply_update(&mut model, &update, engine),
        Some(Err(err)) => tracing::warn!(
            partition = message.partition(),
            offset = message.offset(),
            error = %err,
            "model updates: undecodable message skipped"
        ),
        None => {}
    }
    // Under the same lock: a checkpoint sees the update and the position together.
    model
        .followed
        .insert(message.partition(), message.offset() + 1);
}
