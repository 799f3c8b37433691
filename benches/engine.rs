//! Hot-path benchmarks: `Engine::apply` and `Engine::recommend` on a synthetic shopper stream.
//! Run: `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use streamrec::config::EngineConfig;
use streamrec::ranking::Filters;
use streamrec::synthetic::{ShopperConfig, Shoppers};
use streamrec::{Engine, Event};

const WARM_EVENTS: usize = 200_000;
const BATCH: usize = 10_000;

fn bench_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.factorization.rank = 32;
    config.cooccurrence.window_items =
        std::env::var("BENCH_WINDOW").map_or(20, |w| w.parse().unwrap());
    config
}

fn stream() -> Vec<Event> {
    Shoppers::new(ShopperConfig::default())
        .take(WARM_EVENTS + BATCH)
        .collect()
}

fn warmed(events: &[Event]) -> Engine {
    let mut engine = Engine::new(bench_config());
    for event in &events[..WARM_EVENTS] {
        engine.apply(event);
    }
    engine
}

fn apply(c: &mut Criterion) {
    let events = stream();
    let engine = warmed(&events);
    let batch = &events[WARM_EVENTS..];
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    let name = format!("rank32_window{}", engine.config().cooccurrence.window_items);
    group.bench_function(name, |b| {
        b.iter_batched(
            || engine.clone(),
            |mut engine| {
                for event in batch {
                    engine.apply(event);
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn recommend(c: &mut Criterion) {
    let events = stream();
    let engine = warmed(&events);
    let users: Vec<&str> = events[WARM_EVENTS..WARM_EVENTS + 1000]
        .iter()
        .map(|e| e.user_id.as_str())
        .collect();
    let mut group = c.benchmark_group("recommend");
    group.throughput(Throughput::Elements(users.len() as u64));
    group.bench_function("top10_hybrid", |b| {
        b.iter(|| {
            users
                .iter()
                .map(|u| engine.recommend(u, 10, &Filters::default()).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, apply, recommend);
criterion_main!(benches);
