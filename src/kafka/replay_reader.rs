//! The reading side of a replay, on its own thread: partitions assigned by hand, merged by
//! Kafka timestamp (`merge`), cleaned in that order, and handed to the engine in batches through
//! a bounded channel (a slow engine stops the reading: backpressure).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::client::replay_consumer_config;
use super::client::ReplayContext;
use super::error::ReplayError;
use crate::clean::{Cleaner, Rejection};
use crate::config::Config;
use crate::event::Input;
use crate::merge::{Merge, PartitionKey, Step};
use crate::offsets::NextOffsets;
use crate::offsets::Waiter;
use crate::pipeline::{clean_record, Record};
use crate::replay_plan::{StartAt, StopAt};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one partition is waited for before the consumer's own events are served.
const FILL_WAIT: Duration = Duration::from_millis(100);
/// How long a partition may stay silent (no message, no end) before the operator is told.
const STALL_WARNING: Duration = Duration::from_secs(10);
/// Items per batch handed to the engine.
const BATCH: usize = 512;
/// Batches waiting for the engine before reading stops.
pub(super) const BATCHES_IN_FLIGHT: usize = 16;

type Queue = rdkafka::consumer::base_consumer::PartitionQueue<ReplayContext>;
type ReplayConsumer = BaseConsumer<ReplayContext>;

/// What the engine side receives, in the order to apply it.
pub(super) enum Item {
    Message {
        key: PartitionKey,
        offset: i64,
        timestamp_ms: Option<i64>,
        /// The event, or the rule it broke and the payload for the dead letters.
        cleaned: Result<Input, (Rejection, Option<Vec<u8>>)>,
    },
    /// Where a partition continues after messages that are not applied (before `--from`, at
    /// `--to`, or none at all).
    Next { key: PartitionKey, offset: i64 },
}

/// The consumer, assigned and split into partition queues, ready to read.
pub(super) struct ReplayReader {
    consumer: Arc<ReplayConsumer>,
    queues: BTreeMap<PartitionKey, Queue>,
    partitions: Vec<PartitionKey>,
    inputs: Vec<String>,
    from: StartAt,
    to: StopAt,
    cleaner: Cleaner,
    catalog_topic: String,
    /// Next offsets known before reading (explicit or time-resolved starts).
    known: NextOffsets,
    /// Messages between the read positions and the partitions' ends, refreshed every few seconds.
    pub lag: Arc<AtomicU64>,
}

impl ReplayReader {
    pub fn open(config: &Config, from: &StartAt, to: StopAt) -> Result<ReplayReader, ReplayError> {
        let inputs = &config.kafka.consumed_topics();
        let group = format!("{}.replay", config.kafka.group_id);
        let consumer: Arc<ReplayConsumer> = Arc::new(
            replay_consumer_config(&config.kafka, &group).create_with_context(ReplayContext)?,
        );
        let partitions = partitions(&consumer, inputs, &config.kafka.brokers)?;
        let (assignment, known) = start_positions(&consumer, inputs, &partitions, from)?;
        consumer.assign(&assignment)?;
        let queues = split_queues(&consumer, inputs, &partitions)?;
        Ok(ReplayReader {
            consumer,
            queues,
            partitions,
            inputs: inputs.clone(),
            from: from.clone(),
            to,
            cleaner: Cleaner::new(config.engine.clean.clone()),
            catalog_topic: config.kafka.catalog_topic.clone(),
            known,
            lag: Arc::default(),
        })
    }

