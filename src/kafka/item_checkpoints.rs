//! The item owners' checkpoints (`items.changelog_topic`): a compacted topic partitioned like
//! the work topic, item partition p's checkpoints in partition p.
//!
//! A checkpoint is a set of records named by its generation, then one `manifest` record. The
//! records are the pages (`PER_PAGE` consecutive item indices) with a change since the previous
//! checkpoint and the model's shared record in chunks; the manifest names, for every page, the
//! generation that last wrote it, and says which work-log offset the state reflects and the
//! last input applied per input stream. It is sent only once every record it names is
//! acknowledged, so the manifest is the checkpoint's commit: state and offsets land together
//! or not at all. A crash before it leaves records no manifest names; the keys carry their
//! generation and writer, so compaction never drops a page a manifest names for one of them.
//! Records a manifest no longer names are deleted (tombstones) once it is acknowledged, or by
//! the partition's next owner, which finds them when it restores.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};

use super::changelog::{read_to_end, ChangelogError};
use super::client::{producer_config, send_waiting};
use crate::config::{EngineConfig, KafkaConfig};
use crate::engine::{ItemOwner, ModelRecords};
use crate::store::pages::{self, Page};

/// Items per page: a page of items with full rows stays far below a message's 1 MB.
pub const PER_PAGE: u32 = 64;
/// The model's shared record travels in chunks of this many bytes.
const MODEL_CHUNK: usize = 512 << 10;
const MANIFEST_KEY: &[u8] = b"manifest";

/// A checkpoint's name: its number along the partition, and the owner that wrote it (no two
/// owners' records share a key, even when both believe they own the partition).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub number: u64,
    pub writer: u64,
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}.{:016x}", self.number, self.writer)
    }
}

fn page_key(page: u32, generation: Generation) -> Vec<u8> {
    format!("page/{page:08x}/{generation}").into_bytes()
}

fn model_key(generation: Generation, chunk: u32) -> Vec<u8> {
    format!("model/{generation}/{chunk:04x}").into_bytes()
}

/// A checkpoint's commit record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub generation: Generation,
    /// The state reflects every work batch below this offset of the partition's work log.
    pub next_offset: i64,
    pub model_chunks: u32,
    /// Every page, with the generation that last wrote it.
    pub pages: Vec<(u32, Generation)>,
    /// The last input applied per input stream (see `ItemOwner::applied_inputs`).
    pub applied_inputs: Vec<(u64, i64)>,
}

/// The most a manifest may claim to hold (a page costs about 15 bytes of it: the 16k pages of
/// 1M items, about 240 KB).
const MANIFEST_LIMIT: usize = 16 << 20;

impl Manifest {
    /// Its record's value, in bincode: large catalogs stay far below a message's 1 MB.
    fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a manifest encodes")
    }

    fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let config = bincode::config::standard().with_limit::<MANIFEST_LIMIT>();
        match bincode::serde::decode_from_slice(bytes, config) {
            Ok((manifest, read)) if read == bytes.len() => Ok(manifest),
            Ok((_, read)) => Err(format!("{} trailing bytes", bytes.len() - read)),
            Err(err) => Err(err.to_string()),
        }
    }

    /// The keys of the records this checkpoint is made of.
    fn keys(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let chunks = (0..self.model_chunks).map(|chunk| model_key(self.generation, chunk));
        chunks.chain(self.pages.iter().map(|&(page, gen)| page_key(page, gen)))
    }
}

/// What an owner remembers of its partition's checkpoints between them.
#[derive(Debug, Default)]
pub struct Book {
    /// The last manifest written or restored.
    last: Option<Manifest>,
    /// Keys no manifest names (an interrupted checkpoint's): deleted with the next one.
    garbage: Vec<Vec<u8>>,
    writer: u64,
    /// A write failed after the owner's cut: the next checkpoint writes every page.
    pub rewrite_all: bool,
}

/// One checkpoint's records, in the order they go.
pub struct Planned {
    /// Pages and model chunks; the manifest goes once all of them are acknowledged...
    pub state: Vec<(Vec<u8>, Vec<u8>)>,
    pub manifest: Manifest,
    /// ...and these are deleted once it is.
    pub superseded: Vec<Vec<u8>>,
}

impl Book {
    pub fn new(writer: u64) -> Book {
        Book {
            writer,
            ..Book::default()
        }
    }

    /// The work-log offset the last checkpoint reflects (0: none).
    pub fn checkpointed_next(&self) -> i64 {
        self.last.as_ref().map_or(0, |m| m.next_offset)
    }

