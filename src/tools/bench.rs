//! `streamrec bench`: end-to-end figures on the in-process mock cluster, next to librdkafka's
//! raw consume rate on the same broker in the same run, so the ratio means something.
//!
//! 1. raw: a plain consumer reads N messages (no processing);
//! 2. pipeline: `run` consumes the same N messages with the default config (1 s coalescing),
//!    then again with coalescing off (`min_update_interval_ms = 0`: an update per event);
//!    and once more with a state dir, checkpointed every N / 5 events (in rounds of all
//!    workers);
//! 3. replay: `replay` reads the same N messages into a fresh state dir, without outputs and
//!    with shadow outputs (1 s coalescing);
//! 4. latency: with coalescing off, events are produced at half the rate measured in 2; after a
//!    warm-up of a tenth of them, every recommendation's delay from the event's produce time to
//!    its acknowledgement is recorded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, EngineConfig};
use crate::kafka::{
    new_latency, produce_messages, replay, Health, Loader, Observers, ReplayOptions,
};
use crate::pipeline::Stats;
use crate::replay_plan::{OutputMode, StartAt, StopAt};
use crate::runtime::run;
use crate::tools::demo::demo_payloads;

const PARTITIONS: i32 = 3;

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub events: usize,
    pub workers: usize,
    /// Share of learning steps that waited for another worker's hold on the item model.
    pub contended_share: f64,
    pub raw_consume_per_s: f64,
    pub pipeline_per_s: f64,
    pub pipeline_over_raw: f64,
    pub uncoalesced_per_s: f64,
    /// The pipeline with a state dir, five checkpoints included.
    pub durable_per_s: f64,
    pub replay_per_s: f64,
    pub replay_over_pipeline: f64,
    pub replay_shadow_per_s: f64,
    pub latency_rate_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

/// Runs every phase with `engine`'s settings (ranking, experiments …) on the mock cluster.
pub async fn bench(
    engine: EngineConfig,
    events: usize,
    seed: u64,
    workers: usize,
) -> anyhow::Result<BenchReport> {
    let cluster = MockCluster::new(1).context("cannot start the mock cluster")?;
    let mut config = Config {
        engine,
        ..Config::default()
    };
    config.pipeline.workers = workers;
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.session_timeout_ms = 6_000;
    // The mock broker holds every fetch for fetch.wait.max.ms (default 500) even when data is
    // there, which a real broker does not; without this the latency phase measures that wait.
    config
        .kafka
        .librdkafka
        .insert("fetch.wait.max.ms".into(), "5".into());
    for topic in [
        "bench-events",
        "bench-paced",
        "recommendations",
        "similar-items",
        "dead-letter",
        "recommendations.shadow",
        "similar-items.shadow",
        "dead-letter.shadow",
    ] {
        cluster.create_topic(topic, PARTITIONS, 1)?;
    }
    let payloads = demo_payloads(events, seed);
    produce_messages(&config.kafka, "bench-events", &payloads, false, None).await?;

    let raw = raw_consume_rate(&config, "bench-events", events).await?;
    eprintln!("raw consume: {raw:.0} messages/s");

    config.kafka.input_topics = vec!["bench-events".into()];
    config.kafka.group_id = "bench-pipeline".into();
    let (pipeline, _, contended) = timed_run(&config, events as u64, None).await?;
    eprintln!("pipeline: {pipeline:.0} events/s");
    config.kafka.group_id = "bench-uncoalesced".into();
    config.pipeline.min_update_interval_ms = 0;
    let (uncoalesced, _, _) = timed_run(&config, events as u64, None).await?;
    eprintln!("pipeline without coalescing: {uncoalesced:.0} events/s");
    config.pipeline.min_update_interval_ms = Config::default().pipeline.min_update_interval_ms;
    config.kafka.group_id = "bench-durable".into();
    let state = std::env::temp_dir().join(format!("streamrec-bench-run-{}", std::process::id()));
    config.state.dir = state.display().to_string();
    config.state.checkpoint_max_events = (events as u64 / 5).max(1);
    let durable = timed_run(&config, events as u64, None).await;
    config.state = Config::default().state;
    let _ = std::fs::remove_dir_all(&state);
    let (durable, _, _) = durable?;
    eprintln!("pipeline with a state dir: {durable:.0} events/s");
    let replay = replay_rate(&config, OutputMode::None).await?;
    eprintln!("replay: {replay:.0} events/s");
    let replay_shadow = replay_rate(&config, OutputMode::Shadow).await?;
    eprintln!("replay with shadow outputs: {replay_shadow:.0} events/s");
    config.pipeline.min_update_interval_ms = 0;

    let rate = (uncoalesced / 2.0).max(1.0);
    config.kafka.input_topics = vec!["bench-paced".into()];
    config.kafka.group_id = "bench-latency".into();
    let paced = Paced {
        payloads,
        rate: rate as u64,
    };
    let (_, latency, _) = timed_run(&config, events as u64, Some(paced)).await?;
    drop(cluster);
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(BenchReport {
        events,
        workers,
        contended_share: contended,
        raw_consume_per_s: raw,
        pipeline_per_s: pipeline,
        pipeline_over_raw: pipeline / raw,
        uncoalesced_per_s: uncoalesced,
        durable_per_s: durable,
        replay_per_s: replay,
        replay_over_pipeline: replay / pipeline,
        replay_shadow_per_s: replay_shadow,
        latency_rate_per_s: rate,
        latency_p50_ms: ms(0.5),
        latency_p99_ms: ms(0.99),
        latency_max_ms: latency.max() as f64 / 1000.0,
    })
}

