//! The changelog of user-side state: a compacted topic keyed by user, partitioned like the
//! inputs (input partition p's users go to changelog partition p).
//!
//! Each checkpoint writes its changed users there (portable: items by name), then, for every
//! input partition it advanced, a position record saying which input offset the partition's
//! users now reflect. The topic's order does the rest: a position record follows the users it
//! covers, so an instance taking partition p over reads p's changelog to its end, keeps the
//! latest record per user and continues from the latest position. Without transactions a crash
//! can leave users written past the last position; each user's record carries the position of
//! its own latest input, and the pipeline skips inputs a user already reflects, so every input
//! still counts once per user.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::carried_keys::{self, CarriedKeys};
use super::client::replay_consumer_config;
use super::client::ReplayContext;
use crate::config::KafkaConfig;
use crate::dedup::CarriedKey;
use crate::engine::{DecodeError, PortableUser};
use crate::offsets::NextOffsets;
use crate::offsets::{topic_index, PartitionKey};
use crate::pipeline::{key_of_stream, stream_of};

/// Header naming what a changelog record is: `user` or `position`.
pub const KIND_HEADER: &str = "streamrec-changelog";
/// Position keys start with a byte no UTF-8 user id holds, so compaction never mixes the two.
const POSITION_PREFIX: &[u8] = b"\xffposition/";

/// One record to write.
pub struct ChangelogRecord {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub kind: &'static str,
}

/// What one checkpoint writes: its changed users, then the position of every input partition
/// it advanced past the previous checkpoint (`before`), with the partition's stream time, each
/// followed by the dedup keys the partition took since its previous such record and the slot
/// that record takes (`carry`; none: no record) — of the partitions it `owns` now only. Users
/// without a position (none come from the pipeline) have no partition and are left out.
pub fn checkpoint_records(
    users: Vec<(String, PortableUser)>,
    (covers, before): (&NextOffsets, &NextOffsets),
    inputs: &[String],
    (stream_times, mut carry): (
        &BTreeMap<u64, i64>,
        impl FnMut(u64) -> Option<(u32, Vec<CarriedKey>)>,
    ),
    owns: impl Fn(PartitionKey) -> bool,
) -> Vec<ChangelogRecord> {
    let mut records: Vec<ChangelogRecord> = users
        .into_iter()
        .filter_map(|(id, user)| {
            let key = key_of_stream(user.position?.stream);
            if !owns(key) {
                return None;
            }
            Some(ChangelogRecord {
                partition: key.partition,
                key: id.into_bytes(),
                value: user.encode(),
                kind: "user",
            })
        })
        .collect();
    for (&key, &next) in covers {
        let PartitionKey { topic, partition } = key;
        if before.get(&key) == Some(&next) || !owns(key) {
            continue;
        }
        let stream = stream_of(key);
        let position = PartitionPosition {
            next_offset: next,
            stream_time_ms: stream_times.get(&stream).copied(),
        };
        let topic_name = &inputs[topic as usize];
        records.push(ChangelogRecord {
            partition,
            key: position_key(topic_name),
            value: serde_json::to_vec(&position).expect("a position encodes"),
            kind: "position",
        });
        let Some((slot, keys)) = carry(stream) else {
            continue;
        };
        let carried = CarriedKeys {
            next_offset: next,
            keys,
        };
        records.push(ChangelogRecord {
            partition,
            key: carried_keys::record_key(topic_name, slot),
            value: carried.encode(),
            kind: carried_keys::KIND,
        });
    }
    records
}

/// A position record's value: where the partition's users are, and the partition's stream time
/// there (so deadlines and windows continue at the same time on a new owner).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionPosition {
    pub next_offset: i64,
    pub stream_time_ms: Option<i64>,
}

impl PartitionPosition {
    /// A position record's value: this JSON, or a bare offset (written by older builds).
    pub fn parse(bytes: &[u8]) -> Option<PartitionPosition> {
        if let Some(next_offset) = std::str::from_utf8(bytes).ok().and_then(|v| v.parse().ok()) {
            return Some(PartitionPosition {
                next_offset,
                stream_time_ms: None,
            });
        }
        serde_json::from_slice(bytes).ok()
    }
}

