//! Hot-path benchmarks: `Engine::apply` and `Engine::recommend` on a synthetic shopper stream,
//! and what a checkpoint with a changelog does on the worker per advanced partition: cutting
//! its latest dedup keys into a record. Run: `cargo bench --bench engine`. Each bench builds
//! its state when it first runs (criterion calls a bench's function once per sample), so that
//! a filtered run builds only its own.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use streamrec::config::EngineConfig;
use streamrec::dedup::DedupWindow;
use streamrec::event::EventType;
use streamrec::kafka::CarriedKeys;
use streamrec::ranking::Filters;
use streamrec::synthetic::{ShopperConfig, Shoppers};
use streamrec::{Engine, Event};

const WARM_EVENTS: usize = 200_000;
const BATCH: usize = 10_000;

fn bench_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.factorization.rank = 32;
    if let Ok(window) = std::env::var("BENCH_WINDOW") {
        config.cooccurrence.window_items = window.parse().expect("BENCH_WINDOW is a number");
    }
    if let Ok(negatives) = std::env::var("BENCH_NEGATIVES") {
        config.factorization.negatives = negatives.parse().expect("BENCH_NEGATIVES is a number");
    }
    config
}

fn stream() -> Vec<Event> {
    Shoppers::new(ShopperConfig::default())
        .take(WARM_EVENTS + BATCH)
        .collect()
}

/// An engine that learned the first `WARM_EVENTS` of `events`.
fn warmed<E: Borrow<Event>>(events: impl IntoIterator<Item = E>) -> Engine {
    let mut engine = Engine::new(bench_config());
    for event in events.into_iter().take(WARM_EVENTS) {
        engine.apply(event.borrow());
    }
    engine
}

/// One engine goes on learning one stream, batch after batch, as a worker's does. Cloning a
/// warm engine per batch would time copy-on-write instead: a clone shares every row, so the
/// batch's first write to each row copies it, which a live engine pays only for rows that a
/// checkpoint holds.
fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let config = bench_config();
    let name = format!(
        "rank32_window{}_negatives{}",
        config.cooccurrence.window_items, config.factorization.negatives
    );
    let mut learning = None;
    group.bench_function(name, |b| {
        // Criterion calls this once per sample: the one engine is warmed at the first.
        let (shoppers, engine) = learning.get_or_insert_with(|| {
            let mut shoppers = Shoppers::new(ShopperConfig::default());
            let engine = warmed(shoppers.by_ref());
            (shoppers, engine)
        });
        b.iter_custom(|batches| {
            let mut spent = Duration::ZERO;
            for _ in 0..batches {
                let batch: Vec<Event> = shoppers.by_ref().take(BATCH).collect();
                let started = Instant::now();
                for event in &batch {
                    engine.apply(event);
                }
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

fn recommend(c: &mut Criterion) {
    const USERS: usize = 1000;
    let mut group = c.benchmark_group("recommend");
    group.throughput(Throughput::Elements(USERS as u64));
    let mut warm = None;
    group.bench_function("top10_hybrid", |b| {
        let (events, engine) = warm.get_or_insert_with(|| {
            let events = stream();
            let engine = warmed(&events);
            (events, engine)
        });
        let users: Vec<&str> = events[WARM_EVENTS..WARM_EVENTS + USERS]
            .iter()
            .map(|e| e.user_id.as_str())
            .collect();
        b.iter(|| {
            users
                .iter()
                .map(|u| engine.recommend(u, 10, &Filters::default()).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// One partition's latest 5,000 keys (the default `kafka.changelog_dedup_keys`) out of a full
/// window of 1M keys over 12 partitions, cut and encoded as the changelog record.
fn dedup_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    let mut full = None;
    group.bench_function("dedup_keys_5000", |b| {
        let window = full.get_or_insert_with(|| {
            let mut window = DedupWindow::new(Default::default());
            for n in 0..1_000_000i64 {
                let event = Event::new(EventType::View, "u", &n.to_string(), 1_700_000_000_000 + n);
                window.first_sighting((n % 12) as u64, &event);
            }
            window
        });
        b.iter(|| {
            let keys = window.keys_after(7, 0, 5_000).keys;
            CarriedKeys {
                next_offset: 1,
                keys,
            }
            .encode()
            .len()
        })
    });
    group.finish();
}

criterion_group!(benches, apply, recommend, dedup_keys);
criterion_main!(benches);