    /// Reads until every partition ended, `stop` is set, or the engine side hangs up.
    pub fn run(self, items: SyncSender<Vec<Item>>, stop: &AtomicBool) -> Result<(), ReplayError> {
        let mut reader = Reader {
            consumer: &self.consumer,
            queues: &self.queues,
            inputs: &self.inputs,
            to: self.to,
            before: match self.from {
                StartAt::Time(ms) => self.partitions.iter().map(|&k| (k, ms)).collect(),
                _ => BTreeMap::new(),
            },
            waiting: None,
        };
        let mut next = self.known.clone();
        let mut batch: Vec<Item> = self
            .known
            .iter()
            .map(|(&key, &offset)| Item::Next { key, offset })
            .collect();
        let mut merge: Merge<OwnedMessage> = Merge::new(self.partitions.iter().copied());
        let mut last_lag = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            match merge.next_step() {
                Step::Done => break,
                Step::Fill(key) => {
                    let waited = reader.fill(key, &mut merge, &mut next, &mut batch)?;
                    // Waiting on the broker: let the engine work on what is read so far.
                    if waited && !batch.is_empty() && !send(&items, &mut batch) {
                        return Ok(());
                    }
                }
                Step::Emit(key, message) => {
                    next.insert(key, message.offset() + 1);
                    let payload = message.payload();
                    let record = Record {
                        source: Waiter {
                            topic: key.topic,
                            partition: key.partition,
                            offset: message.offset(),
                        },
                        topic: &self.inputs[key.topic as usize],
                        key: message.key(),
                        payload,
                        timestamp_ms: message.timestamp().to_millis(),
                    };
                    batch.push(Item::Message {
                        key,
                        offset: message.offset(),
                        timestamp_ms: record.timestamp_ms,
                        cleaned: clean_record(&self.cleaner, &self.catalog_topic, &record)
                            .map_err(|reason| (reason, payload.map(<[u8]>::to_vec))),
                    });
                    if batch.len() >= BATCH && !send(&items, &mut batch) {
                        return Ok(());
                    }
                }
            }
            if last_lag.elapsed() >= Duration::from_secs(2) {
                last_lag = Instant::now();
                let behind = lag(&self.consumer, &self.inputs, &next);
                self.lag.store(behind, Ordering::Relaxed);
            }
        }
        if !stop.load(Ordering::Relaxed) {
            let ends = unreached(
                &self.consumer,
                &self.inputs,
                &self.partitions,
                &self.from,
                &next,
            )?;
            for (key, offset) in ends {
                batch.push(Item::Next { key, offset });
            }
        }
        send(&items, &mut batch);
        Ok(())
    }
}

/// Hands the batch over; false when the engine side is gone.
fn send(items: &SyncSender<Vec<Item>>, batch: &mut Vec<Item>) -> bool {
    items
        .send(std::mem::replace(batch, Vec::with_capacity(BATCH)))
        .is_ok()
}

/// Every partition of every input topic, as (topic index, partition).
fn partitions(
    consumer: &ReplayConsumer,
    inputs: &[String],
    brokers: &str,
) -> Result<Vec<PartitionKey>, ReplayError> {
    let mut keys = Vec::new();
    for (index, topic) in inputs.iter().enumerate() {
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                keys.extend(
                    t.partitions()
                        .iter()
                        .map(|p| PartitionKey::new(index as u16, p.id())),
                );
            }
            _ => {
                return Err(ReplayError::MissingTopic {
                    topic: topic.clone(),
                    brokers: brokers.to_owned(),
                })
            }
        }
    }
    Ok(keys)
}

/// The assignment, and the next offset of each partition where it is already known.
fn start_positions(
    consumer: &ReplayConsumer,
    inputs: &[String],
    partitions: &[PartitionKey],
    from: &StartAt,
) -> Result<(TopicPartitionList, NextOffsets), ReplayError> {
    let mut assignment = TopicPartitionList::new();
    let mut next = NextOffsets::new();
    let several = inputs.len() > 1;
    let by_time = match from {
        StartAt::Time(ms) => Some(offsets_at(consumer, inputs, partitions, *ms)?),
        _ => None,
    };
    for &PartitionKey {
        topic: index,
        partition,
    } in partitions
    {
        let topic = &inputs[index as usize];
        let offset = match (from, &by_time) {
            (StartAt::Earliest, _) => Offset::Beginning,
            (StartAt::Offsets(offsets), _) => {
                Offset::Offset(StartAt::offset_of(offsets, topic, partition, several)?)
            }
            (StartAt::Time(_), Some(found)) => found[&PartitionKey::new(index, partition)],
            (StartAt::Time(_), None) => unreachable!("looked up above"),
        };
        if let Offset::Offset(o) = offset {
            next.insert(PartitionKey::new(index, partition), o);
        }
        assignment.add_partition_offset(topic, partition, offset)?;
    }
    Ok((assignment, next))
}