    /// The records of a checkpoint of `records` (an owner's cut) at work-log offset `next`.
    pub fn plan(
        &self,
        records: ModelRecords,
        applied_inputs: Vec<(u64, i64)>,
        next: i64,
    ) -> Planned {
        let number = self.last.as_ref().map_or(0, |m| m.generation.number) + 1;
        let generation = Generation {
            number,
            writer: self.writer,
        };
        let mut paged: BTreeMap<u32, Page> = BTreeMap::new();
        for (item, record) in records.items {
            paged
                .entry(item / PER_PAGE)
                .or_default()
                .insert(item, record);
        }
        let mut state = Vec::with_capacity(paged.len() + 1);
        let mut pages: BTreeMap<u32, Generation> = (self.last.iter())
            .flat_map(|last| last.pages.iter().copied())
            .collect();
        let mut superseded = self.garbage.clone();
        for (number, page) in &paged {
            state.push((page_key(*number, generation), pages::encode(page)));
            if let Some(before) = pages.insert(*number, generation) {
                superseded.push(page_key(*number, before));
            }
        }
        let chunks: Vec<&[u8]> = records.model.chunks(MODEL_CHUNK).collect();
        for (chunk, bytes) in chunks.iter().enumerate() {
            state.push((model_key(generation, chunk as u32), bytes.to_vec()));
        }
        if let Some(last) = &self.last {
            superseded.extend((0..last.model_chunks).map(|c| model_key(last.generation, c)));
        }
        Planned {
            state,
            manifest: Manifest {
                generation,
                next_offset: next,
                model_chunks: chunks.len() as u32,
                pages: pages.into_iter().collect(),
                applied_inputs,
            },
            superseded,
        }
    }

    /// The planned checkpoint's manifest was acknowledged.
    pub fn written(&mut self, manifest: Manifest) {
        self.last = Some(manifest);
        self.garbage.clear();
        self.rewrite_all = false;
    }
}

/// A partition's checkpoint as its log holds it: the latest record per key.
pub type Latest = BTreeMap<Vec<u8>, Vec<u8>>;

/// A partition's log read back: its last complete checkpoint, if any, with its records; and
/// the keys no manifest names.
pub struct Assembled {
    pub checkpoint: Option<(Manifest, ModelRecords)>,
    pub garbage: Vec<Vec<u8>>,
}

/// What `latest` holds; every record the manifest names must be there.
pub fn assemble(latest: &Latest) -> Result<Assembled, String> {
    let unnamed = |named: &[Vec<u8>]| {
        (latest.keys())
            .filter(|key| key.as_slice() != MANIFEST_KEY && !named.contains(key))
            .cloned()
            .collect()
    };
    let Some(body) = latest.get(MANIFEST_KEY) else {
        return Ok(Assembled {
            checkpoint: None,
            garbage: unnamed(&[]),
        });
    };
    let manifest: Manifest =
        Manifest::decode(body).map_err(|err| format!("the manifest: {err}"))?;
    let record = |key: Vec<u8>| {
        latest.get(&key).ok_or_else(|| {
            let key = String::from_utf8_lossy(&key).into_owned();
            format!(
                "manifest {} names {key}, which the log does not hold",
                manifest.generation
            )
        })
    };
    let mut model = Vec::new();
    for chunk in 0..manifest.model_chunks {
        model.extend_from_slice(record(model_key(manifest.generation, chunk))?);
    }
    let mut items = Vec::new();
    for &(page, generation) in &manifest.pages {
        let body = record(page_key(page, generation))?;
        let records = pages::decode(page, PER_PAGE, body)
            .map_err(|err| format!("page {page} of {generation}: {err}"))?;
        items.extend(records);
    }
    let named: Vec<Vec<u8>> = manifest.keys().collect();
    Ok(Assembled {
        garbage: unnamed(&named),
        checkpoint: Some((manifest, ModelRecords { model, items })),
    })
}

/// An owner as its partition's last checkpoint left it.
pub struct Restored {
    pub owner: ItemOwner,
    pub next: i64,
    pub book: Book,
    /// Records read.
    pub records: u64,
}

/// Per partition, its owner restored, none, or why its checkpoint does not read.
pub type Restores = BTreeMap<i32, Result<Option<Restored>, ChangelogError>>;

/// Writes owners' checkpoints and reads them back.
pub struct ItemCheckpoints {
    producer: BaseProducer<Failures>,
    failures: Arc<AtomicU64>,
    topic: String,
    kafka: KafkaConfig,
    /// How long a checkpoint's records may take to be acknowledged.
    timeout: Duration,
}

/// Counts the records the changelog did not take.
struct Failures(Arc<AtomicU64>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, message)) = result {
            self.0.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, partition = message.partition(), "item checkpoint record not delivered");
        }
    }
}

