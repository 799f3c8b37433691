//! Faults a production deployment meets, on librdkafka's mock cluster (which can take its broker
//! down and make it refuse requests): the broker unreachable for 30 s mid-stream, and an output
//! topic that refuses writes (an ACL).

mod common;

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use streamrec::config::Config;
use streamrec::kafka::{produce_messages, Observers};
use streamrec::pipeline::Stats;
use streamrec::runtime::run;

use common::fresh_config;
use common::outage::wait_for;

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

const PARTITIONS: i32 = 3;

fn setup(cluster: &Cluster) -> Config {
    let config = fresh_config(cluster.bootstrap_servers());
    let kafka = &config.kafka;
    for topic in kafka.output_topics().into_iter().chain(&kafka.input_topics) {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    config
}

/// The broker goes away for 30 s a third of the way through (see `common::outage`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_unreachable_for_30_s_is_survived_and_nothing_is_applied_twice() {
    let cluster = MockCluster::new(1).unwrap();
    let config = setup(&cluster);
    common::outage::survive_an_outage(
        config,
        || cluster.broker_down(1).unwrap(),
        || cluster.broker_up(1).unwrap(),
    )
    .await;
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
    let events = common::outage::views(600, 6);
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
