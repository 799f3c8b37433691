//! Two `run` instances in one consumer group on librdkafka's mock cluster, sharing one item
//! model through the `model-updates` topic: each learns, through the other's updates, the items
//! of partitions it never consumed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamrec::config::Config;
use streamrec::engine::{Engine, ModelUpdate, ReplicaUpdate};
use streamrec::kafka::{Health, Observers, RunReport};
use streamrec::pipeline::{encode_update, Stats, INSTANCE_HEADER};
use streamrec::ranking::Filters;
use streamrec::runtime::run;
use streamrec::store::StateStore;
use tokio::sync::watch;

use common::{fresh_config, run_for, unique};

const PARTITIONS: i32 = 3;
const USERS_PER_PARTITION: usize = 6;
const ITEMS_PER_PARTITION: usize = 5;

/// Partition p's users view only partition p's items, so an instance that never consumed p can
/// know them only from the other instance's updates.
fn produce(brokers: &str, topic: &str) -> u64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut sent = 0;
    for p in 0..PARTITIONS {
        for u in 0..USERS_PER_PARTITION {
            let user = format!("p{p}-u{u}");
            for k in 0..ITEMS_PER_PARTITION {
                let item = format!("p{p}-i{}", (u + k) % ITEMS_PER_PARTITION);
                let ts = 1_700_000_000_000i64 + (u * 10 + k) as i64;
                let json =
                    format!(r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#);
                let record = BaseRecord::to(topic).partition(p).key(&user).payload(&json);
                producer.send(record).unwrap();
                sent += 1;
            }
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    sent
}

fn config_for(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> Config {
    let mut config = fresh_config(cluster.bootstrap_servers());
    config.kafka.model_updates_topic = unique("model-updates");
    config.kafka.catalog_topic = unique("catalog");
    for topic in config.kafka.all_topics() {
        cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    config
}

fn neighbours(engine: &Engine, item: &str) -> Vec<String> {
    let index = engine.item_index(item).expect("the item is known");
    engine.item_ids(engine.similar_items(index, 10).into_iter().map(|n| n.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_the_item_model_through_the_model_updates_topic() {
    let cluster = MockCluster::new(1).unwrap();
    let config = config_for(&cluster);
    let total = produce(&config.kafka.brokers, &config.kafka.input_topics[0]);
    // One listing: whichever instance consumes its catalog partition passes it on.
    let listing = r#"{"schema":"streamrec.item.v1","item_id":"p1-i2","category":"c","price":1,"in_stock":false,"updated_at":1}"#;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .unwrap();
    let record = BaseRecord::to(&config.kafka.catalog_topic)
        .key("p1-i2")
        .payload(listing);
    producer.send(record).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let instance = |id: &str| {
        let mut config = config.clone();
        config.kafka.instance_id = id.into();
        config
    };
    let (a, b) = (instance("a"), instance("b"));
    let (stop_tx, stop) = watch::channel(false);
    let (progress_a, mut seen_a) = watch::channel(Stats::default());
    let (progress_b, mut seen_b) = watch::channel(Stats::default());
    let observers = |progress| Observers {
        progress: Some(progress),
        health: Arc::new(Health::default()),
        ..Observers::default()
    };
    let until = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    // Stop both once every event is consumed and the updates had time to cross.
    let stopper = tokio::spawn(async move {
        loop {
            let consumed =
                seen_a.borrow_and_update().consumed + seen_b.borrow_and_update().consumed;
            if consumed >= total {
                break;
            }
            tokio::select! {
                _ = seen_a.changed() => {}
                _ = seen_b.changed() => {}
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop_tx.send(true).unwrap();
    });
    let (report_a, report_b) = tokio::time::timeout(Duration::from_secs(90), async {
        tokio::join!(
            run(&a, until(stop.clone()), observers(progress_a)),
            run(&b, until(stop.clone()), observers(progress_b)),
        )
    })
    .await
    .expect("both instances finish");
    stopper.await.unwrap();
    let (report_a, report_b): (RunReport, RunReport) = (report_a.unwrap(), report_b.unwrap());
    let published = report_a.stats().model_updates + report_b.stats().model_updates;
    assert!(
        published >= total,
        "one update per applied event: {published}"
    );

    let items = PARTITIONS as usize * ITEMS_PER_PARTITION;
    let (engine_a, engine_b) = (
        report_a.processors[0].engine(),
        report_b.processors[0].engine(),
    );
    assert_eq!(
        engine_a.item_count(),
        items,
        "a knows every partition's items"
    );
    assert_eq!(
        engine_b.item_count(),
        items,
        "b knows every partition's items"
    );
    for engine in [engine_a, engine_b] {
        let withdrawn = engine.item_index("p1-i2").unwrap();
        assert!(
            !engine.recommendable(withdrawn),
            "both know p1-i2 is out of stock"
        );
    }
    for p in 0..PARTITIONS {
        let item = format!("p{p}-i0");
        let (mut from_a, mut from_b) = (neighbours(engine_a, &item), neighbours(engine_b, &item));
        assert!(!from_a.is_empty(), "{item} has neighbours");
        // The same observations, applied in another order: the same neighbours, their scores
        // (computed incrementally) close but not always in the same order.
        from_a.sort();
        from_b.sort();
        assert_eq!(from_a, from_b, "both replicas know {item}'s neighbours");
        assert!(from_a.iter().all(|n| n.starts_with(&format!("p{p}-"))));
    }
}

fn another_instances_update(brokers: &str, topic: &str, item: &str, partner: Option<&str>) {
    let update = ModelUpdate {
        item_id: item.into(),
        category: None,
        weight: 1.0,
        ts_ms: 1_700_000_000_500,
        partners: partner
            .map(|p| (p.to_owned(), 1_700_000_000_400))
            .into_iter()
            .collect(),
        new_to_user: true,
        first_purchase: false,
        factor_deltas: Vec::new(),
    };
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let payload = encode_update(&ReplicaUpdate::Learned(update));
    let headers = OwnedHeaders::new().insert(Header {
        key: INSTANCE_HEADER,
        value: Some("b"),
    });
    let record = BaseRecord::to(topic)
        .key(item)
        .payload(&payload)
        .headers(headers);
    producer.send(record).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Updates another instance publishes while this one is down are applied after its restart,
/// exactly once: the positions on the model-updates topic are checkpointed with the item model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_instance_applies_the_updates_it_missed_exactly_once() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = config_for(&cluster);
    let dir = tempfile::tempdir().unwrap();
    config.state.dir = dir.path().join("state").display().to_string();
    config.kafka.instance_id = "a".into();
    let (brokers, input) = (
        config.kafka.brokers.clone(),
        config.kafka.input_topics[0].clone(),
    );
    let send_view = |user: &str, item: &str| {
        let json = format!(
            r#"{{"type":"view","user_id":"{user}","item_id":"{item}","ts":1700000000100}}"#
        );
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        producer
            .send(BaseRecord::to(&input).key(user).payload(&json))
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };

    send_view("u1", "a-1");
    run_for(&config, 1, Duration::ZERO).await;
    // While it is down, instance b publishes two items that co-occur.
    let topic = config.kafka.model_updates_topic.clone();
    another_instances_update(&brokers, &topic, "b-1", None);
    another_instances_update(&brokers, &topic, "b-2", Some("b-1"));
    send_view("u2", "a-2"); // so the second run checkpoints
    let second = run_for(&config, 1, Duration::from_secs(2)).await;
    let engine = second.processors[0].engine();
    assert!(
        engine.item_index("b-1").is_some(),
        "the missed updates were applied"
    );
    assert_eq!(neighbours(engine, "b-2"), ["b-1"]);

    // A third start has nothing new to apply: what it ranks with is the stored item model (had
    // it re-applied b's updates, their popularity and co-occurrence would count twice).
    let third = run_for(&config, 0, Duration::from_secs(2)).await;
    let store = StateStore::open(dir.path().join("state").as_path(), false).unwrap();
    let stored = store.read().unwrap().unwrap();
    let stored = Engine::from_records(config.engine.clone(), &stored.records).unwrap();
    let third = third.processors[0].engine();
    let trending = |e: &Engine| {
        let list = e.recommend("nobody", 10, &Filters::default());
        list.iter()
            .map(|s| (e.item_id(s.item), s.score))
            .collect::<Vec<_>>()
    };
    let similar = |e: &Engine| {
        let item = e.item_index("b-2").unwrap();
        let list = e.similar_items(item, 5);
        list.iter()
            .map(|&(i, s)| (e.item_id(i), s))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        trending(third),
        trending(&stored),
        "no update applied twice"
    );
    assert_eq!(similar(third), similar(&stored), "no update applied twice");
}
