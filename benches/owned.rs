//! The item-owned topology's three costs per event, on the synthetic shopper stream (rank 32,
//! window 20, as `benches/engine.rs`): an instance's user side (learning against a read model
//! and collecting the item-side work), an owner applying that work from its wire form, and a
//! reader installing the owners' records. With N instances every instance installs every
//! record, so the total per event is `user_side + owner_apply + N × view_install`. Run:
//! `cargo bench --bench owned` (`BENCH_SYNC=E` for another interval, `BENCH_SIGNIFICANCE=S`
//! for another significance).

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use streamrec::config::EngineConfig;
use streamrec::engine::{ItemKeys, ItemModel, ItemOwner, ItemWork, Publication, WorkBatch};
use streamrec::synthetic::{ShopperConfig, Shoppers};
use streamrec::{Engine, Event};

/// Events learned before the measured ones (`BENCH_WARM`, default 200,000): a longer warm-up
/// fills more neighbour lists.
fn warm_events() -> usize {
    std::env::var("BENCH_WARM").map_or(200_000, |s| s.parse().expect("BENCH_WARM is a number"))
}
const BATCH: usize = 10_000;
/// Work reaches the owners, and their records the readers, every this many events
/// (`BENCH_SYNC`, default 1,000: 10 ms at 100k events/s).
fn sync_every() -> usize {
    std::env::var("BENCH_SYNC").map_or(1_000, |s| s.parse().expect("BENCH_SYNC is a number"))
}
const ITEM_PARTITIONS: u32 = 24;

/// An item's view waits until it moved by this share (`BENCH_SIGNIFICANCE`, default 0.05).
fn significance() -> f32 {
    std::env::var("BENCH_SIGNIFICANCE").map_or(0.05, |s| s.parse().expect("a share"))
}

fn bench_config() -> EngineConfig {
    let mut config = EngineConfig::default();
    config.factorization.rank = 32;
    config.cooccurrence.window_items = 20;
    config
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .unwrap()
        .0
}

/// At the end of the warm-up: a deferring engine (its read model a copy) and the owner of
/// every item; then what the next events sent between them on the wire: work batches, then
/// records.
struct Owned {
    user_side: Engine,
    owner: ItemModel,
    /// The read model's keys, as of the warm-up's end.
    keys: ItemKeys,
    batches: Vec<Vec<u8>>,
    publications: Vec<Vec<u8>>,
}

fn owned(events: &[Event]) -> Owned {
    let config = bench_config();
    let mut user_side = Engine::new(config.clone());
    user_side.defer_item_work(true);
    let mut owner = ItemOwner::new(&config);
    owner.significance = significance();
    let mut keys = ItemKeys::default();
    let mut warm = None;
    let (mut batches, mut publications) = (Vec::new(), Vec::new());
    for (n, chunk) in events.chunks(sync_every()).enumerate() {
        if n * sync_every() == warm_events() {
            warm = Some((user_side.clone(), owner.items.clone(), keys.clone()));
        }
        let mut work = ItemWork::default();
        for event in chunk {
            work.append(user_side.apply(event).effects.item_work);
        }
        let shared = user_side.shared_items();
        let mut read = shared.write().unwrap();
        for (_, batch) in work.batches(&read, ITEM_PARTITIONS) {
            let bytes = encode(&batch);
            owner.apply(decode(&bytes), &config).unwrap();
            batches.push(bytes);
        }
        let published = encode(&owner.publish());
        keys.install(&mut read, &decode(&published), &config);
        publications.push(published);
        if warm.is_none() {
            batches.clear();
            publications.clear();
        }
    }
    let (user_side, owner, keys) = warm.expect("the stream is longer than the warm-up");
    Owned {
        user_side,
        owner,
        keys,
        batches,
        publications,
    }
}

/// The costs per event over the measured events in one pass with nothing cloned: a
/// clone shares copy-on-write rows with the model, so criterion's copies make the first write
/// to each row copy it, which a running owner does not (only a checkpoint's cut shares rows).
fn one_pass(events: &[Event]) -> [f64; 4] {
    let config = bench_config();
    let mut user_side = Engine::new(config.clone());
    user_side.defer_item_work(true);
    let mut owner = ItemOwner::new(&config);
    owner.significance = significance();
    let mut keys = ItemKeys::default();
    let mut spent = [Duration::ZERO; 4];
    for (n, chunk) in events.chunks(sync_every()).enumerate() {
        let timed = n * sync_every() >= warm_events();
        let mut time = |part: usize, started: Instant| {
            if timed {
                spent[part] += started.elapsed();
            }
        };
        let started = Instant::now();
        let mut work = ItemWork::default();
        for event in chunk {
            work.append(user_side.apply(event).effects.item_work);
        }
        time(0, started);
        let shared = user_side.shared_items();
        let mut read = shared.write().unwrap();
        let batches: Vec<Vec<u8>> = (work.batches(&read, ITEM_PARTITIONS).iter())
            .map(|(_, batch)| encode(batch))
            .collect();
        let started = Instant::now();
        for bytes in &batches {
            owner.apply(decode(bytes), &config).unwrap();
        }
        time(1, started);
        let started = Instant::now();
        let published = encode(&owner.publish());
        time(2, started);
        let started = Instant::now();
        keys.install(&mut read, &decode(&published), &config);
        time(3, started);
    }
    spent.map(|d| d.as_secs_f64() * 1e6 / BATCH as f64)
}

fn records(publications: &[Vec<u8>], count: fn(&Publication) -> usize) -> usize {
    publications.iter().map(|bytes| count(&decode(bytes))).sum()
}

fn costs(c: &mut Criterion) {
    let events: Vec<Event> = Shoppers::new(ShopperConfig::default())
        .take(warm_events() + BATCH)
        .collect();
    let owned = owned(&events);
    let config = bench_config();
    let bytes = |records: &[Vec<u8>]| records.iter().map(Vec::len).sum::<usize>();
    println!(
        "{BATCH} events after {}, synced every {}, significance {}: {} work records ({} bytes); {} item views and {} neighbour lists ({} bytes)",
        warm_events(),
        sync_every(),
        significance(),
        owned.batches.len(),
        bytes(&owned.batches),
        records(&owned.publications, |p| p.views.len()),
        records(&owned.publications, |p| p.lists.len()),
        bytes(&owned.publications),
    );
    let [user, owner, publish, installs] = one_pass(&events);
    println!(
        "one pass, nothing cloned, per event: user side {user:.1} us, owner applying {owner:.1} us and publishing {publish:.1} us, a reader installing {installs:.1} us"
    );
    let mut group = c.benchmark_group("owned");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("user_side", |b| {
        b.iter_batched(
            || owned.user_side.clone(),
            |mut engine| {
                for event in &events[warm_events()..] {
                    engine.apply(event);
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("owner_apply", |b| {
        b.iter_batched(
            || ItemOwner::from_items(owned.owner.clone()),
            |mut owner| {
                for bytes in &owned.batches {
                    owner.apply(decode::<WorkBatch>(bytes), &config).unwrap();
                }
                owner
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("view_install", |b| {
        let read = owned.user_side.shared_items();
        let read = read.read().unwrap();
        b.iter_batched(
            || (read.clone(), owned.keys.clone()),
            |(mut read, mut keys)| {
                for bytes in &owned.publications {
                    keys.install(&mut read, &decode(bytes), &config);
                }
                (read, keys)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, costs);
criterion_main!(benches);
