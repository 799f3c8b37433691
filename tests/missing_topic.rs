//! A newcomer's typo: an input topic that does not exist. `run` says so — `/readyz` names the
//! topic while it waits, and after `kafka.missing_topic_timeout_ms` it stops with an error
//! naming it — instead of logging that a subscribed topic is unavailable while the group looks
//! like it is forming. A topic created while it waits is simply consumed.

mod common;

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use streamrec::kafka::{Observers, RunError};
use streamrec::runtime::run;

use common::fresh_config;
use common::outage::readyz;

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_input_topic_is_named_by_readyz_then_by_the_error() {
    let cluster = MockCluster::new(1).unwrap();
    let mut config = fresh_config(cluster.bootstrap_servers());
    config.kafka.missing_topic_timeout_ms = 3_000;
    config.admin.listen = free_address();
    let missing = config.kafka.input_topics[0].clone();
    let address = config.admin.listen.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            if let Some((503, body)) = readyz(&address) {
                if body.contains("do not exist") {
                    return body;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("/readyz never named the missing topic");
    });
    let running = run(&config, std::future::pending(), Observers::default());
    let stopped = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("run stops by itself");
    match stopped {
        Err(RunError::MissingTopics { topics, .. }) => {
            assert_eq!(topics, std::slice::from_ref(&missing))
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("run went on without its input topic"),
    }
    assert!(watcher.await.unwrap().contains(&missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_while_run_waits_is_consumed() {
    let cluster = MockCluster::new(1).unwrap();
    let config = fresh_config(cluster.bootstrap_servers());
    for topic in config.kafka.output_topics() {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let input = config.kafka.input_topics[0].clone();
    let create_later = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.create_topic(&input, 1, 1).unwrap();
        let event = br#"{"type":"view","user_id":"u","item_id":"i","ts":1700000000000}"#;
        streamrec::kafka::produce_messages(
            &config.kafka,
            &input,
            &[("u".to_owned(), event.to_vec())],
            false,
            None,
        )
        .await
        .unwrap();
    };
    let (report, ()) = tokio::join!(
        common::run_for(&config, 1, Duration::from_millis(500)),
        create_later
    );
    assert_eq!(report.stats().applied, 1);
}
