//! The state store: engine records and the input offsets they reflect, in sled, written in one
//! atomic batch and flushed, so a reader sees either the previous checkpoint or the new one.
//!
//! Every value starts with a format-version byte. Keys: `meta/format`; `items` (the item model
//! without its per-item parts); `itempage/<n>`, the records of items `256 n .. 256 n + 255`
//! (see `store::pages`; `n` as 4 bytes, big-endian, so a scan reads them in order); `shard` (the
//! first worker's dedup window, clocks, RNG, trigger state) and `shard/<n>` for worker `n` ≥ 1
//! of a process with several; `user/<id>` per user; `offset/<topic>/<partition>` holding the next
//! offset to read (8 bytes, big-endian); `meta/users`, how many users the store holds (8 bytes,
//! big-endian), kept so a count needs no scan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::EngineConfig;
use crate::engine::{records_digest, Engine, EngineRecords};

pub mod pages;
use xxhash_rust::xxh3::xxh3_64;

/// The format this build writes and reads. 5 split the item model into a record per item; 6
/// added impressions and dismissals to the user record; 7 added co-occurrence's direction and
/// position settings to the item model's record; 8 added the re-buy tally to each worker's
/// shard record. An older dir is refused with the way to rebuild it.
pub const FORMAT_VERSION: u8 = 8;

const FORMAT_KEY: &[u8] = b"meta/format";
const USERS_KEY: &[u8] = b"meta/users";
const ITEMS_KEY: &[u8] = b"items";
const SHARD_KEY: &[u8] = b"shard";
const MORE_SHARDS_PREFIX: &[u8] = b"shard/";
const PAGE_PREFIX: &[u8] = b"itempage/";
const USER_PREFIX: &[u8] = b"user/";
const OFFSET_PREFIX: &[u8] = b"offset/";

pub use crate::offsets::Offsets;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state dir {path} does not exist")]
    Missing { path: String },
    #[error("state dir {path} is locked: another process has it open (is streamrec already running on it?)")]
    Locked { path: String },
    #[error("state dir {path} is corrupt: {detail}; nothing was changed")]
    Corrupt { path: String, detail: String },
    #[error("state dir {path} was written in format {found}, newer than this build reads ({FORMAT_VERSION}); upgrade streamrec")]
    NewerFormat { path: String, found: u8 },
    #[error("state dir {path} was written in format {found} by an older build; this build reads format {FORMAT_VERSION}: rebuild the state into a new dir with `streamrec replay` (or `backfill`)")]
    OlderFormat { path: String, found: u8 },
    #[error("state dir {path} holds the state of {stored} workers and pipeline.workers is {configured}: set pipeline.workers = {stored} (the worker count of a state dir is fixed when it is first written)")]
    Workers {
        path: String,
        stored: usize,
        configured: usize,
    },
    #[error("state dir {path}: {detail}")]
    Io { path: String, detail: String },
}

/// What a checkpoint wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointSize {
    pub records: usize,
    pub bytes: usize,
    /// Item records among them (the items that changed).
    pub items: usize,
    /// Users the store holds after this checkpoint.
    pub users_stored: u64,
}

/// A state store's content, as raw records.
pub struct Stored {
    pub records: EngineRecords,
    pub offsets: Offsets,
}

impl Stored {
    pub fn digest(&self) -> String {
        records_digest(&self.records)
    }
}

/// A handle on a state dir; clones share it (sled's handle is shared).
#[derive(Clone)]
pub struct StateStore {
    db: sled::Db,
    path: PathBuf,
}