/// The first offset at or after `ms` per partition (the end where no message is that late).
fn offsets_at(
    consumer: &ReplayConsumer,
    inputs: &[String],
    partitions: &[PartitionKey],
    ms: i64,
) -> Result<BTreeMap<PartitionKey, Offset>, ReplayError> {
    let mut wanted = TopicPartitionList::new();
    for &PartitionKey {
        topic: index,
        partition,
    } in partitions
    {
        wanted.add_partition_offset(&inputs[index as usize], partition, Offset::Offset(ms))?;
    }
    let found = consumer.offsets_for_times(wanted, METADATA_TIMEOUT)?;
    tracing::debug!(?found, ms, "offsets for time");
    let mut offsets = BTreeMap::new();
    for &PartitionKey {
        topic: index,
        partition,
    } in partitions
    {
        let topic = &inputs[index as usize];
        let element = found.find_partition(topic, partition);
        let offset = match element.as_ref().map(|e| (e.offset(), e.error())) {
            Some((Offset::Offset(o), Ok(()))) => Offset::Offset(o),
            Some((Offset::End, Ok(()))) => Offset::End,
            Some((_, Err(err))) => return Err(err.into()),
            _ => {
                return Err(ReplayError::NoOffsetForTime {
                    topic: topic.clone(),
                    partition,
                    ms,
                })
            }
        };
        offsets.insert(PartitionKey::new(index, partition), offset);
    }
    drop(found); // before the consumer can be dropped: see tests/common
    Ok(offsets)
}

fn split_queues(
    consumer: &Arc<ReplayConsumer>,
    inputs: &[String],
    partitions: &[PartitionKey],
) -> Result<BTreeMap<PartitionKey, Queue>, ReplayError> {
    partitions
        .iter()
        .map(
            |&PartitionKey {
                 topic: index,
                 partition,
             }| {
                let topic = &inputs[index as usize];
                consumer
                    .split_partition_queue(topic, partition)
                    .map(|queue| (PartitionKey::new(index, partition), queue))
                    .ok_or_else(|| ReplayError::NoPartitionQueue {
                        topic: topic.clone(),
                        partition,
                    })
            },
        )
        .collect()
}

/// Reads partitions for the merge, one message at a time.
struct Reader<'a> {
    consumer: &'a ReplayConsumer,
    queues: &'a BTreeMap<PartitionKey, Queue>,
    inputs: &'a [String],
    to: StopAt,
    /// With `--from <time>`: partitions still before their first message at or after it.
    /// Brokers that ignore the time in ListOffsets (Tansu answers the earliest offset) send
    /// older messages; they are skipped here, so every broker gives Kafka's semantics.
    before: BTreeMap<PartitionKey, i64>,
    /// The partition waited for, and since when (for a warning when a broker stays silent).
    waiting: Option<(PartitionKey, Instant)>,
}