/// The key of a partition's position record about one input topic: compaction keeps the latest
/// per topic.
fn position_key(input_topic: &str) -> Vec<u8> {
    [POSITION_PREFIX, input_topic.as_bytes()].concat()
}

/// The input topic a position record's key names.
fn topic_of_position(key: &[u8]) -> String {
    String::from_utf8_lossy(key.strip_prefix(POSITION_PREFIX).unwrap_or(key)).into_owned()
}

/// Hands every record to the producer (waiting while its queue is full) and returns their
/// acknowledgements, in order.
pub async fn send_records(
    producer: &FutureProducer,
    topic: &str,
    records: &[ChangelogRecord],
) -> Result<Vec<DeliveryFuture>, KafkaError> {
    let mut acks = Vec::with_capacity(records.len());
    for record in records {
        let headers = OwnedHeaders::new().insert(Header {
            key: KIND_HEADER,
            value: Some(record.kind),
        });
        let mut next = FutureRecord::to(topic)
            .partition(record.partition)
            .key(&record.key)
            .payload(&record.value)
            .headers(headers);
        loop {
            match producer.send_result(next) {
                Ok(ack) => break acks.push(ack),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    next = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((err, _)) => return Err(err),
            }
        }
    }
    Ok(acks)
}

/// One changelog partition as it stands: the latest record per user and the latest position
/// per input topic.
#[derive(Debug, Default)]
pub struct PartitionLog {
    pub partition: i32,
    pub users: Vec<(String, PortableUser)>,
    /// Next input offset per input topic name.
    pub positions: BTreeMap<String, i64>,
    /// The partition's stream time per input topic name, where the position carries one.
    pub stream_times: BTreeMap<String, i64>,
    /// Records read.
    pub records: u64,
    /// The records of dedup keys per input topic name, with their slots (see `carried_keys`).
    pub carried: BTreeMap<String, Vec<(Option<u32>, CarriedKeys)>>,
    /// `dedup` records that could not be read, left out (their keys are not carried).
    pub unreadable_carried: u64,
    /// Records of a kind this build does not know (a later build's), left out.
    pub unknown: u64,
}

impl PartitionLog {
    /// This partition of the input topic `name` names, if it is one of `inputs`.
    pub fn input_key(&self, inputs: &[String], name: &str) -> Option<PartitionKey> {
        let topic = topic_index(inputs, name)?;
        Some(PartitionKey::new(topic, self.partition))
    }

    /// Per input topic, the keys of every record cut at or before the position the partition
    /// restores, oldest first, and the slot after the newest of them. A record cut later (its
    /// events are not in the restored state) is left out.
    pub fn carried_keys(&self) -> Vec<RestoredKeys<'_>> {
        let mut restored = Vec::new();
        for (topic, records) in &self.carried {
            let Some(&position) = self.positions.get(topic) else {
                continue;
            };
            let mut usable: Vec<_> = (records.iter())
                .filter(|(_, carried)| carried.next_offset <= position)
                .collect();
            usable.sort_by_key(|(_, carried)| carried.next_offset);
            let Some((newest_slot, _)) = usable.last() else {
                continue;
            };
            restored.push(RestoredKeys {
                topic,
                next_slot: newest_slot.map_or(0, |slot| slot + 1),
                keys: usable.iter().flat_map(|(_, c)| &c.keys).copied().collect(),
            });
        }
        restored
    }

    fn read_position(
        &mut self,
        topic: &str,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), ChangelogError> {
        let topic_name = topic_of_position(message.key().unwrap_or_default());
        let position =
            PartitionPosition::parse(message.payload().unwrap_or_default()).ok_or_else(|| {
                ChangelogError::BadPosition {
                    topic: topic.to_owned(),
                    partition: self.partition,
                    offset: message.offset(),
                }
            })?;
        if let Some(time) = position.stream_time_ms {
            self.stream_times.insert(topic_name.clone(), time);
        }
        self.positions.insert(topic_name, position.next_offset);
        Ok(())
    }

    /// Decodes a record of dedup keys (the latest with its key). An unreadable one is left
    /// out with a warning rather than stopping the restore: without its keys the partition
    /// drops fewer duplicates, as it did before partitions carried keys.
    fn read_carried(&mut self, topic: &str, key: &[u8], bytes: &[u8]) {
        let (input, slot) = carried_keys::parse_key(key);
        match CarriedKeys::decode(bytes) {
            Ok(carried) => self.carried.entry(input).or_default().push((slot, carried)),
            Err(err) => {
                tracing::warn!(topic, partition = self.partition, input, error = %err, "dedup keys left out");
                self.unreadable_carried += 1;
            }
        }
    }
}

