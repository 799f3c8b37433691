//! Item-owned scale-out on a real broker (Tansu): one `run` instance whose item side goes
//! through both internal topics — its users' item work to `items.work_topic`, its owners'
//! records to `items.records_topic`, installed by its follower. Afterwards the read model, as
//! the records topic holds it and as the instance installed it, says what one engine that
//! learned everything itself says: every item's pair marginals (to float rounding: sums in
//! another order) and every item's neighbours; and every user got recommendations. And with a
//! state dir, a checkpoint covers only inputs whose item work the broker holds (SIGKILL after
//! the checkpoints). `#[ignore]`d without a broker; `.ci/run` runs them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use streamrec::config::Config;
use streamrec::engine::{ItemLists, ItemView, WorkBatch};
use streamrec::kafka::produce_messages;
use streamrec::pipeline::partition_of;
use streamrec::store::StateStore;
use streamrec::synthetic::{ShopperConfig, Shoppers};
use streamrec::{Engine, Event};

use common::http::metric;
use common::tansu::{free_port, start_logged, Broker};
use common::{fresh_config, read_records, read_topic, run_for, unique};

const EVENTS: usize = 3_000;
const ITEM_PARTITIONS: i32 = 4;

fn owned_config(broker: &Broker) -> Config {
    let mut config = fresh_config(broker.address.clone());
    let items = &mut config.items;
    items.work_topic = unique("work");
    items.records_topic = unique("records");
    items.work_interval_ms = 50;
    items.publish_interval_ms = 200;
    // Every change published: the last view of each item is exact.
    items.significance = 0.0;
    // Lists hold every neighbour (150 items): members are decided by counts alone.
    config.engine.cooccurrence.neighbors_per_item = 256;
    config
}

fn shoppers() -> Vec<Event> {
    let config = ShopperConfig {
        users: 120,
        items: 150,
        ..ShopperConfig::default()
    };
    Shoppers::new(config).take(EVENTS).collect()
}