impl StateStore {
    /// Opens a state dir; with `create`, makes a fresh one where none exists.
    pub fn open(path: &Path, create: bool) -> Result<StateStore, StoreError> {
        let shown = path.display().to_string();
        if !create && !path.exists() {
            return Err(StoreError::Missing { path: shown });
        }
        let db = open_db(path, &shown)?;
        let store = StateStore {
            db,
            path: path.to_owned(),
        };
        store.check_format()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.shown(),
            detail: detail.into(),
        }
    }

    fn io(&self, err: sled::Error) -> StoreError {
        StoreError::Io {
            path: self.shown(),
            detail: err.to_string(),
        }
    }

    fn check_format(&self) -> Result<(), StoreError> {
        match self.db.get(FORMAT_KEY).map_err(|e| self.io(e))? {
            None if self.db.is_empty() => Ok(()),
            None => Err(self.corrupt("records without a meta/format record")),
            Some(value) => match value.as_ref() {
                [found] if *found > FORMAT_VERSION => Err(StoreError::NewerFormat {
                    path: self.shown(),
                    found: *found,
                }),
                [found] if *found < FORMAT_VERSION => Err(StoreError::OlderFormat {
                    path: self.shown(),
                    found: *found,
                }),
                [_] => Ok(()),
                other => Err(self.corrupt(format!(
                    "meta/format holds {} bytes, expected 1",
                    other.len()
                ))),
            },
        }
    }

    /// Writes what changed in the engine since its last checkpoint (the item model, the shard,
    /// changed users) and the offsets it reflects as one atomic batch, then flushes. The store
    /// then holds the engine's whole state; a failed write leaves the previous checkpoint.
    pub fn checkpoint(
        &self,
        engine: &mut Engine,
        offsets: &Offsets,
    ) -> Result<CheckpointSize, StoreError> {
        let size = self.write(&engine.to_changed_records(), offsets)?;
        engine.mark_checkpointed();
        Ok(size)
    }

    /// The write half of `checkpoint`, for a caller that encodes on its own thread and writes
    /// on another (one write at a time, in order): records from `Engine::to_changed_records`.
    pub fn write(
        &self,
        records: &EngineRecords,
        offsets: &Offsets,
    ) -> Result<CheckpointSize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut size = CheckpointSize::default();
        let mut put = |key: Vec<u8>, body: &[u8]| {
            let value = versioned(body);
            size.records += 1;
            size.bytes += key.len() + value.len();
            batch.insert(key, value);
        };
        let mut users_stored = self.users_stored()?;
        put(ITEMS_KEY.to_vec(), &records.items);
        for (number, page) in self.merged_pages(&records.item_records)? {
            put(page_key(number), &pages::encode(&page));
        }
        size.items = records.item_records.len();
        for (worker, shard) in records.shards.iter().enumerate() {
            put(shard_key(worker), shard);
        }
        for (id, bytes) in &records.users {
            let key = [USER_PREFIX, id.as_bytes()].concat();
            if !self.db.contains_key(&key).map_err(|e| self.io(e))? {
                users_stored += 1;
            }
            put(key, bytes);
        }
        put(USERS_KEY.to_vec(), &users_stored.to_be_bytes());
        size.users_stored = users_stored;
        for ((topic, partition), next) in offsets {
            put(offset_key(topic, *partition), &next.to_be_bytes());
        }
        // The format record is the bare version byte.
        batch.insert(FORMAT_KEY, &[FORMAT_VERSION][..]);
        size.records += 1;
        self.db.apply_batch(batch).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(size)
    }

    /// Writes users restored from the changelog (records from `Engine::localize_user`), without
    /// the offsets they reflect: those go with the worker's next checkpoint, together with the
    /// deadlines and stream time the restore set in the worker's shard. Until then the stored
    /// state is not current for the partition, so a crash before that checkpoint restores it
    /// again instead of resuming without its deadlines. Not flushed: nothing counts on these
    /// users surviving a crash, and the checkpoint's flush writes them out with it.
    pub fn write_restored(&self, users: &[(String, Vec<u8>)]) -> Result<u64, StoreError> {
        let mut batch = sled::Batch::default();
        let mut users_stored = self.users_stored()?;
        for (id, bytes) in users {
            let key = [USER_PREFIX, id.as_bytes()].concat();
            if !self.db.contains_key(&key).map_err(|e| self.io(e))? {
                users_stored += 1;
            }
            batch.insert(key, versioned(bytes));
        }
        batch.insert(USERS_KEY, versioned(&users_stored.to_be_bytes()));
        self.db.apply_batch(batch).map_err(|e| self.io(e))?;
        Ok(users_stored)
    }

    /// Replaces the state with `records` and forgets every input offset, in one batch: what
    /// was learned stays, and the next `run` reads from the group's offsets (or the log's
    /// start) instead of where a log that no longer exists ended. Returns the offsets dropped.
    pub fn forget_offsets(&self, records: &EngineRecords) -> Result<Offsets, StoreError> {
        let dropped = self.offsets()?;
        self.write(records, &Offsets::new())?;
        let mut batch = sled::Batch::default();
        for (topic, partition) in dropped.keys() {
            batch.remove(offset_key(topic, *partition));
        }
        self.db.apply_batch(batch).map_err(|e| self.io(e))?;
        self.db.flush().map_err(|e| self.io(e))?;
        Ok(dropped)
    }

    /// How many users the store holds: the count kept with each checkpoint, or a scan for a
    /// dir written before the count was.
    pub fn users_stored(&self) -> Result<u64, StoreError> {
        match self.db.get(USERS_KEY).map_err(|e| self.io(e))? {
            Some(value) => {
                let body = self.body(USERS_KEY, &value)?;
                <[u8; 8]>::try_from(body.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| self.corrupt("meta/users is not 8 bytes"))
            }
            None => Ok(self.db.scan_prefix(USER_PREFIX).keys().count() as u64),
        }
    }

    /// The stored records, or None for a fresh state dir.
    pub fn read(&self) -> Result<Option<Stored>, StoreError> {
        let Some(mut records) = self.records_without_users()? else {
            return Ok(None);
        };
        for entry in self.db.scan_prefix(USER_PREFIX) {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let id = String::from_utf8(key[USER_PREFIX.len()..].to_vec())
                .map_err(|_| self.corrupt("a user key is not UTF-8"))?;
            records.users.push((id, self.body(&key, &value)?));
        }
        Ok(Some(Stored {
            records,
            offsets: self.offsets()?,
        }))
    }

    /// The stored records but the users (None for a fresh state dir): what a process needs
    /// before its first event.
    fn records_without_users(&self) -> Result<Option<EngineRecords>, StoreError> {
        if self.db.get(FORMAT_KEY).map_err(|e| self.io(e))?.is_none() {
            return Ok(None);
        }
        Ok(Some(EngineRecords {
            items: self.required(ITEMS_KEY)?,
            item_records: self.item_records()?,
            users: Vec::new(),
            shards: self.shards()?,
        }))
    }

    /// Every worker's shard record, in worker order: `shard`, then `shard/1`, `shard/2`, ...
    /// with none missing.
    fn shards(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut more = BTreeMap::new();
        for entry in self.db.scan_prefix(MORE_SHARDS_PREFIX) {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let name = String::from_utf8_lossy(&key).into_owned();
            let worker = name[MORE_SHARDS_PREFIX.len()..]
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| self.corrupt(format!("record {name}: not a worker's shard")))?;
            more.insert(worker, self.body(&key, &value)?);
        }
        let last = more.keys().last().copied().unwrap_or(0);
        let mut shards = vec![self.required(SHARD_KEY)?];
        for worker in 1..=last {
            let shard = more.remove(&worker).ok_or_else(|| {
                self.corrupt(format!(
                    "record shard/{worker} is missing (the state has worker shards up to shard/{last})"
                ))
            })?;
            shards.push(shard);
        }
        Ok(shards)
    }

    /// Every item record, in index order.
    fn item_records(&self) -> Result<Vec<(u32, Vec<u8>)>, StoreError> {
        let mut records = Vec::new();
        for entry in self.db.scan_prefix(PAGE_PREFIX) {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let number = self.page_number(&key)?;
            records.extend(self.page(number, &value)?);
        }
        Ok(records)
    }

    /// The pages `records` fall in, each with its stored records and `records` merged in.
    fn merged_pages(
        &self,
        records: &[(u32, Vec<u8>)],
    ) -> Result<BTreeMap<u32, pages::Page>, StoreError> {
        let mut merged: BTreeMap<u32, pages::Page> = BTreeMap::new();
        for (item, bytes) in records {
            let number = pages::page_of(*item);
            let page = match merged.entry(number) {
                std::collections::btree_map::Entry::Occupied(page) => page.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let stored = match self.db.get(page_key(number)).map_err(|e| self.io(e))? {
                        Some(value) => self.page(number, &value)?,
                        None => pages::Page::new(),
                    };
                    slot.insert(stored)
                }
            };
            page.insert(*item, bytes.clone());
        }
        Ok(merged)
    }

    fn page(&self, number: u32, value: &[u8]) -> Result<pages::Page, StoreError> {
        let body = self.body(format!("itempage/{number}").as_bytes(), value)?;
        pages::decode(number, pages::ITEMS_PER_PAGE, &body)
            .map_err(|why| self.corrupt(format!("record itempage/{number} {why}")))
    }

    fn page_number(&self, key: &[u8]) -> Result<u32, StoreError> {
        <[u8; 4]>::try_from(&key[PAGE_PREFIX.len()..])
            .map(u32::from_be_bytes)
            .map_err(|_| self.corrupt("an item page key is not 4 bytes of page number"))
    }

    fn offsets(&self) -> Result<Offsets, StoreError> {
        let mut offsets = Offsets::new();
        for entry in self.db.scan_prefix(OFFSET_PREFIX) {
            let (key, value) = entry.map_err(|e| self.io(e))?;
            let (topic, partition) = self.parse_offset_key(&key)?;
            let body = self.body(&key, &value)?;
            let next = <[u8; 8]>::try_from(body.as_slice())
                .map(i64::from_be_bytes)
                .map_err(|_| {
                    self.corrupt(format!(
                        "offset record for {topic}/{partition} is not 8 bytes"
                    ))
                })?;
            offsets.insert((topic, partition), next);
        }
        Ok(offsets)
    }

    /// The engine without its users (they load on demand with [`StateStore::user`]), but for
    /// those a pending deadline waits on: what a restart needs before it can process, in a time
    /// that does not grow with the users.
    pub fn open_engine(
        &self,
        config: EngineConfig,
    ) -> Result<Option<(Engine, Offsets)>, StoreError> {
        let Some(records) = self.records_without_users()? else {
            return Ok(None);
        };
        let mut engine =
            Engine::from_records(config, &records).map_err(|e| self.corrupt(e.to_string()))?;
        self.load_awaited(&mut engine)?;
        Ok(Some((engine, self.offsets()?)))
    }

    /// Loads the users a pending deadline waits on (see [`Engine::awaited_users`]).
    fn load_awaited(&self, engine: &mut Engine) -> Result<(), StoreError> {
        for user in engine.awaited_users() {
            if let Some(record) = self.user(&user)? {
                (engine.insert_user(&user, &record)).map_err(|e| self.corrupt(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// One engine per worker on one item model, with only the users of its pending deadlines
    /// (see [`StateStore::open_engine`]);
    /// refused when the store holds another number of worker shards.
    pub fn open_workers(
        &self,
        config: EngineConfig,
        workers: usize,
    ) -> Result<Option<(Vec<Engine>, Offsets)>, StoreError> {
        let Some(records) = self.records_without_users()? else {
            return Ok(None);
        };
        if records.shards.len() != workers {
            return Err(StoreError::Workers {
                path: self.shown(),
                stored: records.shards.len(),
                configured: workers,
            });
        }
        let mut engines = Engine::workers_from_records(config, &records)
            .map_err(|e| self.corrupt(e.to_string()))?;
        for engine in &mut engines {
            self.load_awaited(engine)?;
        }
        Ok(Some((engines, self.offsets()?)))
    }

    /// One user's stored record, if any.
    pub fn user(&self, user_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = [USER_PREFIX, user_id.as_bytes()].concat();
        match self.db.get(&key).map_err(|e| self.io(e))? {
            Some(value) => Ok(Some(self.body(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// Rebuilds the engine from the store, or None for a fresh state dir.
    pub fn load(&self, config: EngineConfig) -> Result<Option<(Engine, Offsets)>, StoreError> {
        let Some(stored) = self.read()? else {
            return Ok(None);
        };
        let engine = Engine::from_records(config, &stored.records)
            .map_err(|e| self.corrupt(e.to_string()))?;
        Ok(Some((engine, stored.offsets)))
    }

    fn required(&self, key: &[u8]) -> Result<Vec<u8>, StoreError> {
        let value = self.db.get(key).map_err(|e| self.io(e))?.ok_or_else(|| {
            self.corrupt(format!(
                "record {} is missing",
                String::from_utf8_lossy(key)
            ))
        })?;
        self.body(key, &value)
    }

    /// Strips and checks the version byte and the checksum.
    fn body(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let name = String::from_utf8_lossy(key);
        match record_body(value) {
            Ok(body) => Ok(body.to_vec()),
            Err(Frame::Newer(found)) => Err(StoreError::NewerFormat {
                path: self.shown(),
                found,
            }),
            Err(Frame::Damaged(why)) => Err(self.corrupt(format!("record {name} {why}"))),
        }
    }

    fn parse_offset_key(&self, key: &[u8]) -> Result<(String, i32), StoreError> {
        let rest = String::from_utf8(key[OFFSET_PREFIX.len()..].to_vec())
            .map_err(|_| self.corrupt("an offset key is not UTF-8"))?;
        let (topic, partition) = rest
            .rsplit_once('/')
            .ok_or_else(|| self.corrupt(format!("offset key {rest:?} has no partition")))?;
        let partition = partition
            .parse()
            .map_err(|_| self.corrupt(format!("offset key {rest:?} has a bad partition")))?;
        Ok((topic.to_owned(), partition))
    }
}

/// A record as stored: the format version, a checksum of the body, the body. Damage anywhere is
/// found before the body is decoded.
fn versioned(body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(body.len() + 9);
    value.push(FORMAT_VERSION);
    value.extend_from_slice(&xxh3_64(body).to_le_bytes());
    value.extend_from_slice(body);
    value
}

/// Why a stored value is not a record of this format.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Newer(u8),
    Damaged(&'static str),
}

/// The body of a stored record, once its version and checksum are checked.
pub fn record_body(value: &[u8]) -> Result<&[u8], Frame> {
    let Some((&version, rest)) = value.split_first() else {
        return Err(Frame::Damaged("is empty"));
    };
    if version > FORMAT_VERSION {
        return Err(Frame::Newer(version));
    }
    if version == 0 {
        return Err(Frame::Damaged("has version 0"));
    }
    let Some((checksum, body)) = rest.split_first_chunk::<8>() else {
        return Err(Frame::Damaged("is shorter than its checksum"));
    };
    if u64::from_le_bytes(*checksum) != xxh3_64(body) {
        return Err(Frame::Damaged("fails its checksum (damaged on disk?)"));
    }
    Ok(body)
}

/// Worker `n`'s shard record: `shard` for the first (as a one-worker store has it).
fn shard_key(worker: usize) -> Vec<u8> {
    match worker {
        0 => SHARD_KEY.to_vec(),
        n => format!("shard/{n}").into_bytes(),
    }
}

fn page_key(number: u32) -> Vec<u8> {
    [PAGE_PREFIX, &number.to_be_bytes()].concat()
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    [OFFSET_PREFIX, format!("{topic}/{partition}").as_bytes()].concat()
}

/// sled's page cache. Its default (1 GiB) is what made a burst of a million users grow `run`
/// to ~1 GB whatever `state.max_users_in_memory` said: users evicted from the engine stayed in
/// sled's cache instead.
const CACHE_BYTES: u64 = 128 << 20;

/// A handle this process dropped a moment ago may still hold the lock while sled's background
/// flusher winds down: a locked dir is retried for up to a second before it counts as in use.
fn open_db(path: &Path, shown: &str) -> Result<sled::Db, StoreError> {
    let mut tries = 0;
    loop {
        let config = sled::Config::new().path(path).cache_capacity(CACHE_BYTES);
        match config.open() {
            Ok(db) => return Ok(db),
            Err(err) => match open_error(shown, err) {
                StoreError::Locked { .. } if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return Err(other),
            },
        }
    }
}

fn open_error(path: &str, err: sled::Error) -> StoreError {
    let detail = err.to_string();
    match err {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock || detail.contains("lock") =>
        {
            StoreError::Locked {
                path: path.to_owned(),
            }
        }
        sled::Error::Corruption { .. } => StoreError::Corrupt {
            path: path.to_owned(),
            detail,
        },
        _ => StoreError::Io {
            path: path.to_owned(),
            detail,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventType};

    fn engine_with_events() -> Engine {
        let mut engine = Engine::new(EngineConfig::default());
        for (n, (user, item)) in [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "c")]
            .iter()
            .enumerate()
        {
            engine.apply(&Event::new(
                EventType::View,
                user,
                item,
                1_700_000_000_000 + n as i64,
            ));
        }
        engine
    }

    fn offsets() -> Offsets {
        [
            (("events".to_string(), 0), 42),
            (("events".to_string(), 2), 7),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn a_checkpoint_loads_back_to_the_same_state_and_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let mut engine = engine_with_events();
        {
            let store = StateStore::open(&path, true).unwrap();
            assert!(store.read().unwrap().is_none(), "fresh");
            let size = store.checkpoint(&mut engine, &offsets()).unwrap();
            assert_eq!(size.items, 3, "a, b and c are new");
            assert_eq!(
                size.records,
                1 + 2 + 1 + 2 + 2 + 1,
                "format, items, shard, the page of the 3 items, 2 users, 2 offsets, user count"
            );
            assert_eq!(size.users_stored, 2);
        }
        let store = StateStore::open(&path, false).unwrap();
        let stored = store.read().unwrap().unwrap();
        assert_eq!(stored.digest(), engine.digest());
        let (loaded, offsets_back) = store.load(EngineConfig::default()).unwrap().unwrap();
        assert_eq!(loaded.digest(), engine.digest());
        assert_eq!(offsets_back, offsets());
    }

    /// A crash between a restore and the worker's next checkpoint must leave the partition
    /// not current, so that the restart restores it again (deadlines included).
    #[test]
    fn a_restore_stores_its_users_and_leaves_the_offsets_to_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), true).unwrap();
        store
            .checkpoint(&mut engine_with_events(), &offsets())
            .unwrap();
        let restored = vec![("u9".to_string(), b"record".to_vec())];
        assert_eq!(store.write_restored(&restored).unwrap(), 3);
        assert_eq!(store.user("u9").unwrap().as_deref(), Some(&b"record"[..]));
        assert_eq!(
            store.offsets().unwrap(),
            offsets(),
            "as the last checkpoint left them"
        );
    }

    #[test]
    fn later_checkpoints_write_changed_users_and_users_load_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state"), true).unwrap();
        let mut engine = engine_with_events();
        store.checkpoint(&mut engine, &offsets()).unwrap();
        engine.apply(&Event::new(
            EventType::Purchase,
            "u1",
            "b",
            1_700_000_009_000,
        ));
        engine.apply(&Event::new(EventType::View, "u3", "a", 1_700_000_009_001));
        let size = store.checkpoint(&mut engine, &offsets()).unwrap();
        assert!(
            (1..=3).contains(&size.items),
            "a's rows and vector changed at least: {size:?}"
        );
        assert_eq!(
            size.records,
            1 + 2 + 1 + 2 + 2 + 1,
            "format, items, shard, the changed items' page, u1 and u3, offsets, user count"
        );
        assert_eq!(size.users_stored, 3, "u1 was stored before, u3 is new");
        let unchanged = store.checkpoint(&mut engine, &offsets()).unwrap();
        assert_eq!((unchanged.items, unchanged.records), (0, 1 + 2 + 2 + 1));
        assert_eq!(store.users_stored().unwrap(), 3);
        assert_eq!(store.read().unwrap().unwrap().digest(), engine.digest());

        let (mut lazy, offsets_back) = store.open_engine(EngineConfig::default()).unwrap().unwrap();
        assert_eq!(offsets_back, offsets());
        assert!(!lazy.has_user("u1"), "users wait in the store");
        for user in ["u1", "u2", "u3"] {
            let record = store.user(user).unwrap().unwrap();
            lazy.insert_user(user, &record).unwrap();
        }
        assert_eq!(lazy.digest(), engine.digest());
        assert!(store.user("nobody").unwrap().is_none());
    }

    /// Fails when users load only on their next event: an abandoned cart's user has none, so
    /// its deadline, passing after a restart, found no user to fire for.
    #[test]
    fn users_a_deadline_waits_on_are_in_memory_after_a_restart() {
        let rules = crate::fuzzing::shipped_trigger_rules();
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state"), true).unwrap();
        let mut engine = engine_with_events();
        engine.set_trigger_rules(rules.clone());
        let t0 = 1_700_000_010_000;
        engine.apply(&Event::new(EventType::AddToCart, "u1", "a", t0));
        store.checkpoint(&mut engine, &offsets()).unwrap();

        let open = |store: &StateStore| {
            let (mut engines, _) = store
                .open_workers(EngineConfig::default(), 1)
                .unwrap()
                .unwrap();
            engines.remove(0)
        };
        for mut restarted in [
            open(&store),
            store
                .open_engine(EngineConfig::default())
                .unwrap()
                .unwrap()
                .0,
        ] {
            assert!(restarted.has_user("u1"), "a deadline waits on u1");
            assert!(!restarted.has_user("u2"), "others wait in the store");
            restarted.set_trigger_rules(rules.clone());
            let later = t0 + 3 * 3_600_000;
            let fired = restarted.apply(&Event::new(EventType::View, "u2", "c", later));
            let users: Vec<String> = fired.effects.fired.into_iter().map(|f| f.user_id).collect();
            assert_eq!(
                users,
                ["u1"],
                "the cart abandonment fires after the restart"
            );
        }
    }

    #[test]
    fn a_missing_or_locked_dir_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = StateStore::open(&missing, false).err().unwrap();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
        let path = dir.path().join("state");
        let _held = StateStore::open(&path, true).unwrap();
        let err = StateStore::open(&path, true).err().unwrap();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_newer_format_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let db = sled::open(&path).unwrap();
            db.insert(FORMAT_KEY, &[FORMAT_VERSION + 1][..]).unwrap();
            db.flush().unwrap();
        }
        let err = StateStore::open(&path, true).err().unwrap();
        assert!(
            err.to_string().contains("newer than this build reads"),
            "{err}"
        );
        let db = sled::open(&path).unwrap();
        assert_eq!(
            db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
            &[FORMAT_VERSION + 1]
        );
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_record_is_found_before_decoding() {
        let value = versioned(b"some engine state");
        assert_eq!(record_body(&value), Ok(&b"some engine state"[..]));
        for at in 1..value.len() {
            let mut damaged = value.clone();
            damaged[at] ^= 0x10;
            assert!(
                matches!(record_body(&damaged), Err(Frame::Damaged(_))),
                "byte {at}"
            );
        }
        assert_eq!(record_body(&[]), Err(Frame::Damaged("is empty")));
        assert_eq!(
            record_body(&[FORMAT_VERSION + 1]),
            Err(Frame::Newer(FORMAT_VERSION + 1))
        );
    }

    #[test]
    fn changed_items_are_merged_into_their_stored_pages() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state"), true).unwrap();
        let mut engine = Engine::new(EngineConfig::default());
        let view = |n: usize| {
            let user = format!("u{}", n % 7);
            Event::new(EventType::View, &user, &format!("i{n}"), 1_000 + n as i64)
        };
        for n in 0..600 {
            engine.apply(&view(n));
        }
        let first = store.checkpoint(&mut engine, &offsets()).unwrap();
        let pages = 3;
        assert_eq!((first.items, first.records), (600, 3 + pages + 7 + 2 + 1));
        // A few items change (and the negatives their steps sample): their pages are merged.
        for n in [3, 300, 301] {
            engine.apply(&view(n + 10_000));
            engine.apply(&view(n));
        }
        let later = store.checkpoint(&mut engine, &offsets()).unwrap();
        assert!(later.items < 600, "{later:?}");
        assert_eq!(store.read().unwrap().unwrap().digest(), engine.digest());
        let (restored, _) = store.open_engine(EngineConfig::default()).unwrap().unwrap();
        assert_eq!(restored.item_count(), 603);
    }

    /// A state dir whose item records are damaged, newer or missing is refused by the record's
    /// name, and opening it changes nothing on disk.
    #[test]
    fn bad_item_records_are_named_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let refused = |damage: &dyn Fn(&sled::Db)| -> String {
            let _ = std::fs::remove_dir_all(&path);
            let store = StateStore::open(&path, true).unwrap();
            store
                .checkpoint(&mut engine_with_events(), &offsets())
                .unwrap();
            damage(&store.db);
            store.db.flush().unwrap();
            let before: Vec<_> = store.db.iter().map(Result::unwrap).collect();
            drop(store);
            let store = StateStore::open(&path, false).unwrap();
            let err = store.open_engine(EngineConfig::default()).err().unwrap();
            assert!(store.load(EngineConfig::default()).is_err());
            let after: Vec<_> = store.db.iter().map(Result::unwrap).collect();
            assert_eq!(before, after, "nothing was overwritten");
            err.to_string()
        };
        let err = refused(&|db| {
            let mut value = db.get(page_key(0)).unwrap().unwrap().to_vec();
            let last = value.len() - 1;
            value[last] ^= 1;
            db.insert(page_key(0), value).unwrap();
        });
        assert!(
            err.contains("record itempage/0 fails its checksum"),
            "{err}"
        );
        let err = refused(&|db| {
            let mut value = db.get(page_key(0)).unwrap().unwrap().to_vec();
            value[0] = FORMAT_VERSION + 1;
            db.insert(page_key(0), value).unwrap();
        });
        assert!(err.contains("newer than this build reads"), "{err}");
        let err = refused(&|db| {
            db.remove(page_key(0)).unwrap();
        });
        assert!(
            err.contains("record item/0 is missing (the model has 3 items)"),
            "{err}"
        );
        fn rewritten(edit: fn(&mut pages::Page)) -> impl Fn(&sled::Db) {
            move |db: &sled::Db| {
                let value = db.get(page_key(0)).unwrap().unwrap();
                let mut page =
                    pages::decode(0, pages::ITEMS_PER_PAGE, record_body(&value).unwrap()).unwrap();
                edit(&mut page);
                db.insert(page_key(0), versioned(&pages::encode(&page)))
                    .unwrap();
            }
        }
        let err = refused(&rewritten(|page| {
            page.insert(1, vec![7, 7, 7]);
        }));
        assert!(err.contains("cannot decode record item/1"), "{err}");
        let err = refused(&rewritten(|page| {
            page.insert(300, vec![7]);
        }));
        assert!(
            err.contains("record itempage/0 holds item 300, which belongs to page 1"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_records_are_reported_with_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let store = StateStore::open(&path, true).unwrap();
            store
                .checkpoint(&mut engine_with_events(), &offsets())
                .unwrap();
            store
                .db
                .insert(ITEMS_KEY, versioned(&[0xff, 0xff]))
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = StateStore::open(&path, false).unwrap();
        let err = store.load(EngineConfig::default()).err().unwrap();
        assert!(
            err.to_string()
                .contains("is corrupt: cannot decode the item model"),
            "{err}"
        );
        store.db.remove(ITEMS_KEY).unwrap();
        let err = store.read().err().unwrap();
        assert!(err.to_string().contains("record items is missing"), "{err}");
    }

    /// Three workers' engines on one item model, each with a user of its own.
    fn three_workers() -> Vec<Engine> {
        let first = engine_with_events();
        let items = first.shared_items();
        let mut workers = vec![first];
        for worker in 1..3 {
            workers.push(Engine::with_items(
                EngineConfig::default(),
                items.clone(),
                worker,
            ));
        }
        for (worker, engine) in workers.iter_mut().enumerate() {
            let user = format!("w{worker}");
            engine.apply(&Event::new(EventType::View, &user, "a", 1_700_000_100_000));
        }
        workers
    }

    #[test]
    fn a_state_of_several_workers_opens_as_that_many_and_only_that_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let store = StateStore::open(&path, true).unwrap();
        let workers = three_workers();
        let refs: Vec<&Engine> = workers.iter().collect();
        let records = Engine::records_of(&refs);
        store.write(&records, &offsets()).unwrap();
        let stored = store.read().unwrap().unwrap();
        assert_eq!(stored.records.shards.len(), 3);
        assert_eq!(stored.digest(), records_digest(&records));

        let (engines, back) = store
            .open_workers(EngineConfig::default(), 3)
            .unwrap()
            .unwrap();
        assert_eq!((engines.len(), back), (3, offsets()));
        assert_eq!(engines[2].item_count(), workers[0].item_count());
        let err = store
            .open_workers(EngineConfig::default(), 2)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains(
                "holds the state of 3 workers and pipeline.workers is 2: set pipeline.workers = 3"
            ),
            "{err}"
        );

        store.db.remove(b"shard/1").unwrap();
        let before: Vec<_> = store.db.iter().map(Result::unwrap).collect();
        let err = store
            .open_workers(EngineConfig::default(), 3)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("record shard/1 is missing (the state has worker shards up to shard/2)"),
            "{err}"
        );
        let after: Vec<_> = store.db.iter().map(Result::unwrap).collect();
        assert_eq!(before, after, "nothing was overwritten");
        store.db.insert(b"shard/x", versioned(b"?")).unwrap();
        let err = store.read().err().unwrap();
        assert!(
            err.to_string()
                .contains("record shard/x: not a worker's shard"),
            "{err}"
        );
    }
}
