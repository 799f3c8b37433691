//! Faults a production deployment meets, on librdkafka's mock cluster (which can take its broker
//! down): the broker unreachable for 30 s mid-stream.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use streamrec::config::Config;
use streamrec::kafka::{produce_messages, run, Observers};
use streamrec::pipeline::Stats;

use common::{fresh_config, read_topic};

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

const PARTITIONS: i32 = 3;

/// `n` views by `n` users, so every event owes its user a recommendation.
fn views(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let user = format!("u{i}");
            let json = format!(
                r#"{{"type":"view","user_id":"{user}","item_id":"i{}","ts":{}}}"#,
                i % 50,
                1_700_000_000_000i64 + i as i64
            );
            (user, json.into_bytes())
        })
        .collect()
}

fn setup(cluster: &Cluster) -> Config {
    let config = fresh_config(cluster.bootstrap_servers());
    let kafka = &config.kafka;
    for topic in kafka.output_topics().into_iter().chain(&kafka.input_topics) {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    config
}

fn readyz(address: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(address).ok()?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_owned()))
}

async fn wait_for(
    progress: &mut tokio::sync::watch::Receiver<Stats>,
    what: impl Fn(&Stats) -> bool,
) {
    while !what(&progress.borrow_and_update()) {
        progress.changed().await.unwrap();
    }
}

/// The broker goes away for 30 s a third of the way through: `run` keeps running, `/readyz`
/// says why nothing moves, it resumes by itself, and at the end the state reflects every event
/// exactly once (a state dir: partitions re-read after the outage are skipped where the state
/// has them) and every user got a recommendation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_unreachable_for_30_s_is_survived_and_nothing_is_applied_twice() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = setup(&cluster);
    config.state.dir = dir.path().join("state").display().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.admin.listen = listener.local_addr().unwrap().to_string();
    drop(listener);
    config
        .kafka
        .librdkafka
        .insert("statistics.interval.ms".into(), "500".into());
    let events = views(3000);
    let input = config.kafka.input_topics[0].clone();
    produce_messages(&config.kafka, &input, &events[..1000], false, None)
        .await
        .unwrap();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(Stats::default());
    let observers = Observers {
        progress: Some(progress_tx),
        ..Observers::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let config = config.clone();
        tokio::spawn(
            async move { run(&config, async { stopped.await.unwrap_or(()) }, observers).await },
        )
    };
    wait_for(&mut progress, |s| s.applied >= 1000).await;
    // The rest is queued before the outage, so the backlog waits in the broker.
    produce_messages(&config.kafka, &input, &events[1000..], false, None)
        .await
        .unwrap();
    cluster.broker_down(1).unwrap();
    let address = config.admin.listen.clone();
    let outage = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut said = None;
        while started.elapsed() < Duration::from_secs(30) {
            if let Some((503, body)) = readyz(&address) {
                if body.contains("unreachable") {
                    said.get_or_insert(body);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        said
    })
    .await
    .unwrap();
    assert!(!running.is_finished(), "run stopped during the outage");
    let said = outage.expect("/readyz said the brokers are unreachable");
    cluster.broker_up(1).unwrap();
    let deadline = Duration::from_secs(90);
    tokio::time::timeout(deadline, wait_for(&mut progress, |s| s.applied >= 3000))
        .await
        .expect("run resumed by itself");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(()).unwrap();
    let report = running.await.unwrap().expect("run ends cleanly");
    assert_eq!(
        report.stats().applied,
        3000,
        "every event applied exactly once: {said}"
    );
    let recs = read_topic(
        &cluster.bootstrap_servers(),
        &config.kafka.recommendations_topic,
        PARTITIONS,
        usize::MAX,
        Duration::from_secs(3),
    );
    let users: std::collections::BTreeSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(users.len(), 3000, "every user got a recommendation");
}

/// 100 views by each of `users` users.
fn views_by(users: usize) -> Vec<(String, Vec<u8>)> {
    (0..100 * users)
        .map(|i| {
            let user = format!("u{}", i % users);
            let json = format!(
                r#"{{"type":"view","user_id":"{user}","item_id":"i{}","ts":{}}}"#,
                i % 40,
                1_700_000_000_000i64 + i as i64
            );
            (user, json.into_bytes())
        })
        .collect()
}

/// An output topic refuses writes mid-stream (authorization): `run` stops with an error naming
/// the refusal, the group's commit stays behind the inputs whose outputs were refused, and a
/// restart (the refusal lifted) continues to the end. Coalescing holds each user's later
/// updates back for a second, so the refusal lands mid-stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unwritable_output_topic_stops_run_without_committing_past_it() {
    use rdkafka::bindings::rd_kafka_resp_err_t as RespErr;
    use rdkafka::types::RDKafkaApiKey;
    use streamrec::kafka::RunError;
    let cluster = MockCluster::new(1).unwrap();
    let mut config = setup(&cluster);
    config.pipeline.min_update_interval_ms = 1000;
    let events = views_by(6);
    let input = config.kafka.input_topics[0].clone();
    produce_messages(&config.kafka, &input, &events, false, None)
        .await
        .unwrap();
    let brokers = cluster.bootstrap_servers();
    let ends = common::ends_by_reading(&brokers, &input, PARTITIONS, events.len());
    let (progress_tx, mut progress) = tokio::sync::watch::channel(Stats::default());
    let observers = Observers {
        progress: Some(progress_tx),
        ..Observers::default()
    };
    let running = {
        let config = config.clone();
        tokio::spawn(async move { run(&config, std::future::pending(), observers).await })
    };
    // Each user's first update goes out at once; the rest wait for the interval.
    wait_for(&mut progress, |s| {
        s.consumed >= 600 && s.recommendations >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refusals = [RespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1000];
    cluster.request_errors(RDKafkaApiKey::Produce, &refusals);
    let stopped = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("run stops")
        .unwrap();
    match stopped {
        Err(err @ RunError::Delivery(_)) => {
            let text = err.to_string();
            assert!(text.contains("uthoriz"), "{text}");
            assert!(
                text.contains("stopping without committing past it"),
                "{text}"
            );
        }
        Err(other) => panic!("stopped for another reason: {other}"),
        Ok(_) => panic!("run went on with an unwritable topic"),
    }
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let group = &config.kafka.group_id;
    let after_failure = common::committed(&brokers, group, &input, PARTITIONS);
    assert!(
        after_failure.iter().zip(&ends).any(|(c, e)| c < e),
        "the refused updates' inputs stay uncommitted: {after_failure:?} of {ends:?}"
    );
    let redo: i64 = ends
        .iter()
        .zip(&after_failure)
        .map(|(e, c)| e - c.max(&0))
        .sum();
    common::run_for(&config, redo as u64, Duration::from_secs(2)).await;
    let committed_at_end: Vec<i64> = common::committed(&brokers, group, &input, PARTITIONS)
        .into_iter()
        .map(|c| c.max(0)) // an empty partition has no commit
        .collect();
    assert_eq!(committed_at_end, ends);
}