/// The last view and the last lists of each item on the records topic.
fn last_records(config: &Config) -> (BTreeMap<String, ItemView>, BTreeMap<String, ItemLists>) {
    let topic = &config.items.records_topic;
    let publication = read_records(&config.kafka.brokers, topic, ITEM_PARTITIONS);
    let views = publication.views.into_iter().map(|v| (v.item.clone(), v));
    let lists = publication.lists.into_iter().map(|l| (l.item.clone(), l));
    (views.collect(), lists.collect())
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * a.abs().max(b.abs()).max(1.0)
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn one_instance_through_the_item_topics_learns_the_item_side_one_engine_learns() {
    let broker = Broker::start();
    let config = owned_config(&broker);
    broker.create_topic_with(&config.kafka.input_topics[0], 3);
    for topic in config.kafka.output_topics() {
        broker.create_topic_with(topic, 1);
    }
    for topic in [&config.items.work_topic, &config.items.records_topic] {
        broker.create_topic_with(topic, ITEM_PARTITIONS);
    }
    let events = shoppers();
    let messages: Vec<(String, Vec<u8>)> = (events.iter())
        .map(|e| (e.user_id.clone(), e.to_json().into_bytes()))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let input = &config.kafka.input_topics[0];
    (runtime.block_on(produce_messages(
        &config.kafka,
        input,
        &messages,
        false,
        None,
    )))
    .unwrap();
    let report = runtime.block_on(run_for(&config, EVENTS as u64, Duration::from_secs(3)));
    assert_eq!(report.stats().applied, EVENTS as u64);

    let mut alone = Engine::new(config.engine.clone());
    for event in &events {
        alone.apply(event);
    }
    let learned = alone.shared_items();
    let learned = learned.read().unwrap();
    let (views, lists) = last_records(&config);
    let read_model = report.processors[0].engine();
    assert_eq!(views.len(), alone.item_count(), "a view of every item");
    for item in 0..alone.item_count() as u32 {
        let name = alone.item_id(item);
        let expected = ItemView::of(&learned, item, 0);
        let view = &views[&name];
        assert!(
            close(view.entries, expected.entries) && close(view.purchases, expected.purchases),
            "{name}: published marginals {} / {}, one engine's {} / {}",
            view.entries,
            view.purchases,
            expected.entries,
            expected.purchases
        );
        let neighbours = |lists: &ItemLists| -> BTreeSet<u64> {
            lists.similar.iter().map(|&(key, _)| key).collect()
        };
        let expected = ItemLists::of(&learned, item);
        let published = lists.get(&name).map(neighbours).unwrap_or_default();
        assert_eq!(
            published,
            neighbours(&expected),
            "{name}: published neighbours"
        );
        let names = |engine: &Engine, index: Option<u32>| -> BTreeSet<String> {
            let similar = index
                .map(|i| engine.similar_items(i, 256))
                .unwrap_or_default();
            similar
                .into_iter()
                .map(|(n, _)| engine.item_id(n))
                .collect()
        };
        assert_eq!(
            names(read_model, read_model.item_index(&name)),
            names(&alone, Some(item)),
            "{name}: the instance's installed neighbours"
        );
    }
    let recommended: BTreeSet<String> = (read_topic(
        &config.kafka.brokers,
        &config.kafka.recommendations_topic,
        1,
        usize::MAX,
        Duration::from_secs(2),
    ))
    .into_iter()
    .map(|r| r.key)
    .collect();
    let users: BTreeSet<String> = events.iter().map(|e| e.user_id.clone()).collect();
    assert_eq!(recommended, users, "every user got recommendations");
}

/// Waits until the instance consumed every event and its checkpoints stopped (a checkpoint
/// comes every 300 ms while there are events it does not cover).
fn wait_for_checkpoint_after_everything(admin: &str) {
    let started = Instant::now();
    let waited = |what: &str| {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    while metric(admin, "streamrec_events_consumed_total") != Some(EVENTS as u64) {
        waited("every event consumed");
    }
    let checkpoints = || metric(admin, "streamrec_checkpoint_seconds_count").unwrap_or(0);
    let mut last = (checkpoints(), Instant::now());
    while last.0 == 0 || last.1.elapsed() < Duration::from_secs(2) {
        let now = checkpoints();
        if now != last.0 {
            last = (now, Instant::now());
        }
        waited("checkpoints to stop");
    }
}

/// A checkpoint covers only inputs whose item work the broker holds: with work kept in the
/// outbox for ten minutes, an instance killed with SIGKILL after its checkpoints has sent the
/// work of every input their offsets cover (a checkpoint first sends the outbox and waits for
/// the acknowledgements). Fails with that wait disabled: the outbox still holds the work, and
/// the restarted instance would never send it.
#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_checkpoint_covers_only_inputs_whose_item_work_the_broker_holds() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = owned_config(&broker);
    config.items.work_interval_ms = 600_000;
    config.items.max_batch_ops = 65_536;
    config.state.dir = dir.path().join("state").display().to_string();
    config.state.checkpoint_interval_ms = 300;
    config.admin.listen = format!("127.0.0.1:{}", free_port());
    let input = config.kafka.input_topics[0].clone();
    broker.create_topic_with(&input, 3);
    for topic in config.kafka.output_topics() {
        broker.create_topic_with(topic, 1);
    }
    for topic in [&config.items.work_topic, &config.items.records_topic] {
        broker.create_topic_with(topic, ITEM_PARTITIONS);
    }
    let messages: Vec<(String, Vec<u8>)> = (shoppers().iter())
        .map(|e| (e.user_id.clone(), e.to_json().into_bytes()))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = produce_messages(&config.kafka, &input, &messages, false, None);
    runtime.block_on(produced).unwrap();
    let path = dir.path().join("streamrec.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();

    let mut member = start_logged(&path, &dir.path().join("run.log"));
    wait_for_checkpoint_after_everything(&config.admin.listen);
    let sent = |name: &str| metric(&config.admin.listen, name).expect("metrics");
    let sent_batches = sent("streamrec_item_work_sent_batches_total");
    let sent_bytes = sent("streamrec_item_work_sent_bytes_total");
    member.kill().unwrap(); // SIGKILL: the outbox's work, if any is left, is gone
    member.wait().unwrap();

    let store = StateStore::open(Path::new(&config.state.dir), false).unwrap();
    let covered = store.read().unwrap().expect("a checkpoint").offsets;
    let mut delivered: BTreeMap<i32, i64> = BTreeMap::new();
    let work = &config.items.work_topic;
    let quiet = Duration::from_secs(3);
    let records = read_topic(
        &config.kafka.brokers,
        work,
        ITEM_PARTITIONS,
        usize::MAX,
        quiet,
    );
    let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
    assert_eq!(
        (sent_batches, sent_bytes),
        (records.len() as u64, bytes as u64),
        "the work metrics count what the work topic holds"
    );
    for record in records {
        let batch = WorkBatch::decode(&record.payload).expect("a work batch");
        for mark in &batch.work.inputs {
            let last = delivered.entry(partition_of(mark.at.stream)).or_default();
            *last = (*last).max(mark.at.seq);
        }
    }
    let covered: Vec<(i32, i64)> = (covered.into_iter())
        .filter(|((topic, _), next)| *topic == input && *next > 0)
        .map(|((_, partition), next)| (partition, next))
        .collect();
    assert_eq!(covered.len(), 3, "every input partition checkpointed");
    for (partition, next) in covered {
        // Every event makes item work, so the last input covered has some.
        assert_eq!(
            delivered.get(&partition).copied(),
            Some(next - 1),
            "input partition {partition}: the checkpoint covers offsets below {next}; the work topic holds work up to {:?}",
            delivered.get(&partition)
        );
    }
}