impl Reader<'_> {
    /// Reads the next message of `key` into the merge, or ends the partition at its end or at
    /// the first message past `to` (which stays unapplied: the state's next offset). True when
    /// nothing arrived within the wait.
    fn fill(
        &mut self,
        key: PartitionKey,
        merge: &mut Merge<OwnedMessage>,
        next: &mut NextOffsets,
        batch: &mut Vec<Item>,
    ) -> Result<bool, ReplayError> {
        match self.queues[&key].poll(FILL_WAIT) {
            Some(Ok(message)) => {
                self.waiting = None;
                let timestamp = message.timestamp().to_millis();
                if let Some(&from) = self.before.get(&key) {
                    if timestamp.is_some_and(|ts| ts < from) {
                        next.insert(key, message.offset() + 1);
                        batch.push(Item::Next {
                            key,
                            offset: message.offset() + 1,
                        });
                        return Ok(false);
                    }
                    self.before.remove(&key);
                }
                if self.to.is_past(timestamp) {
                    next.insert(key, message.offset());
                    batch.push(Item::Next {
                        key,
                        offset: message.offset(),
                    });
                    merge.end(key);
                } else {
                    merge.push(key, timestamp, message.offset(), message.detach());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => merge.end(key),
            Some(Err(err))
                if err.rdkafka_error_code() == Some(RDKafkaErrorCode::AutoOffsetReset) =>
            {
                return Err(ReplayError::StartNotInLog {
                    topic: self.inputs[key.topic as usize].clone(),
                    partition: key.partition,
                    source: err,
                })
            }
            Some(Err(err)) => tracing::warn!(error = %err, "consumer error; librdkafka retries"),
            None => {
                self.warn_if_stalled(key, next);
                serve_events(self.consumer)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn warn_if_stalled(&mut self, key: PartitionKey, next: &NextOffsets) {
        match self.waiting {
            Some((waited, since)) if waited == key => {
                if since.elapsed() >= STALL_WARNING {
                    tracing::warn!(
                        topic = %self.inputs[key.topic as usize],
                        partition = key.partition,
                        offset = ?next.get(&key),
                        "no message and no end of partition from the broker for {} s; still waiting",
                        STALL_WARNING.as_secs()
                    );
                    self.waiting = Some((key, Instant::now()));
                }
            }
            _ => self.waiting = Some((key, Instant::now())),
        }
    }
}

/// Serves the consumer's own queue (logs, errors, statistics) until it is empty; messages never
/// arrive there because every partition was split off before the first poll.
fn serve_events(consumer: &ReplayConsumer) -> Result<(), ReplayError> {
    loop {
        match consumer.poll(Duration::ZERO) {
            Some(Ok(message)) => {
                return Err(ReplayError::StrayMessage {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                })
            }
            Some(Err(err)) => tracing::warn!(error = %err, "consumer error; librdkafka retries"),
            None => return Ok(()),
        }
    }
}

/// Partitions that delivered nothing: their next offset is the consumer's position there.
fn unreached(
    consumer: &ReplayConsumer,
    inputs: &[String],
    partitions: &[PartitionKey],
    from: &StartAt,
    next: &NextOffsets,
) -> Result<Vec<(PartitionKey, i64)>, ReplayError> {
    let unknown: Vec<PartitionKey> = partitions
        .iter()
        .copied()
        .filter(|k| !next.contains_key(k))
        .collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let position = consumer.position()?;
    let mut found = Vec::new();
    for PartitionKey {
        topic: index,
        partition,
    } in unknown
    {
        let topic = &inputs[index as usize];
        let at = position
            .find_partition(topic, partition)
            .map(|e| e.offset());
        let offset = match at {
            Some(Offset::Offset(o)) => o,
            _ => {
                let (low, high) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT)?;
                if *from == StartAt::Earliest {
                    low
                } else {
                    high
                }
            }
        };
        found.push((PartitionKey::new(index, partition), offset));
    }
    drop(position);
    Ok(found)
}

/// Messages between each partition's next offset and its high watermark.
fn lag(consumer: &ReplayConsumer, inputs: &[String], next: &NextOffsets) -> u64 {
    next.iter()
        .filter_map(
            |(
                &PartitionKey {
                    topic: index,
                    partition,
                },
                &at,
            )| {
                let topic = &inputs[index as usize];
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(1))
                    .ok()?;
                Some((high - at).max(0) as u64)
            },
        )
        .sum()
}