/// An input topic's dedup keys as a restore takes them (see `PartitionLog::carried_keys`).
#[derive(Debug, PartialEq)]
pub struct RestoredKeys<'a> {
    pub topic: &'a str,
    /// Oldest first.
    pub keys: Vec<CarriedKey>,
    /// The slot the partition's next record takes.
    pub next_slot: u32,
}

/// What a changelog record is, by its kind header.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RecordKind {
    User,
    Position,
    /// A partition's latest dedup keys (see `carried_keys`).
    Dedup,
    /// Written by a later build: skipped, so that a group can hold both builds while it is
    /// upgraded, losing only what the later build added.
    Unknown,
}

/// Why a changelog partition could not be read; each names the partition.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error("changelog {topic}/{partition}: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("changelog {topic}/{partition}: nothing read for 10 s at offset {at}")]
    Stalled {
        topic: String,
        partition: i32,
        at: i64,
    },
    #[error("changelog {topic}/{partition}@{offset}: bad position")]
    BadPosition {
        topic: String,
        partition: i32,
        offset: i64,
    },
    #[error("changelog {topic}/{partition}: a user key is not UTF-8")]
    KeyNotUtf8 { topic: String, partition: i32 },
    #[error("changelog {topic}/{partition}: {source}")]
    BadUser {
        topic: String,
        partition: i32,
        source: DecodeError,
    },
    #[error("item checkpoints {topic}/{partition}: {detail}")]
    BadCheckpoint {
        topic: String,
        partition: i32,
        detail: String,
    },
    #[error("the thread reading changelog partition {partition} panicked")]
    Panicked { partition: i32 },
}

impl ChangelogError {
    pub fn partition(&self) -> i32 {
        match self {
            ChangelogError::Kafka { partition, .. }
            | ChangelogError::Stalled { partition, .. }
            | ChangelogError::BadPosition { partition, .. }
            | ChangelogError::KeyNotUtf8 { partition, .. }
            | ChangelogError::BadUser { partition, .. }
            | ChangelogError::BadCheckpoint { partition, .. }
            | ChangelogError::Panicked { partition } => *partition,
        }
    }

    /// A fault of the brokers or the network (reading again may succeed), not of the records.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChangelogError::Kafka { .. } | ChangelogError::Stalled { .. }
        )
    }
}

/// Reads changelog partition `partition` from its start to its current end (blocking: run it
/// off the async threads). Undecodable user records are an error: restoring without them
/// would silently lose those users.
pub fn read_partition(kafka: &KafkaConfig, partition: i32) -> Result<PartitionLog, ChangelogError> {
    let topic = &kafka.changelog_topic;
    let mut log = PartitionLog {
        partition,
        ..PartitionLog::default()
    };
    // The latest record per key, as compaction keeps it, decoded once the read is done.
    let mut latest: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut latest_carried: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    read_to_end(kafka, topic, &[partition], |message| {
        log.records += 1;
        let key = message.key().unwrap_or_default();
        let value = || message.payload().unwrap_or_default().to_vec();
        match record_kind(message) {
            RecordKind::User => {
                latest.insert(key.to_vec(), value());
            }
            RecordKind::Position => log.read_position(topic, message)?,
            RecordKind::Dedup => {
                latest_carried.insert(key.to_vec(), value());
            }
            RecordKind::Unknown => log.unknown += 1,
        }
        Ok(())
    })?;
    for (key, bytes) in latest_carried {
        log.read_carried(topic, &key, &bytes);
    }
    let mut users = Vec::with_capacity(latest.len());
    for (key, value) in latest {
        let id = String::from_utf8(key).map_err(|_| ChangelogError::KeyNotUtf8 {
            topic: topic.clone(),
            partition,
        })?;
        let user = PortableUser::decode(&value, &id).map_err(|source| ChangelogError::BadUser {
            topic: topic.clone(),
            partition,
            source,
        })?;
        users.push((id, user));
    }
    users.sort_by(|a, b| a.0.cmp(&b.0));
    log.users = users;
    Ok(log)
}

