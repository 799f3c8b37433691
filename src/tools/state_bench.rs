//! `streamrec bench-state`: what checkpoints cost and how long a restart takes for a large
//! synthetic state, on real sled files.
//!
//! 1. learn: a synthetic shop's events for `users` users go through `Engine::apply`;
//! 2. first checkpoint: everything (every user is new to the store);
//! 3. `batch` more events, then event → recommendation latency over two windows of events on a
//!    schedule: one without a checkpoint, one during a checkpoint of everything changed since
//!    the first (what `run` writes every interval; see `state_latency`);
//! 4. restart, in a new process (`state_restart`): open the store and the engine without its
//!    users, then the first event (its user read back from the store) — the time from start to
//!    the first processed event; for contrast, loading every user as well.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::store::{CheckpointSize, Offsets, StateStore, StoreError};
use crate::synthetic::{ShopperConfig, Shoppers};
use crate::tools::state_latency::{self, CheckpointUnderLoad, Window};
use crate::tools::state_restart::{self, RestartTimes};

pub struct StateBenchOptions {
    pub users: usize,
    pub events: usize,
    pub batch: usize,
    /// Events per second in the latency windows (each is 3 s long).
    pub rate: f64,
    /// Where the state dir goes (removed afterwards).
    pub dir: PathBuf,
    /// Drop the kernel's page cache before the restart (needs root).
    pub cold: bool,
    /// Keep the state dir (see `state_restart::command_line`).
    pub keep: bool,
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
    /// Users with an event since the first checkpoint (batch and the first window).
    pub users_changed: usize,
    pub rate: f64,
    pub without_checkpoint: Window,
    /// The later checkpoint, taken at the start of the second window.
    pub during_checkpoint: CheckpointUnderLoad,
    pub disk_bytes: u64,
    pub restart: RestartTimes,
    /// Whether the restart began with the page cache dropped.
    pub restart_cold: bool,
}

pub fn bench_state(options: &StateBenchOptions) -> anyhow::Result<StateBenchReport> {
    let _ = std::fs::remove_dir_all(&options.dir);
    let config = EngineConfig::default();
    let mut shop = Shoppers::new(ShopperConfig {
        users: options.users,
        ..ShopperConfig::default()
    });
    let mut engine = Engine::new(config);
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

    let batch: Vec<_> = shop.by_ref().take(options.batch).collect();
    for event in &batch {
        engine.apply(event);
    }
    let window_events = (options.rate * 3.0) as usize;
    let quiet: Vec<_> = shop.by_ref().take(window_events).collect();
    let busy: Vec<_> = shop.take(window_events).collect();
    let users_changed = batch
        .iter()
        .chain(&quiet)
        .map(|e| e.user_id.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let without_checkpoint =
        state_latency::window(&mut engine, &quiet, options.rate, Instant::now());
    eprintln!("without a checkpoint: {without_checkpoint:?}");
    let offsets: Offsets = [(("events".to_string(), 0), offsets_after(options, 2))].into();
    let during_checkpoint = state_latency::window_with_checkpoint(
        &mut engine,
        &busy,
        options.rate,
        (&store, &offsets),
    )?;
    eprintln!("during a checkpoint: {during_checkpoint:?}");
    let (users, items) = (engine.user_count(), engine.item_count());
    let first_event = busy.last().cloned();
    drop(engine);
    drop(store);
    let disk_bytes = disk_usage(&options.dir);

    let first_event = first_event.expect("the latency windows have events");
    let restart = state_restart::restart_in_new_process(&options.dir, &first_event, options.cold);
    if options.keep {
        let again = state_restart::command_line(&options.dir, &first_event);
        eprintln!("state kept; restart it again with: {again}");
    } else {
        let _ = std::fs::remove_dir_all(&options.dir);
    }
    let restart = restart?;
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
        users_changed,
        rate: options.rate,
        without_checkpoint,
        during_checkpoint,
        disk_bytes,
        restart,
        restart_cold: options.cold,
    })
}

/// The first offset after the learning, the batch and `windows` latency windows.
fn offsets_after(options: &StateBenchOptions, windows: usize) -> i64 {
    (options.events + options.batch + windows * (options.rate * 3.0) as usize) as i64
}

/// A checkpoint encoded and written on this thread. Returns both times and the size.
fn timed_checkpoint(
    store: &StateStore,
    engine: &mut Engine,
    offsets: &Offsets,
) -> Result<(Timed, CheckpointSize), StoreError> {
    let started = Instant::now();
    let records = engine.cut().encode();
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
