//! `streamrec bench-instances`: throughput of N instances in one consumer group, all in this
//! process on the mock cluster, each with its own engine, item-model replica and Kafka clients,
//! replicating the item model through a `model-updates` topic (also with one instance, so every
//! row pays the same publishing cost). The input has 6 partitions; the clock runs from the first
//! event any instance consumes to the moment all are consumed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::join_all;
use rdkafka::mocking::MockCluster;
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, KafkaConfig};
use crate::kafka::{produce_messages, Health, Observers};
use crate::pipeline::Stats;
use crate::runtime::run;
use crate::tools::demo::demo_payloads;

const PARTITIONS: i32 = 6;

#[derive(Debug, Serialize)]
pub struct InstancesRow {
    pub instances: usize,
    pub events_per_s: f64,
    /// events/s ÷ (instances × the one-instance events/s).
    pub efficiency: f64,
    pub model_updates: u64,
}

/// With `state`, every instance checkpoints to its own state dir (under a temporary dir) and
/// writes its changed users to a changelog topic, as a deployment of several instances does.
pub async fn bench_instances(
    events: usize,
    seed: u64,
    counts: &[usize],
    state: bool,
) -> anyhow::Result<Vec<InstancesRow>> {
    let cluster = MockCluster::new(1).context("cannot start the mock cluster")?;
    let dirs = ScratchDir::new()?;
    let payloads = demo_payloads(events, seed);
    let mut rows: Vec<InstancesRow> = Vec::new();
    for (round, &count) in counts.iter().enumerate() {
        let mut config = round_config(&cluster, round, state)?;
        if state {
            config.state.dir = dirs.0.join(format!("round-{round}")).display().to_string();
        }
        produce_messages(
            &config.kafka,
            &config.kafka.input_topics[0],
            &payloads,
            false,
            None,
        )
        .await?;
        let (rate, model_updates) = timed_instances(&config, count, events as u64).await?;
        let single = rows
            .first()
            .map_or(rate, |r| r.events_per_s / r.instances as f64);
        eprintln!("{count} instance(s): {rate:.0} events/s");
        rows.push(InstancesRow {
            instances: count,
            events_per_s: rate,
            efficiency: rate / (count as f64 * single),
            model_updates,
        });
    }
    Ok(rows)
}

/// State dirs of one bench, removed when it ends.
pub(crate) struct ScratchDir(pub(crate) std::path::PathBuf);

impl ScratchDir {
    pub(crate) fn new() -> anyhow::Result<ScratchDir> {
        let path = std::env::temp_dir().join(format!("streamrec-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot make {}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fresh topics and group for one round.
fn round_config(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    round: usize,
    changelog: bool,
) -> anyhow::Result<Config> {
    let mut config = Config::default();
    let kafka = &mut config.kafka;
    kafka.brokers = cluster.bootstrap_servers();
    kafka.session_timeout_ms = 6_000;
    kafka.group_id = format!("bench-instances-{round}");
    kafka
        .librdkafka
        .insert("fetch.wait.max.ms".into(), "5".into());
    name_topics(kafka, &round.to_string());
    if !changelog {
        kafka.changelog_topic.clear();
    }
    for topic in config.kafka.all_topics() {
        cluster.create_topic(&topic, PARTITIONS, 1)?;
    }
    Ok(config)
}

/// Topics of one bench round, named `{topic}-{round}`: input, outputs, model updates and
/// changelog.
pub(crate) fn name_topics(kafka: &mut KafkaConfig, round: &str) {
    let name = |topic: &str| format!("{topic}-{round}");
    kafka.input_topics = vec![name("events")];
    kafka.recommendations_topic = name("recommendations");
    kafka.similar_items_topic = name("similar-items");
    kafka.dead_letter_topic = name("dead-letter");
    kafka.triggers_topic = name("triggers");
    kafka.model_updates_topic = name("model-updates");
    kafka.changelog_topic = name("changelog");
}

/// Runs `count` instances until `expected` events are consumed among them; events/s and the
/// model updates they published.
async fn timed_instances(
    config: &Config,
    count: usize,
    expected: u64,
) -> anyhow::Result<(f64, u64)> {
    let (stop_tx, stop) = watch::channel(false);
    let mut progress = Vec::new();
    let mut runs = Vec::new();
    for index in 0..count {
        let mut config = config.clone();
        config.kafka.instance_id = format!("bench-{index}");
        if !config.state.dir.is_empty() {
            config.state.dir = format!("{}/instance-{index}", config.state.dir);
        }
        let (tx, rx) = watch::channel(Stats::default());
        progress.push(rx);
        let observers = Observers {
            progress: Some(tx),
            health: Arc::new(Health::default()),
            ..Observers::default()
        };
        let mut stop = stop.clone();
        runs.push(async move {
            run(
                &config,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
                observers,
            )
            .await
        });
    }
    let clock = tokio::spawn(async move {
        let mut first = None;
        loop {
            let consumed: u64 = progress
                .iter_mut()
                .map(|p| p.borrow_and_update().consumed)
                .sum();
            if consumed > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if consumed >= expected {
                let _ = stop_tx.send(true);
                return first.map(|f| (consumed, f.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let reports = join_all(runs).await;
    let (consumed, elapsed) = clock.await?.context("nothing was consumed")?;
    let mut published = 0;
    for report in reports {
        published += report?.stats().model_updates;
    }
    Ok((consumed as f64 / elapsed.as_secs_f64().max(1e-9), published))
}
