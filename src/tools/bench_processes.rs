//! `streamrec bench-instances --brokers`: N `streamrec run` processes in one consumer group on
//! a real broker, as a deployment runs them, each with its own state dir and the changelog,
//! sharing the item side by `model-updates` replication or by item ownership (`--topology`). Per N it reports events/s and the **total CPU seconds of all
//! processes per 100k events** (from `/proc/<pid>/stat`), the figure that shows how much work
//! adding instances multiplies.
//!
//! A round: fresh topics, N processes started and waited for until the group has assigned every
//! input partition, then the events produced in one burst. The CPU count starts just before the
//! burst (idle members use next to none) and stops when the processes fall idle again (model
//! updates and checkpoints still owed are work of the round). The clock starts at the first
//! consumed event and stops when every event is consumed; a round so short that the first look
//! finds everything consumed is timed from the burst instead.
//!
//! With a `rate`, the events are produced at that steady rate instead, and each round also
//! reports the latency from an event (its Kafka timestamp) to its recommendation's acknowledgement,
//! from the members' `streamrec_event_to_output_seconds` histograms, without coalescing
//! (`pipeline.min_update_interval_ms = 0`: a deployment's coalescing adds at most its
//! interval).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde::Serialize;

use super::bench_instances::{name_topics, ScratchDir};
use super::scrape::{cpu_seconds, free_port, quantile, scrape, Scraped};
use crate::config::{Config, KafkaConfig};
pub use crate::eval::Topology;
use crate::kafka::produce_messages;
use crate::tools::demo::demo_payloads;

/// How long a round waits for progress before it gives up.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// A process using less than this share of a core is idle (librdkafka's polling stays under).
const IDLE_SHARE: f64 = 0.03;

#[derive(Debug, Serialize)]
pub struct ProcessesRow {
    pub instances: usize,
    pub events_per_s: f64,
    /// events/s ÷ (instances × the one-instance events/s).
    pub efficiency: f64,
    /// CPU seconds (user + system) of all processes, per 100k events.
    pub cpu_s_per_100k_events: f64,
    /// `cpu_s_per_100k_events` ÷ the one-instance figure: the work amplification.
    pub cpu_relative: f64,
    /// How the item side is shared: `replicated` (model-updates) or `owned`.
    pub topology: Topology,
    /// Records the processes published to `model-updates`, per input event.
    pub model_updates_per_event: f64,
    /// Item records (views and lists) the owners published, per input event.
    pub item_records_per_event: f64,
    /// Bytes of the item owners' checkpoints, per input event.
    pub item_checkpoint_bytes_per_event: f64,
    /// Payload bytes of the item records, per input event.
    pub item_record_bytes_per_event: f64,
    /// Item work batches the workers sent, and their payload bytes, per input event.
    pub item_work_batches_per_event: f64,
    pub item_work_bytes_per_event: f64,
    /// With a rate: event to output acknowledged, median and 99th percentile, in ms
    /// (interpolated within the histogram's buckets).
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// What one round needs to know.
pub struct Bench<'a> {
    pub brokers: &'a str,
    pub events: usize,
    pub partitions: i32,
    pub seed: u64,
    /// The `streamrec` binary to start (this one).
    pub exe: PathBuf,
    pub topology: Topology,
    /// Events per second produced; `None`: one burst.
    pub rate: Option<u64>,
}

pub async fn bench_processes(
    bench: &Bench<'_>,
    counts: &[usize],
) -> anyhow::Result<Vec<ProcessesRow>> {
    let scratch = ScratchDir::new()?;
    let payloads = demo_payloads(bench.events, bench.seed);
    let run_id = std::process::id();
    let mut rows: Vec<ProcessesRow> = Vec::new();
    for (round, &count) in counts.iter().enumerate() {
        let name = format!("bench-{run_id}-{round}");
        let config = round_config(bench, &name, &scratch.0);
        create_topics(&config, bench.partitions).await?;
        let mut group = Group::start(&config, count, bench, &scratch.0)?;
        let owned = bench.topology == Topology::Owned;
        group.wait_assigned(bench.partitions as usize, owned)?;
        let cpu_before = group.cpu_seconds()?;
        let burst = Instant::now();
        let producing = tokio::spawn(produce(config.kafka.clone(), payloads.clone(), bench.rate));
        let measured =
            tokio::task::block_in_place(|| group.measure(bench.events as u64, burst, cpu_before))?;
        producing.await??;
        let first = rows.first();
        let single_rate = first.map_or(measured.rate, |r| r.events_per_s);
        let cpu = measured.cpu_s * 100_000.0 / bench.events as f64;
        let single_cpu = first.map_or(cpu, |r| r.cpu_s_per_100k_events);
        eprintln!(
            "{count} process(es): {:.0} events/s, {cpu:.2} CPU s per 100k events",
            measured.rate
        );
        rows.push(ProcessesRow {
            instances: count,
            events_per_s: measured.rate,
            efficiency: measured.rate / (count as f64 * single_rate),
            cpu_s_per_100k_events: cpu,
            cpu_relative: cpu / single_cpu,
            topology: bench.topology,
            model_updates_per_event: measured.model_updates as f64 / bench.events as f64,
            item_records_per_event: measured.item_records as f64 / bench.events as f64,
            item_checkpoint_bytes_per_event: measured.checkpoint_bytes as f64 / bench.events as f64,
            item_record_bytes_per_event: measured.record_bytes as f64 / bench.events as f64,
            item_work_batches_per_event: measured.work_batches as f64 / bench.events as f64,
            item_work_bytes_per_event: measured.work_bytes as f64 / bench.events as f64,
            latency_p50_ms: bench.rate.and(measured.latency_ms(0.5)),
            latency_p99_ms: bench.rate.and(measured.latency_ms(0.99)),
        });
    }
    Ok(rows)
}