/// Hands every record of `topic`'s `partitions`, from their start to their current ends, to
/// `each` (blocking; one consumer for all of them), stopping at the first error.
pub fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: &[i32],
    mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), ChangelogError>,
) -> Result<(), ChangelogError> {
    let first = partitions.first().copied().unwrap_or_default();
    let kafka_error = |source| ChangelogError::Kafka {
        topic: topic.to_owned(),
        partition: first,
        source,
    };
    let group = format!("{}.changelog", kafka.group_id);
    let consumer: BaseConsumer<ReplayContext> = replay_consumer_config(kafka, &group)
        .set("auto.offset.reset", "earliest")
        .create_with_context(ReplayContext)
        .map_err(kafka_error)?;
    let timeout = Duration::from_secs(10);
    let mut assignment = TopicPartitionList::new();
    for &partition in partitions {
        (assignment.add_partition_offset(topic, partition, Offset::Beginning))
            .map_err(kafka_error)?;
    }
    consumer.assign(&assignment).map_err(kafka_error)?;
    let mut reading: BTreeMap<i32, i64> = partitions.iter().map(|&p| (p, 0)).collect();
    // The end is where the fetch reports it (partition EOF), not a listed watermark: some
    // brokers answer ListOffsets behind what they serve.
    while let Some((&partition, &at)) = reading.first_key_value() {
        let Some(polled) = consumer.poll(timeout) else {
            return Err(ChangelogError::Stalled {
                topic: topic.to_owned(),
                partition,
                at,
            });
        };
        match polled {
            Ok(message) => {
                if let Some(at) = reading.get_mut(&message.partition()) {
                    *at = message.offset() + 1;
                }
                each(&message)?;
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                reading.remove(&partition);
            }
            Err(err) => return Err(kafka_error(err)),
        }
    }
    Ok(())
}