async fn raw_consume_rate(config: &Config, topic: &str, expected: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", "bench-raw")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let first = consumer.recv().await?;
    drop(first);
    let started = Instant::now();
    for _ in 1..expected {
        let message = consumer.recv().await?;
        drop(message);
    }
    Ok((expected - 1) as f64 / started.elapsed().as_secs_f64())
}

/// Replays the input topic from earliest into a fresh state dir (removed afterwards); events/s.
async fn replay_rate(config: &Config, output: OutputMode) -> anyhow::Result<f64> {
    let dir = std::env::temp_dir().join(format!(
        "streamrec-bench-replay-{}-{output}",
        std::process::id()
    ));
    let options = ReplayOptions {
        state_dir: dir.clone(),
        from: StartAt::Earliest,
        to: StopAt::Latest,
        output,
        shadow_suffix: ".shadow".into(),
        max_rate: None,
        progress: false,
    };
    let config = config.clone();
    let report = tokio::task::spawn_blocking(move || {
        replay(
            &config,
            &options,
            &std::sync::atomic::AtomicBool::new(false),
        )
    })
    .await??;
    let _ = std::fs::remove_dir_all(&dir);
    // Like the pipeline phases: from the first event to the last, without start-up (and
    // without the final checkpoint, which the pipeline phases, stateless, do not have).
    Ok(report.stats.consumed as f64 / report.applying.as_secs_f64().max(1e-9))
}

struct Paced {
    payloads: Vec<(String, Vec<u8>)>,
    rate: u64,
}

/// Runs the pipeline until `expected` events were consumed; the clock starts at the first
/// consumed event (the group join is not the pipeline's cost). Returns events/s, the latency
/// histogram and the share of learning steps that waited for the item lock.
async fn timed_run(
    config: &Config,
    expected: u64,
    paced: Option<Paced>,
) -> anyhow::Result<(f64, hdrhistogram::Histogram<u64>, f64)> {
    let (progress_tx, mut progress) = watch::channel(Stats::default());
    let health = Arc::new(Health::default());
    let latency = new_latency();
    let observers = Observers {
        progress: Some(progress_tx),
        health: health.clone(),
        latency: latency.clone(),
        ..Observers::default()
    };
    let loader = paced.map(|paced| {
        let (kafka, topic) = (config.kafka.clone(), config.kafka.input_topics[0].clone());
        let mut warming = progress.clone();
        tokio::spawn(async move {
            while health.assigned_partitions() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The first fetches after a join lag; measure the steady state after a warm-up.
            let (warm_up, measured) = paced.payloads.split_at(paced.payloads.len() / 10);
            let loader = Loader::new(&kafka)?;
            loader
                .send(&topic, warm_up, false, Some(paced.rate))
                .await?;
            while warming.borrow_and_update().consumed < warm_up.len() as u64 {
                let _ = warming.changed().await;
            }
            latency.lock().expect("not poisoned").reset();
            loader.send(&topic, measured, false, Some(paced.rate)).await
        })
    });
    let until_done = async move {
        while progress.borrow_and_update().consumed < expected {
            if progress.changed().await.is_err() {
                return;
            }
        }
    };
    let report = run(config, until_done, observers).await?;
    if let Some(loader) = loader {
        loader.await??;
    }
    // From the first input consumed to the last, as the workers timed them (to the ms;
    // progress reaches this task only at the workers' ticks).
    let stats = report.stats();
    if stats.consumed < 2 {
        anyhow::bail!("the run ended after {} inputs", stats.consumed);
    }
    let span_ms = (stats.last_consumed_ms - stats.first_consumed_ms).max(1);
    let rate = stats.consumed.saturating_sub(1) as f64 * 1000.0 / span_ms as f64;
    let contended: u64 = report
        .processors
        .iter()
        .map(|p| p.engine().contended_writes())
        .sum();
    let share = contended as f64 / stats.applied.max(1) as f64;
    Ok((rate, report.latency_us, share))
}