impl ItemCheckpoints {
    pub fn new(
        kafka: &KafkaConfig,
        topic: &str,
    ) -> Result<ItemCheckpoints, rdkafka::error::KafkaError> {
        let failures = Arc::new(AtomicU64::new(0));
        let producer = producer_config(kafka).create_with_context(Failures(failures.clone()))?;
        Ok(ItemCheckpoints {
            producer,
            failures,
            topic: topic.to_owned(),
            kafka: kafka.clone(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Writes a checkpoint of `owner` at work-log offset `next` to `partition`; returns the
    /// bytes written. On failure the book asks for every page next time (the cut is gone).
    pub fn write(
        &self,
        partition: i32,
        owner: &mut ItemOwner,
        book: &mut Book,
        next: i64,
    ) -> Result<usize, String> {
        let (records, applied) = owner.cut(PER_PAGE, book.rewrite_all);
        let planned = book.plan(records, applied, next);
        let written = self.commit(partition, &planned);
        match written {
            Ok(bytes) => {
                for key in &planned.superseded {
                    self.send(partition, key, None);
                }
                book.written(planned.manifest);
                Ok(bytes)
            }
            Err(err) => {
                book.rewrite_all = true;
                Err(err)
            }
        }
    }

    /// Sends the state records, waits for them, then the manifest, and waits for it.
    fn commit(&self, partition: i32, planned: &Planned) -> Result<usize, String> {
        let mut bytes = 0;
        for (key, value) in &planned.state {
            bytes += key.len() + value.len();
            self.send(partition, key, Some(value));
        }
        self.acknowledged("its records")?;
        let manifest = planned.manifest.encode();
        bytes += manifest.len();
        self.send(partition, MANIFEST_KEY, Some(&manifest));
        self.acknowledged("its manifest")?;
        Ok(bytes)
    }

    /// Waits until everything sent is acknowledged; an error if anything failed meanwhile.
    fn acknowledged(&self, what: &str) -> Result<(), String> {
        let failed = self.failures.load(Ordering::Relaxed);
        (self.producer.flush(self.timeout)).map_err(|err| format!("{what}: {err}"))?;
        match self.failures.load(Ordering::Relaxed) - failed {
            0 => Ok(()),
            n => Err(format!("{what}: {n} records not delivered")),
        }
    }

    /// Hands a record (None: a tombstone) to the producer, waiting while its queue is full.
    fn send(&self, partition: i32, key: &[u8], value: Option<&Vec<u8>>) {
        let mut record = BaseRecord::<[u8], Vec<u8>>::to(&self.topic)
            .partition(partition)
            .key(key);
        if let Some(value) = value {
            record = record.payload(value);
        }
        if send_waiting(&self.producer, record).is_err() {
            // Counted as a failure: the acknowledgement check fails the checkpoint.
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reads the checkpoints of `partitions` back (blocking, all at once): each one's owner
    /// as its last complete checkpoint left it, or None when it has none. `writer` names the
    /// checkpoints the owners write from here on. A broker error fails them all; a partition
    /// whose checkpoint does not assemble, only itself.
    pub fn restore(
        &self,
        partitions: &[i32],
        engine: &EngineConfig,
        writer: u64,
    ) -> Result<Restores, ChangelogError> {
        let mut logs: BTreeMap<i32, (Latest, u64)> = partitions
            .iter()
            .map(|&p| (p, Default::default()))
            .collect();
        read_to_end(&self.kafka, &self.topic, partitions, |message| {
            let Some((latest, records)) = logs.get_mut(&message.partition()) else {
                return Ok(());
            };
            *records += 1;
            let key = message.key().unwrap_or_default().to_vec();
            match message.payload() {
                Some(value) => latest.insert(key, value.to_vec()),
                None => latest.remove(&key),
            };
            Ok(())
        })?;
        let restored = (logs.into_iter()).map(|(partition, (latest, records))| {
            let bad = |detail: String| ChangelogError::BadCheckpoint {
                topic: self.topic.clone(),
                partition,
                detail,
            };
            let owner = restored_owner(&latest, engine, writer, records).map_err(bad);
            (partition, owner)
        });
        Ok(restored.collect())
    }
}

/// A partition's owner from its log's latest records, or what is wrong with them.
fn restored_owner(
    latest: &Latest,
    engine: &EngineConfig,
    writer: u64,
    records: u64,
) -> Result<Option<Restored>, String> {
    let Assembled {
        checkpoint,
        garbage,
    } = assemble(latest)?;
    let mut book = Book::new(writer);
    book.garbage = garbage;
    let Some((manifest, model)) = checkpoint else {
        return Ok(None);
    };
    let owner = ItemOwner::restore(engine, model, &manifest.applied_inputs)
        .map_err(|err| err.to_string())?;
    let next = manifest.next_offset;
    book.last = Some(manifest);
    Ok(Some(Restored {
        owner,
        next,
        book,
        records,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(items: &[(u32, &[u8])]) -> ModelRecords {
        ModelRecords {
            model: b"shared".to_vec(),
            items: items.iter().map(|&(i, r)| (i, r.to_vec())).collect(),
        }
    }

    /// The log after these records, as compaction may leave it.
    fn log_of(records: &[(Vec<u8>, Vec<u8>)]) -> Latest {
        records.iter().cloned().collect()
    }

    fn manifest_record(planned: &Planned) -> (Vec<u8>, Vec<u8>) {
        let body = planned.manifest.encode();
        (MANIFEST_KEY.to_vec(), body)
    }

    #[test]
    fn the_last_manifest_names_every_page_at_the_generation_that_last_wrote_it() {
        let mut book = Book::new(7);
        let first = book.plan(model(&[(0, b"a"), (1, b"b"), (70, b"c")]), vec![(3, 9)], 12);
        let mut log = first.state.clone();
        log.push(manifest_record(&first));
        book.written(first.manifest.clone());

        let second = book.plan(model(&[(71, b"c2")]), vec![(3, 10)], 20);
        assert_eq!(
            second.superseded,
            [
                page_key(1, first.manifest.generation),
                model_key(first.manifest.generation, 0)
            ],
            "page 1 and the model are replaced; page 0 stays"
        );
        log.extend(second.state.clone());
        log.push(manifest_record(&second));

        let Assembled {
            checkpoint,
            garbage,
        } = assemble(&log_of(&log)).unwrap();
        let (manifest, records) = checkpoint.unwrap();
        assert_eq!(manifest.next_offset, 20);
        assert_eq!(manifest.applied_inputs, [(3, 10)]);
        let items: Vec<(u32, &[u8])> = records.items.iter().map(|(i, r)| (*i, &r[..])).collect();
        assert_eq!(items, [(0, &b"a"[..]), (1, b"b"), (71, b"c2")]);
        assert_eq!(records.model, b"shared");
        assert_eq!(
            garbage.len(),
            2,
            "what the second superseded, until it is deleted"
        );
    }

    #[test]
    fn a_checkpoint_cut_off_before_its_manifest_leaves_the_previous_one_whole() {
        let mut book = Book::new(7);
        let first = book.plan(model(&[(0, b"a")]), vec![], 5);
        let mut log = first.state.clone();
        log.push(manifest_record(&first));
        book.written(first.manifest.clone());
        let interrupted = book.plan(model(&[(0, b"a2"), (64, b"z")]), vec![], 9);
        log.extend(interrupted.state.clone());

        let Assembled {
            checkpoint,
            garbage,
        } = assemble(&log_of(&log)).unwrap();
        let (manifest, records) = checkpoint.unwrap();
        assert_eq!(manifest, first.manifest);
        assert_eq!(records.items, [(0, b"a".to_vec())]);
        let unnamed: Vec<Vec<u8>> = interrupted.state.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(garbage.len(), unnamed.len());
        assert!(unnamed.iter().all(|key| garbage.contains(key)));

        let mut next_owner = Book::new(8);
        next_owner.last = Some(manifest);
        next_owner.garbage = garbage;
        let after = next_owner.plan(model(&[(0, b"a3")]), vec![], 9);
        assert!(
            unnamed.iter().all(|key| after.superseded.contains(key)),
            "the next owner deletes them"
        );
        assert!(
            after.state.iter().all(|(key, _)| !unnamed.contains(key)),
            "its own keys differ"
        );
    }

    #[test]
    fn a_manifest_naming_a_record_the_log_lacks_is_refused_with_the_record() {
        let book = Book::new(1);
        let planned = book.plan(model(&[(0, b"a")]), vec![], 5);
        let log = log_of(&[manifest_record(&planned), planned.state[1].clone()]);
        let err = assemble(&log).map(|_| ()).unwrap_err();
        assert!(err.contains("names page/00000000/"), "{err}");
        let mut log = log_of(&[(MANIFEST_KEY.to_vec(), b"{".to_vec())]);
        assert!(assemble(&log)
            .map(|_| ())
            .unwrap_err()
            .contains("the manifest"));
        log.clear();
        let empty = assemble(&log).unwrap();
        assert!(empty.checkpoint.is_none() && empty.garbage.is_empty());
    }
}
