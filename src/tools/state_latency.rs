//! `bench-state`'s latency phase: event → recommendation latency on the engine, with and
//! without a checkpoint under way, the way `run`'s worker meets it.
//!
//! Events arrive on a fixed schedule (open loop, so an event that waits behind a stall counts
//! its wait: no coordinated omission); each is applied and its user's recommendations ranked.
//! In the checkpoint window the worker takes the cut at the window's start and a second thread
//! encodes and writes it meanwhile, as `run` does.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::engine::Engine;
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
    /// The cut on the worker: what the events behind it wait for.
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
    let mut latencies = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for (n, event) in events.iter().enumerate() {
        let arrival = start + Duration::from_secs_f64(n as f64 / rate);
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
    let changes = engine.cut();
    let cut_s = started.elapsed().as_secs_f64();
    let items_written = changes.items_changed();
    let (store, offsets) = (store.clone(), offsets.clone());
    let writer = std::thread::spawn(move || -> Result<(CheckpointSize, f64), StoreError> {
        let started = Instant::now();
        let size = store.write(&changes.encode(), &offsets)?;
        Ok((size, started.elapsed().as_secs_f64()))
    });
    // The window starts before the cut: the first events wait for it.
    let window = window(engine, events, rate, started);
    let (size, encode_and_write_s) = writer.join().expect("the checkpoint writer panicked")?;
    Ok(CheckpointUnderLoad {
        cut_s,
        encode_and_write_s,
        items_written,
        bytes: size.bytes,
        window,
    })
}
