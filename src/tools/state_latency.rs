//! `bench-state`'s latency phase: event → recommendation latency on the engine, with and
//! without a checkpoint under way, the way `run`'s worker meets it.
//!
//! Events arrive on a fixed schedule (open loop, so an event that waits behind a stall counts
//! its wait: no coordinated omission); each is applied and its user's recommendations ranked.
//! In the checkpoint window the worker takes the cut at the window's start — the item side and
//! the rest of the shard at once, the users in steps between events — and a second thread
//! encodes and writes it meanwhile, as `run` does.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::{Changes, Engine, USERS_PER_STEP};
use crate::event::Event;
use crate::ranking::Filters;
use crate::store::{CheckpointSize, Offsets, StateStore, StoreError};

/// One window's latencies, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Window {
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What a checkpoint taken while events flow costs, and where.
#[derive(Debug, Serialize)]
pub struct CheckpointUnderLoad {
    /// The cut on the worker before the next event (the users' steps come after).
    pub cut_s: f64,
    /// Encoding and sled's write on the other thread.
    pub encode_and_write_s: f64,
    pub items_written: usize,
    pub bytes: usize,
    pub window: Window,
}

/// Runs `events` at `rate` per second through `engine` from `start` on, measuring each from
/// its scheduled arrival to its recommendations.
pub fn window(engine: &mut Engine, events: &[Event], rate: f64, start: Instant) -> Window {
    window_stepping(engine, events, rate, start, |_| false)
}

/// `window`, with `step` run on the engine before each event, and again while the next event
/// is not due yet, as long as it returns true (work left), as `run`'s worker does.
fn window_stepping(
    engine: &mut Engine,
    events: &[Event],
    rate: f64,
    start: Instant,
    mut step: impl FnMut(&mut Engine) -> bool,
) -> Window {
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for (n, event) in events.iter().enumerate() {
        let arrival = start + Duration::from_secs_f64(n as f64 / rate);
        let mut more = step(engine);
        while more && Instant::now() < arrival {
            more = step(engine);
        }
        if let Some(early) = arrival.checked_duration_since(Instant::now()) {
            std::thread::sleep(early);
        }
        engine.apply(event);
        std::hint::black_box(engine.recommend(&event.user_id, 10, &Filters::default()));
        let _ = latencies.record(arrival.elapsed().as_micros().max(1) as u64);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Window {
        events: events.len(),
        p50_ms: ms(latencies.value_at_quantile(0.5)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        max_ms: ms(latencies.max()),
    }
}

/// `window` with a checkpoint cut at its start and written on another thread meanwhile.
pub fn window_with_checkpoint(
    engine: &mut Engine,
    events: &[Event],
    rate: f64,
    (store, offsets): (&StateStore, &Offsets),
) -> Result<CheckpointUnderLoad, StoreError> {
    let started = Instant::now();
    let unfinished = engine.begin_users_cut();
    debug_assert!(unfinished.is_none());
    let items = engine.cut_items();
    let cut_s = started.elapsed().as_secs_f64();
    let items_written = items.items_changed();
    let (store, offsets) = (store.clone(), offsets.clone());
    let (users_tx, users_rx) = std::sync::mpsc::sync_channel(1);
    let writer = std::thread::spawn(move || -> Result<(CheckpointSize, f64), StoreError> {
        let users = users_rx.recv().expect("the worker completes its cut");
        let started = Instant::now();
        let size = store.write(&Changes::of(items, vec![users]).encode(), &offsets)?;
        Ok((size, started.elapsed().as_secs_f64()))
    });
    let mut users_tx = Some(users_tx);
    let step = |engine: &mut Engine| {
        if let Some(users) = users_tx
            .as_ref()
            .and(engine.continue_users_cut(USERS_PER_STEP))
        {
            let _ = users_tx.take().expect("once").send(users);
        }
        users_tx.is_some()
    };
    // The window starts before the cut: the first events wait for it.
    let window = window_stepping(engine, events, rate, started, step);
    if let (Some(tx), Some(users)) = (users_tx, engine.continue_users_cut(usize::MAX)) {
        let _ = tx.send(users);
    }
    let (size, encode_and_write_s) = writer.join().expect("the checkpoint writer panicked")?;
    Ok(CheckpointUnderLoad {
        cut_s,
        encode_and_write_s,
        items_written,
        bytes: size.bytes,
        window,
    })
}
