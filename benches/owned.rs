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

/// What one interval sent on the wire (work batches, then the owner's records) and the time
/// each part took: the user side, the owner applying, the owner publishing, a reader
/// installing.
struct Interval {
    batches: Vec<Vec<u8>>,
    publication: Vec<u8>,
    spent: [Duration; 4],
}

/// The owner of `items` at the bench's significance.
fn owner_of(items: ItemModel) -> ItemOwner {
    let mut owner = ItemOwner::from_items(items);
    owner.significance = significance();
    owner
}

/// The owned topology in one process, run one interval of `sync_every()` events at a time: a
/// deferring engine, the owner of every item, and the read model's keys.
struct Run {
    user_side: Engine,
    owner: ItemOwner,
    keys: ItemKeys,
}

/// A run's state at the end of the warm-up, for criterion's copies to start from.
struct Warm {
    user_side: Engine,
    owner: ItemModel,
    keys: ItemKeys,
}

impl Run {
    fn new() -> Run {
        let mut user_side = Engine::new(bench_config());
        user_side.defer_item_work(true);
        Run {
            user_side,
            owner: owner_of(ItemModel::new(&bench_config())),
            keys: ItemKeys::default(),
        }
    }

    fn warm(&self) -> Warm {
        Warm {
            user_side: self.user_side.clone(),
            owner: self.owner.items.clone(),
            keys: self.keys.clone(),
        }
    }

    fn interval(&mut self, chunk: &[Event]) -> Interval {
        let config = bench_config();
        let mut spent = [Duration::ZERO; 4];
        let started = Instant::now();
        let mut work = ItemWork::default();
        for event in chunk {
            work.append(self.user_side.apply(event).effects.item_work);
        }
        spent[0] = started.elapsed();
        let shared = self.user_side.shared_items();
        let mut read = shared.write().unwrap();
        let batches: Vec<Vec<u8>> = (work.batches(&read, ITEM_PARTITIONS).iter())
            .map(|(_, batch)| batch.encode())
            .collect();
        let started = Instant::now();
        for bytes in &batches {
            let batch = WorkBatch::decode(bytes).unwrap();
            self.owner.apply(batch, &config).unwrap();
        }
        spent[1] = started.elapsed();
        let started = Instant::now();
        let publication = self.owner.publish().encode();
        spent[2] = started.elapsed();
        let started = Instant::now();
        let records = Publication::decode(&publication).unwrap();
        self.keys.install(&mut read, &records, &config);
        spent[3] = started.elapsed();
        Interval {
            batches,
            publication,
            spent,
        }
    }
}

/// The run at the end of the warm-up, and what the measured events sent on the wire.
struct Owned {
    warm: Warm,
    batches: Vec<Vec<u8>>,
    publications: Vec<Vec<u8>>,
}

fn owned(events: &[Event]) -> Owned {
    let mut run = Run::new();
    let mut warm = None;
    let (mut batches, mut publications) = (Vec::new(), Vec::new());
    for (n, chunk) in events.chunks(sync_every()).enumerate() {
        if n * sync_every() == warm_events() {
            warm = Some(run.warm());
        }
        let interval = run.interval(chunk);
        if warm.is_some() {
            batches.extend(interval.batches);
            publications.push(interval.publication);
        }
    }
    Owned {
        warm: warm.expect("the stream is longer than the warm-up"),
        batches,
        publications,
    }
}

/// The costs per event over the measured events in one pass with nothing cloned: a
/// clone shares copy-on-write rows with the model, so criterion's copies make the first write
/// to each row copy it, which a running owner does not (only a checkpoint's cut shares rows).
fn one_pass(events: &[Event]) -> [f64; 4] {
    let mut run = Run::new();
    let mut spent = [Duration::ZERO; 4];
    for (n, chunk) in events.chunks(sync_every()).enumerate() {
        let interval = run.interval(chunk);
        if n * sync_every() >= warm_events() {
            for (total, part) in spent.iter_mut().zip(interval.spent) {
                *total += part;
            }
        }
    }
    spent.map(|d| d.as_secs_f64() * 1e6 / BATCH as f64)
}

fn records(publications: &[Vec<u8>], count: fn(&Publication) -> usize) -> usize {
    let decoded = publications
        .iter()
        .map(|bytes| Publication::decode(bytes).unwrap());
    decoded.map(|publication| count(&publication)).sum()
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
            || owned.warm.user_side.clone(),
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
            || owner_of(owned.warm.owner.clone()),
            |mut owner| {
                for bytes in &owned.batches {
                    owner
                        .apply(WorkBatch::decode(bytes).unwrap(), &config)
                        .unwrap();
                }
                owner
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("view_install", |b| {
        let read = owned.warm.user_side.shared_items();
        let read = read.read().unwrap();
        b.iter_batched(
            || (read.clone(), owned.warm.keys.clone()),
            |(mut read, mut keys)| {
                for bytes in &owned.publications {
                    let publication = Publication::decode(bytes).unwrap();
                    keys.install(&mut read, &publication, &config);
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