async fn produce(
    kafka: KafkaConfig,
    payloads: Vec<(String, Vec<u8>)>,
    rate: Option<u64>,
) -> anyhow::Result<()> {
    produce_messages(&kafka, &kafka.input_topics[0], &payloads, false, rate).await?;
    Ok(())
}

/// One deployment's config: fresh topics named after the round, a changelog and model-updates
/// topic (owned: the item topics instead), state dirs (every instance's own dir is set at
/// start).
fn round_config(bench: &Bench, name: &str, scratch: &Path) -> Config {
    let mut config = Config::default();
    let kafka = &mut config.kafka;
    kafka.brokers = bench.brokers.to_owned();
    kafka.group_id = name.to_owned();
    kafka.session_timeout_ms = 6_000;
    name_topics(kafka, name);
    config.state.dir = scratch.join(name).display().to_string();
    if bench.rate.is_some() {
        config.pipeline.min_update_interval_ms = 0;
    }
    if bench.topology == Topology::Owned {
        kafka.model_updates_topic.clear();
        config.items.work_topic = format!("item-work-{name}");
        config.items.records_topic = format!("item-records-{name}");
        config.items.changelog_topic = format!("item-checkpoints-{name}");
        // Rounds last seconds: owners checkpoint every second so that each round includes
        // several of their checkpoints.
        config.items.checkpoint_interval_ms = 1_000;
    }
    config
}

/// The input and the internal topics get `partitions`; the outputs one each.
async fn create_topics(config: &Config, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .context("cannot make an admin client")?;
    let kafka = &config.kafka;
    let wide = [
        &kafka.input_topics[0],
        &kafka.changelog_topic,
        &kafka.model_updates_topic,
        &config.items.work_topic,
        &config.items.records_topic,
        &config.items.changelog_topic,
    ];
    let narrow = kafka.output_topics();
    let topics: Vec<NewTopic> = (wide.iter().filter(|t| !t.is_empty()))
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .chain(
            narrow
                .iter()
                .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1))),
        )
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create {topic}: {code}"))?;
    }
    Ok(())
}

/// The processes of one round, killed when dropped.
struct Group {
    members: Vec<Member>,
    /// Counted in the members' metrics.
    model_updates_topic: String,
}

struct Member {
    child: Child,
    metrics: String,
    log: PathBuf,
}

/// A round's figures.
struct Measured {
    rate: f64,
    cpu_s: f64,
    model_updates: u64,
    item_records: u64,
    checkpoint_bytes: u64,
    record_bytes: u64,
    work_batches: u64,
    work_bytes: u64,
    /// Each member's event-to-output histogram at the end.
    latency: Vec<Vec<(f64, u64)>>,
}

impl Measured {
    fn latency_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.latency, q).map(|s| s * 1000.0)
    }
}

impl Group {
    fn start(
        config: &Config,
        count: usize,
        bench: &Bench,
        scratch: &Path,
    ) -> anyhow::Result<Group> {
        let mut members = Vec::new();
        for index in 0..count {
            let mut config = config.clone();
            let id = format!("{}-{index}", config.kafka.group_id);
            config.kafka.instance_id = id.clone();
            config.state.dir = format!("{}/{index}", config.state.dir);
            let address = format!("127.0.0.1:{}", free_port()?);
            config.admin.listen = address.clone();
            let path = scratch.join(format!("{id}.toml"));
            std::fs::write(&path, toml::to_string(&config)?)?;
            let log = scratch.join(format!("{id}.log"));
            let child = Command::new(&bench.exe)
                .args(["run", "--config"])
                .arg(&path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("cannot start {}", bench.exe.display()))?;
            members.push(Member {
                child,
                metrics: address,
                log,
            });
        }
        Ok(Group {
            members,
            model_updates_topic: config.kafka.model_updates_topic.clone(),
        })
    }