/// A record without the header is a user's, as every build has written users.
fn record_kind(message: &impl Message) -> RecordKind {
    let kind = message.headers().and_then(|headers| {
        let header = headers.iter().find(|h| h.key == KIND_HEADER)?;
        header.value
    });
    match kind {
        None | Some(b"user") => RecordKind::User,
        Some(b"position") => RecordKind::Position,
        Some(kind) if kind == carried_keys::KIND.as_bytes() => RecordKind::Dedup,
        Some(_) => RecordKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Position;
    use crate::profile::PortableProfile;

    fn with_kind(kind: Option<&str>) -> rdkafka::message::OwnedMessage {
        let headers = kind.map(|kind| {
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: KIND_HEADER,
                value: Some(kind),
            })
        });
        let timestamp = rdkafka::Timestamp::NotAvailable;
        rdkafka::message::OwnedMessage::new(None, None, "c".into(), timestamp, 0, 0, headers)
    }

    /// A record kind a later build adds is left out rather than read as a user, which would
    /// stop the restore; a record without the header is a user's.
    #[test]
    fn records_of_an_unknown_kind_are_told_apart_from_users() {
        assert_eq!(record_kind(&with_kind(Some("user"))), RecordKind::User);
        assert_eq!(record_kind(&with_kind(None)), RecordKind::User);
        assert_eq!(
            record_kind(&with_kind(Some("position"))),
            RecordKind::Position
        );
        assert_eq!(record_kind(&with_kind(Some("dedup"))), RecordKind::Dedup);
        assert_eq!(record_kind(&with_kind(Some("later"))), RecordKind::Unknown);
    }

    fn user(partition: u32, seq: i64) -> PortableUser {
        PortableUser {
            profile: PortableProfile {
                counts: [1, 0, 0, 0],
                first_seen_ms: 0,
                last_seen_ms: 0,
                recent: Vec::new(),
                purchased: Vec::new(),
                categories: Vec::new(),
            },
            factors: vec![0.0; 2],
            attributes: Vec::new(),
            position: Some(Position {
                stream: u64::from(partition),
                seq,
            }),
            triggers: Default::default(),
            feedback: Default::default(),
            shown: None,
        }
    }

    fn carried_key() -> CarriedKey {
        CarriedKey { key: 7, ts_ms: 1 }
    }

    /// Every record cut at or before the restored position holds keys of events the restored
    /// state applied (one before it: a crash came between a position record and its keys);
    /// one cut after it does not.
    #[test]
    fn keys_cut_up_to_the_restored_position_are_used_oldest_first() {
        let carried = |next_offset, key| CarriedKeys {
            next_offset,
            keys: vec![CarriedKey { key, ts_ms: 1 }],
        };
        let log = PartitionLog {
            positions: [("a".into(), 10), ("b".into(), 20)].into(),
            carried: [
                (
                    "a".into(),
                    vec![(Some(2), carried(10, 3)), (Some(1), carried(8, 2))],
                ),
                (
                    "b".into(),
                    vec![(Some(0), carried(25, 9)), (None, carried(15, 5))],
                ),
                ("c".into(), vec![(Some(0), carried(1, 1))]),
            ]
            .into(),
            ..PartitionLog::default()
        };
        let keys = |k: &[u128]| k.iter().map(|&key| CarriedKey { key, ts_ms: 1 }).collect();
        assert_eq!(
            log.carried_keys(),
            [
                RestoredKeys {
                    topic: "a",
                    keys: keys(&[2, 3]),
                    next_slot: 3
                },
                RestoredKeys {
                    topic: "b",
                    keys: keys(&[5]),
                    next_slot: 0
                }
            ],
            "b's slot 0 was cut past its position; c has no position"
        );
    }

    #[test]
    fn partitions_the_member_does_not_own_get_no_records() {
        let inputs = ["events".to_string()];
        let users = vec![("a".into(), user(2, 7)), ("b".into(), user(0, 3))];
        let key = PartitionKey::new;
        let covers: NextOffsets = [(key(0, 0), 4), (key(0, 2), 8)].into();
        let owns = |key: PartitionKey| key.partition != 2;
        let records = checkpoint_records(
            users,
            (&covers, &NextOffsets::new()),
            &inputs,
            (&BTreeMap::new(), |_| Some((0, vec![carried_key()]))),
            owns,
        );
        let summary: Vec<(i32, &str)> = records.iter().map(|r| (r.partition, r.kind)).collect();
        assert_eq!(summary, [(0, "user"), (0, "position"), (0, "dedup")]);
    }

    #[test]
    fn users_go_to_their_input_partition_then_positions_of_advanced_partitions() {
        let inputs = ["events".to_string()];
        let users = vec![("a".into(), user(2, 7)), ("b".into(), user(0, 3))];
        let key = PartitionKey::new;
        let covers: NextOffsets = [(key(0, 0), 4), (key(0, 2), 8), (key(0, 5), 1)].into();
        let before: NextOffsets = [(key(0, 5), 1)].into();
        let times = [(2, 1_700_000_000_000)].into();
        let carry = |stream| (stream == stream_of(key(0, 2))).then(|| (5, vec![carried_key()]));
        let records =
            checkpoint_records(users, (&covers, &before), &inputs, (&times, carry), |_| {
                true
            });
        let summary: Vec<(i32, &str)> = records.iter().map(|r| (r.partition, r.kind)).collect();
        assert_eq!(
            summary,
            [
                (2, "user"),
                (0, "user"),
                (0, "position"),
                (2, "position"),
                (2, "dedup")
            ],
            "partition 5 did not move: no position for it; partition 0 had no keys"
        );
        assert_eq!(
            CarriedKeys::decode(&records[4].value),
            Ok(CarriedKeys {
                next_offset: 8,
                keys: vec![carried_key()]
            }),
            "the keys name the position they were cut at"
        );
        assert_eq!(
            carried_keys::parse_key(&records[4].key),
            ("events".into(), Some(5)),
            "in the slot they take"
        );
        assert_eq!(
            PartitionPosition::parse(&records[2].value),
            Some(PartitionPosition {
                next_offset: 4,
                stream_time_ms: None
            })
        );
        assert_eq!(
            PartitionPosition::parse(&records[3].value)
                .unwrap()
                .stream_time_ms,
            Some(1_700_000_000_000),
            "partition 2's stream time goes with its position"
        );
        assert_eq!(
            PartitionPosition::parse(b"17").unwrap().next_offset,
            17,
            "older records"
        );
        assert!(
            std::str::from_utf8(&records[2].key).is_err(),
            "no user id can equal it"
        );
    }
}
