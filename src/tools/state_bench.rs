//! `streamrec bench-state`: what checkpoints cost and how long a restart takes for a large
//! synthetic state, on real sled files.
//!
//! 1. learn: a synthetic shop's events for `users` users go through `Engine::apply`;
//! 2. first checkpoint: everything (every user is new to the store);
//! 3. a later checkpoint, after `batch` more events (what `run` writes every interval);
//! 4. restart: open the store and the engine without its users, then the first event (its user
//!    read back from the store) — the time from start to the first processed event;
//! 5. for contrast, loading every user at start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::store::{CheckpointSize, Offsets, StateStore, StoreError};
use crate::synthetic::{ShopperConfig, Shoppers};

pub struct StateBenchOptions {
    pub users: usize,
    pub events: usize,
    pub batch: usize,
    /// Where the state dir goes (removed afterwards).
    pub dir: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct StateBenchReport {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub apply_per_s: f64,
    pub bytes_per_user_in_memory: f64,
    pub bytes_per_item_in_memory: f64,
    pub first_checkpoint_s: f64,
    pub first_checkpoint_bytes: usize,
    pub batch: usize,
    pub users_in_batch: usize,
    /// What events wait for in `run`: encoding the changed records on the worker.
    pub later_checkpoint_encode_s: f64,
    /// sled's write and flush, on a blocking thread while events flow.
    pub later_checkpoint_write_s: f64,
    pub later_checkpoint_bytes: usize,
    pub disk_bytes: u64,
    pub restart_to_first_event_s: f64,
    /// The part of the restart spent opening sled (it rebuilds its page table from its log).
    pub restart_open_store_s: f64,
    pub full_load_s: f64,
}

pub fn bench_state(options: &StateBenchOptions) -> Result<StateBenchReport, StoreError> {
    let _ = std::fs::remove_dir_all(&options.dir);
    let config = EngineConfig::default();
    let mut shop = Shoppers::new(ShopperConfig {
        users: options.users,
        ..ShopperConfig::default()
    });
    let mut engine = Engine::new(config.clone());
    let started = Instant::now();
    for event in shop.by_ref().take(options.events) {
        engine.apply(&event);
    }
    let apply_per_s = options.events as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "learned {} events: {apply_per_s:.0} events/s",
        options.events
    );
    let memory = engine.memory();

    let store = StateStore::open(&options.dir, true)?;
    let offsets: Offsets = [(("events".to_string(), 0), options.events as i64)].into();
    let (first, first_size) = timed_checkpoint(&store, &mut engine, &offsets)?;
    eprintln!(
        "first checkpoint: {:.2} s, {} bytes",
        first.encode + first.write,
        first_size.bytes
    );

    let batch: Vec<_> = shop.take(options.batch).collect();
    let users_in_batch = batch
        .iter()
        .map(|e| e.user_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    for event in &batch {
        engine.apply(event);
    }
    let (later, later_size) = timed_checkpoint(&store, &mut engine, &offsets)?;
    eprintln!(
        "later checkpoint: {:.2} s + {:.2} s, {} bytes",
        later.encode, later.write, later_size.bytes
    );
    let (users, items) = (engine.user_count(), engine.item_count());
    let first_event = batch.last().cloned();
    drop(engine);
    drop(store);
    let disk_bytes = disk_usage(&options.dir);

    let restart = Instant::now();
    let store = StateStore::open(&options.dir, false)?;
    let open_store = restart.elapsed();
    let (mut engine, _) = store
        .open_engine(config.clone())?
        .expect("the state was just written");
    if let Some(event) = first_event {
        if let Some(record) = store.user(&event.user_id)? {
            engine
                .insert_user(&event.user_id, &record)
                .expect("a record this build wrote");
        }
        engine.apply(&event);
    }
    let restart_to_first_event = restart.elapsed();
    drop(engine);
    let full = Instant::now();
    let loaded = store.load(config)?;
    let full_load = full.elapsed();
    drop(loaded);
    drop(store);
    let _ = std::fs::remove_dir_all(&options.dir);
    Ok(StateBenchReport {
        users,
        items,
        events: options.events,
        apply_per_s,
        bytes_per_user_in_memory: memory.bytes_per_user(),
        bytes_per_item_in_memory: memory.bytes_per_item(),
        first_checkpoint_s: first.encode + first.write,
        first_checkpoint_bytes: first_size.bytes,
        batch: options.batch,
        users_in_batch,
        later_checkpoint_encode_s: later.encode,
        later_checkpoint_write_s: later.write,
        later_checkpoint_bytes: later_size.bytes,
        disk_bytes,
        restart_to_first_event_s: seconds(restart_to_first_event),
        restart_open_store_s: seconds(open_store),
        full_load_s: seconds(full_load),
    })
}

/// A checkpoint as `run` makes it: encoding on the worker (events wait), then sled's write on a
/// blocking thread. Returns both times and the size.
fn timed_checkpoint(
    store: &StateStore,
    engine: &mut Engine,
    offsets: &Offsets,
) -> Result<(Timed, CheckpointSize), StoreError> {
    let started = Instant::now();
    let records = engine.to_changed_records();
    engine.mark_checkpointed();
    let encode = seconds(started.elapsed());
    let started = Instant::now();
    let size = store.write(&records, offsets)?;
    let write = seconds(started.elapsed());
    Ok((Timed { encode, write }, size))
}

struct Timed {
    encode: f64,
    write: f64,
}

fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => disk_usage(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