    fn scrape(&mut self) -> anyhow::Result<Vec<Scraped>> {
        let mut all = Vec::new();
        for member in &mut self.members {
            if let Some(status) = member.child.try_wait()? {
                let log = std::fs::read_to_string(&member.log).unwrap_or_default();
                bail!("a member exited ({status}); its log ends:\n{}", tail(&log));
            }
            all.push(scrape(&member.metrics, &self.model_updates_topic).unwrap_or_default());
        }
        Ok(all)
    }

    /// Waits until every input partition is assigned and, with no more members than
    /// partitions, every member holds one; `owned`: every item partition has an owner too.
    fn wait_assigned(&mut self, partitions: usize, owned: bool) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let now = self.scrape()?;
            let total: u64 = now.iter().map(|s| s.assigned).sum();
            let everyone = now.len() > partitions || now.iter().all(|s| s.assigned > 0);
            let items: u64 = now.iter().map(|s| s.item_partitions).sum();
            let owners = now.len() > partitions || now.iter().all(|s| s.item_partitions > 0);
            let items_owned = !owned || (items == partitions as u64 && owners);
            if total == partitions as u64 && everyone && items_owned {
                return Ok(());
            }
            if started.elapsed() > STALL_LIMIT {
                bail!("the group did not assign its {partitions} partitions: {now:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.members.iter().map(|m| cpu_seconds(m.child.id())).sum()
    }

    /// Times `events` consumed among the members and counts their CPU from `cpu_before` until
    /// they are idle.
    fn measure(
        &mut self,
        events: u64,
        burst: Instant,
        cpu_before: f64,
    ) -> anyhow::Result<Measured> {
        let (first_look, consumed_at_first_look) = self.wait_first_event()?;
        // Everything consumed at the first look: the first event came at an unknown time after
        // the burst began.
        let started = if consumed_at_first_look >= events {
            burst
        } else {
            first_look
        };
        let mut last = (0, Instant::now());
        let rate = loop {
            let consumed: u64 = self.scrape()?.iter().map(|s| s.consumed).sum();
            if consumed >= events {
                break consumed as f64 / started.elapsed().as_secs_f64();
            }
            if consumed > last.0 {
                last = (consumed, Instant::now());
            } else if last.1.elapsed() > STALL_LIMIT {
                bail!("consumption stalled at {consumed} of {events} events");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let cpu = self.wait_idle()? - cpu_before;
        let scraped = self.scrape()?;
        Ok(Measured {
            rate,
            cpu_s: cpu,
            model_updates: scraped.iter().map(|s| s.published).sum(),
            item_records: scraped.iter().map(|s| s.item_records).sum(),
            checkpoint_bytes: scraped.iter().map(|s| s.item_checkpoint_bytes).sum(),
            record_bytes: scraped.iter().map(|s| s.item_record_bytes).sum(),
            work_batches: scraped.iter().map(|s| s.item_work_batches).sum(),
            work_bytes: scraped.iter().map(|s| s.item_work_bytes).sum(),
            latency: scraped.into_iter().map(|s| s.latency_buckets).collect(),
        })
    }

    /// When a member was first seen to consume, and how many events all had consumed then.
    fn wait_first_event(&mut self) -> anyhow::Result<(Instant, u64)> {
        let started = Instant::now();
        loop {
            let consumed: u64 = self.scrape()?.iter().map(|s| s.consumed).sum();
            if consumed > 0 {
                return Ok((Instant::now(), consumed));
            }
            if started.elapsed() > STALL_LIMIT {
                bail!("no member consumed an event");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The members' CPU seconds once a half-second passes with each under `IDLE_SHARE` of a
    /// core on average (or after `STALL_LIMIT`).
    fn wait_idle(&mut self) -> anyhow::Result<f64> {
        let window = Duration::from_millis(500);
        let idle = IDLE_SHARE * window.as_secs_f64() * self.members.len() as f64;
        let started = Instant::now();
        let mut before = self.cpu_seconds()?;
        loop {
            std::thread::sleep(window);
            let now = self.cpu_seconds()?;
            if now - before < idle || started.elapsed() > STALL_LIMIT {
                return Ok(now);
            }
            before = now;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
