//! Command-line interface: argument parsing and the glue from files to the engine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

mod catalog;
use crate::demo::{demo, DemoOptions};
use crate::engine::Engine;
use crate::eval::{evaluate, standard_methods, Mode, Protocol};
use crate::formats::{history, load, Format, Loaded};
use crate::inspect;
use crate::kafka;
use crate::replay::{OutputMode, StartAt, StopAt};
use crate::store::StateStore;

#[derive(Debug, Parser)]
#[command(
    name = "streamrec",
    version,
    about = "Real-time recommendations from shop event streams"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr: `human`, or `json` (one object per line, for collectors).
    /// RUST_LOG filters them (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole pipeline on an in-process mock Kafka cluster with a synthetic shop.
    Demo(DemoArgs),
    /// Consume events from Kafka and publish refreshed recommendations until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Load an interaction log into a topic as v1 JSON events keyed by user, in time order.
    Produce(ProduceArgs),
    /// Prequential (test-then-learn) evaluation of every method on an interaction log.
    Eval(EvalArgs),
    /// End-to-end throughput and latency on the mock cluster, next to raw consume speed.
    Bench(BenchArgs),
    /// Checkpoint cost and restart time for a large synthetic state on real sled files.
    BenchState(BenchStateArgs),
    /// Throughput of 1, 2, 4 … instances in one group sharing the item model, on the mock cluster.
    BenchInstances(BenchInstancesArgs),
    /// Build a fresh state dir from the input topics, without touching the live service.
    Replay(ReplayArgs),
    /// Build a fresh state dir from interaction files (history that never was in Kafka).
    Backfill(BackfillArgs),
    /// Look into a state dir.
    #[command(subcommand)]
    State(StateCommand),
    /// Check settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Item catalog tools.
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the layered settings (defaults, file, STREAMREC__* environment, --set) and print
    /// the effective config with secrets masked.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// section.key=value, applied last (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// A state dir that does not exist yet or is empty.
    #[arg(long)]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The live service's settings: input topics, engine, output topic names.
    #[arg(long)]
    pub config: PathBuf,
    /// A new state dir (not the config's state.dir, not one that holds state).
    #[arg(long)]
    pub state_dir: PathBuf,
    /// `earliest`, an RFC 3339 time (Kafka timestamps), or offsets: 0:1200,1:980 (topic/0:1200
    /// with several input topics).
    #[arg(long, default_value = "earliest")]
    pub from: StartAt,
    /// `latest` (each partition's end when reached) or an RFC 3339 time (Kafka timestamps).
    #[arg(long, default_value = "latest")]
    pub to: StopAt,
    /// Where recommendations, similar items and dead letters go.
    #[arg(long, value_enum, default_value_t = OutputMode::None)]
    pub output: OutputMode,
    /// Appended to the live topic names with --output shadow.
    #[arg(long, default_value = ".shadow")]
    pub shadow_suffix: String,
    /// At most this many events per second (spares the brokers during business hours).
    #[arg(long)]
    pub max_rate: Option<u64>,
    /// Confirms --output live: consumers of the live topics will see the replay's outputs.
    #[arg(long)]
    pub yes: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// section.key=value, applied after the file and the environment (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Counts, sizes, stored offsets and the digest.
    Stats {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// A hash of the logical state, independent of how sled lays it out.
    Digest {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Forget which input offsets the state reflects, keeping everything learned: for a state
    /// whose topic was recreated (or whose broker lost data), which `run` refuses to continue.
    ForgetOffsets {
        #[arg(long)]
        state_dir: PathBuf,
        /// The engine settings the state was built with; defaults when left out.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One user's profile and recommendations, or one item's neighbours.
    Inspect {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, conflicts_with = "item", required_unless_present = "item")]
        user: Option<String>,
        #[arg(long)]
        item: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events per phase (the mock cluster keeps about 40k per partition; there are 3).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Pipeline workers (`pipeline.workers`).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchStateArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub users: usize,
    /// Events learned before the first checkpoint (default: 3 per user).
    #[arg(long)]
    pub events: Option<usize>,
    /// Events between the first and the later checkpoint (about 5 s of a busy shop).
    #[arg(long, default_value_t = 100_000)]
    pub batch: usize,
    /// Where the temporary state dir goes.
    #[arg(long, default_value = "target/bench-state")]
    pub dir: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchInstancesArgs {
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub instances: Vec<usize>,
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No state dirs and no changelog (by default each instance checkpoints to its own state
    /// dir and writes changed users to a changelog topic, as a deployment does).
    #[arg(long)]
    pub no_state: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events the synthetic shop sends (about 1% duplicates and 0.5% malformed among them).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Events per second the shop sends.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Stop after this many seconds even if not every event was consumed.
    #[arg(long, default_value_t = 50)]
    pub duration: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Settings (TOML); see config/streamrec.toml. STREAMREC__SECTION__KEY variables and --set
    /// override it.
    #[arg(long)]
    pub config: PathBuf,
    /// section.key=value, applied after the file and the environment (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// bootstrap.servers; overrides the config file's kafka.brokers.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Default: the config's first input topic (`kafka.input_topics`), the one `run` reads.
    #[arg(long)]
    pub topic: Option<String>,
    /// Move every event by the same amount so the latest happens now (gaps and order kept):
    /// a history of years ago is then judged by `run` like a live stream.
    #[arg(long)]
    pub shift_to_now: bool,
    /// Settings (TOML) for cleaning limits and librdkafka properties.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// At most this many events per second (a steady stream instead of a burst).
    #[arg(long)]
    pub rate: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// `eval --mode`: what counts as a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMode {
    Discovery,
    Purchase,
}

impl From<EvalMode> for Mode {
    fn from(mode: EvalMode) -> Mode {
        match mode {
            EvalMode::Discovery => Mode::Discovery,
            EvalMode::Purchase => Mode::Purchase,
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The interaction log to replay.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Default: purchase for jsonl and taobao, discovery for MovieLens.
    #[arg(long, value_enum)]
    pub mode: Option<EvalMode>,
    #[arg(long, default_value_t = 10)]
    pub top_n: usize,
    /// Engine settings (TOML); defaults when left out.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Score only these methods (comma-separated names from the table); default all.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// A catalog applied before the events: item.v1 JSON lines or MovieLens movies.csv.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// List every item of the log up front with the category its events carry (Taobao).
    #[arg(long, conflicts_with = "catalog")]
    pub catalog_from_events: bool,
    /// Simulate this many instances: users partitioned by hash, each instance with its own
    /// replica of the item model, kept in step by item-model updates.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// With several instances, updates reach the other replicas every this many events.
    #[arg(long, default_value_t = 1000)]
    pub sync_every: usize,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.log_format);
    match cli.command {
        Command::Demo(args) => runtime()?.block_on(demo(DemoOptions {
            events: args.events,
            rate: args.rate,
            duration: Duration::from_secs(args.duration),
            seed: args.seed,
        })),
        Command::Run(args) => run_pipeline(args),
        Command::Produce(args) => produce_file(args),
        Command::Eval(args) => eval(args),
        Command::Bench(args) => bench(args),
        Command::BenchState(args) => bench_state(args),
        Command::BenchInstances(args) => bench_instances(args),
        Command::Replay(args) => replay(args),
        Command::Backfill(args) => backfill(args),
        Command::State(command) => state(command),
        Command::Catalog(command) => catalog::run(command),
        Command::Config(ConfigCommand::Check { config, set }) => {
            let effective = load_config(config.as_ref(), &set)?;
            println!(
                "# config OK: defaults, then {}, then STREAMREC__* environment, then --set",
                config
                    .as_ref()
                    .map_or("no file".into(), |p| p.display().to_string())
            );
            print!("{}", crate::config_layers::render_masked(&effective));
            Ok(())
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => logs.try_init(),
        LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on SIGINT or SIGTERM.
/// Installs the SIGINT/SIGTERM handlers now (so a signal during start-up, while state loads, is
/// not fatal) and returns a future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested: draining");
    })
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if args.output == OutputMode::Live && !args.yes {
        bail!("--output live publishes to the live topics, where consumers will see it; add --yes to confirm");
    }
    if args.max_rate == Some(0) {
        bail!("--max-rate must be at least 1 event/s");
    }
    let config = load_config(Some(&args.config), &args.set)?;
    let stop = stop_on_signal()?;
    let options = kafka::ReplayOptions {
        state_dir: args.state_dir.clone(),
        from: args.from,
        to: args.to,
        output: args.output,
        shadow_suffix: args.shadow_suffix,
        max_rate: args.max_rate,
        progress: !args.quiet,
    };
    let report = kafka::replay(&config, &options, &stop)?;
    print!(
        "{}",
        replay_summary(&report, &args.state_dir, &args.config, args.output)
    );
    Ok(())
}

/// A flag that SIGINT or SIGTERM sets (handlers installed before returning).
fn stop_on_signal() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = runtime.block_on(async { shutdown_signal() })?;
    let flag = stop.clone();
    std::thread::spawn(move || {
        runtime.block_on(signal);
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(stop)
}

fn replay_summary(
    report: &kafka::ReplayReport,
    state_dir: &std::path::Path,
    config: &std::path::Path,
    output: OutputMode,
) -> String {
    let stats = &report.stats;
    let seconds = report.elapsed.as_secs_f64();
    let positions = |offsets: &crate::store::Offsets| {
        offsets
            .iter()
            .map(|((topic, partition), offset)| format!("{topic}/{partition}@{offset}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = format!(
        "{} {} messages in {seconds:.1} s ({:.0} events/s; {:.0}/s while applying, final checkpoint {:.2} s): \
         {} applied, {} duplicates, {} rejected {:?}; outputs {output}: {} recommendations, {} similar items\n",
        if report.interrupted { "interrupted after" } else { "replayed" },
        stats.consumed,
        stats.consumed as f64 / seconds.max(1e-9),
        stats.consumed as f64 / report.applying.as_secs_f64().max(1e-9),
        report.final_checkpoint.as_secs_f64(),
        stats.applied,
        stats.duplicates,
        stats.rejected_total(),
        stats.rejected,
        stats.recommendations,
        stats.similar_items,
    );
    text += &format!("started at: {}\n", positions(&report.started));
    text += &format!("state ends at: {}\n", positions(&report.stopped));
    text += &format!(
        "state: {} ({} checkpoints), digest {}\n",
        state_dir.display(),
        report.checkpoints,
        report.digest
    );
    text += &format!(
        "to continue live from exactly there: set state.dir = \"{}\" in {} and run `streamrec run`\n",
        state_dir.display(),
        config.display()
    );
    text
}

fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_ref(), &[])?;
    let store = StateStore::open(&args.state_dir, true)?;
    if store.read()?.is_some() {
        bail!(
            "state dir {} already holds state; backfill builds a fresh one",
            args.state_dir.display()
        );
    }
    let mut loaded = load(&args.input, args.format, &config.engine.clean)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    loaded.events.sort_by_key(|e| e.ts_ms);
    let started = std::time::Instant::now();
    let mut engine = Engine::new(config.engine.clone());
    let mut duplicates = 0u64;
    for event in &loaded.events {
        if engine.apply(event) == crate::engine::Applied::Duplicate {
            duplicates += 1;
        }
    }
    let size = store.checkpoint(&mut engine, &Default::default())?;
    println!(
        "backfilled {} events ({} duplicates) into {} in {:.1} s: {} users, {} items, {} records, {} bytes; {} of {} rows skipped: {:?}",
        loaded.events.len(),
        duplicates,
        args.state_dir.display(),
        started.elapsed().as_secs_f64(),
        engine.user_count(),
        engine.item_count(),
        size.records,
        size.bytes,
        loaded.skipped_total(),
        loaded.rows,
        loaded.skipped
    );
    println!("digest: {}", engine.digest());
    Ok(())
}

fn state(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Digest { state_dir } => {
            let stored = read_state(&state_dir)?;
            println!("{}", stored.digest());
        }
        StateCommand::Stats { state_dir } => {
            let store = StateStore::open(&state_dir, false)?;
            let stored = store.read()?.ok_or_else(|| empty_state(&state_dir))?;
            let (engine, _) = store
                .load(Config::default().engine)?
                .ok_or_else(|| empty_state(&state_dir))?;
            print!("{}", inspect::stats(&stored, &engine));
        }
        StateCommand::ForgetOffsets { state_dir, config } => {
            let config = load_config(config.as_ref(), &[])?;
            let store = StateStore::open(&state_dir, false)?;
            let (mut engine, _) = store
                .load(config.engine)?
                .ok_or_else(|| empty_state(&state_dir))?;
            engine.forget_positions();
            let dropped = store.forget_offsets(&engine.to_records())?;
            for ((topic, partition), next) in &dropped {
                println!("forgot {topic}/{partition}: next offset {next}");
            }
            println!(
                "{} offsets forgotten; {} users kept; run now reads from the group's committed offsets, or the log's start",
                dropped.len(),
                engine.user_count()
            );
        }
        StateCommand::Inspect {
            state_dir,
            user,
            item,
            config,
        } => {
            let config = load_config(config.as_ref(), &[])?;
            let store = StateStore::open(&state_dir, false)?;
            let (engine, _) = store
                .load(config.engine)?
                .ok_or_else(|| empty_state(&state_dir))?;
            let text = match (user, item) {
                (Some(user), _) => inspect::user(&engine, &user).ok_or_else(|| {
                    anyhow::anyhow!("no user {user:?} in {}", state_dir.display())
                })?,
                (None, Some(item)) => inspect::item(&engine, &item).ok_or_else(|| {
                    anyhow::anyhow!("no item {item:?} in {}", state_dir.display())
                })?,
                (None, None) => unreachable!("clap requires --user or --item"),
            };
            print!("{text}");
        }
    }
    Ok(())
}

fn read_state(state_dir: &std::path::Path) -> anyhow::Result<crate::store::Stored> {
    let store = StateStore::open(state_dir, false)?;
    store.read()?.ok_or_else(|| empty_state(state_dir))
}

fn empty_state(state_dir: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!("state dir {} holds no state yet", state_dir.display())
}

fn bench_instances(args: BenchInstancesArgs) -> anyhow::Result<()> {
    if args.instances.first() != Some(&1) || args.instances.contains(&0) {
        bail!("--instances must start with 1 (the baseline) and hold no 0");
    }
    let rows = runtime()?.block_on(crate::bench_instances::bench_instances(
        args.events,
        args.seed,
        &args.instances,
        !args.no_state,
    ))?;
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!(
        "{} events, mock cluster, 6 partitions, instances in one process replicating through model-updates{}",
        args.events,
        if args.no_state { "" } else { ", each with a state dir and the changelog" }
    );
    for row in rows {
        println!(
            "  {} instance(s): {:>8.0} events/s, scaling efficiency {:.2}, {} model updates",
            row.instances, row.events_per_s, row.efficiency, row.model_updates
        );
    }
    Ok(())
}

fn bench_state(args: BenchStateArgs) -> anyhow::Result<()> {
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    let options = crate::state_bench::StateBenchOptions {
        users: args.users,
        events: args.events.unwrap_or(args.users * 3),
        batch: args.batch,
        dir: args.dir,
    };
    let r = crate::state_bench::bench_state(&options)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let mb = |bytes: f64| bytes / 1e6;
    println!(
        "{} users, {} items, {} events learned at {:.0} events/s; in memory ~{:.0} B/user, ~{:.0} B/item",
        r.users, r.items, r.events, r.apply_per_s, r.bytes_per_user_in_memory, r.bytes_per_item_in_memory
    );
    println!(
        "  first checkpoint (everything)             {:>7.2} s  {:>8.1} MB",
        r.first_checkpoint_s,
        mb(r.first_checkpoint_bytes as f64)
    );
    println!(
        "  later checkpoint ({} events, {} users): encoding {:.2} s (events wait), \
         writing {:.2} s (in the background), {:.1} MB",
        r.batch,
        r.users_in_batch,
        r.later_checkpoint_encode_s,
        r.later_checkpoint_write_s,
        mb(r.later_checkpoint_bytes as f64)
    );
    println!(
        "  state dir on disk                         {:>17.1} MB",
        mb(r.disk_bytes as f64)
    );
    println!(
        "  restart to the first processed event      {:>7.2} s  (opening sled {:.2} s)",
        r.restart_to_first_event_s, r.restart_open_store_s
    );
    println!(
        "  loading every user instead                {:>7.2} s",
        r.full_load_s
    );
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let report = runtime()?.block_on(crate::bench::bench(args.events, args.seed, args.workers))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{} events per phase, mock cluster, 3 partitions, {} worker(s); \
         {:.1}% of learning steps waited for the item lock",
        report.events,
        report.workers,
        100.0 * report.contended_share
    );
    println!(
        "  raw librdkafka consume     {:>9.0} messages/s",
        report.raw_consume_per_s
    );
    println!(
        "  pipeline (1 s coalescing)  {:>9.0} events/s  ({:.2}x raw)",
        report.pipeline_per_s, report.pipeline_over_raw
    );
    println!(
        "  pipeline (no coalescing)   {:>9.0} events/s  ({:.2}x raw)",
        report.uncoalesced_per_s,
        report.uncoalesced_per_s / report.raw_consume_per_s
    );
    println!(
        "  replay, no outputs         {:>9.0} events/s  ({:.2}x the pipeline)",
        report.replay_per_s, report.replay_over_pipeline
    );
    println!(
        "  replay, shadow outputs     {:>9.0} events/s",
        report.replay_shadow_per_s
    );
    println!(
        "  latency at {:.0} events/s, no coalescing: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.latency_rate_per_s,
        report.latency_p50_ms,
        report.latency_p99_ms,
        report.latency_max_ms
    );
    Ok(())
}

fn run_pipeline(args: RunArgs) -> anyhow::Result<()> {
    let config = load_config(Some(&args.config), &args.set)?;
    tracing::info!(brokers = %config.kafka.brokers, topics = ?config.kafka.input_topics, "starting");
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        anyhow::Ok(kafka::run(&config, shutdown, Default::default()).await?)
    })?;
    let stats = &report.stats();
    tracing::info!(
        consumed = stats.consumed,
        applied = stats.applied,
        duplicates = stats.duplicates,
        rejected = stats.rejected_total(),
        recommendations = stats.recommendations,
        similar_items = stats.similar_items,
        "stopped cleanly"
    );
    println!("{}", serde_json::to_string(stats)?);
    Ok(())
}

fn produce_file(args: ProduceArgs) -> anyhow::Result<()> {
    if args.rate == Some(0) {
        bail!("--rate must be at least 1 event/s");
    }
    let mut config = load_config(args.config.as_ref(), &[])?;
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    let topic = match args.topic {
        Some(topic) => topic,
        None => config
            .kafka
            .input_topics
            .first()
            .cloned()
            .context("no --topic and no kafka.input_topics in the config to default to")?,
    };
    let mut loaded = load(&args.input, args.format, &config.engine.clean)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    loaded.events.sort_by_key(|e| e.ts_ms);
    let now_ms = crate::kafka::wall_clock_ms();
    if args.shift_to_now {
        let shift = history::shift_to(&mut loaded.events, now_ms);
        eprintln!(
            "shifted every event by {:.1} days: the latest happens now",
            shift as f64 / 86_400_000.0
        );
    }
    warn_of_time_rejections(&loaded, &config, now_ms, args.shift_to_now);
    let report = runtime()?.block_on(kafka::produce(
        &config.kafka,
        &topic,
        &loaded.events,
        !args.quiet,
        args.rate,
    ))?;
    println!(
        "produced {} events to {} in {:.1} s ({:.0} events/s); {} of {} rows skipped: {:?}",
        report.produced,
        topic,
        report.elapsed.as_secs_f64(),
        report.produced as f64 / report.elapsed.as_secs_f64().max(1e-9),
        loaded.skipped_total(),
        loaded.rows,
        loaded.skipped
    );
    for example in &loaded.examples {
        eprintln!("  {example}");
    }
    Ok(())
}

/// Says before producing how many events `run` will reject for their time, and how to load a
/// history so that it will not.
fn warn_of_time_rejections(loaded: &Loaded, config: &Config, now_ms: i64, shifted: bool) {
    let preview = history::preview_times(&loaded.events, &config.engine.clean, now_ms);
    if preview.rejected == 0 {
        return;
    }
    let share = 100.0 * preview.rejected as f64 / loaded.events.len() as f64;
    eprintln!(
        "warning: run will reject {} of {} events ({share:.1} %) as bad_timestamp, e.g. {}",
        preview.rejected,
        loaded.events.len(),
        preview.example.unwrap_or_default()
    );
    if !shifted {
        eprintln!(
            "  to load a history as if it happened recently, add --shift-to-now (every event moves by the same amount, the latest to now; gaps are kept), or change engine.clean.min_ts_ms"
        );
    }
}

/// Defaults, then the file, then `STREAMREC__*` variables, then `--set` flags.
fn load_config(path: Option<&PathBuf>, sets: &[String]) -> anyhow::Result<Config> {
    Ok(crate::config_layers::load(
        path.map(PathBuf::as_path),
        std::env::vars(),
        sets,
    )?)
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if args.top_n == 0 {
        bail!("--top-n must be at least 1");
    }
    let config = load_config(args.config.as_ref(), &[])?;
    let loaded = load(&args.input, args.format, &config.engine.clean)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    if loaded.events.is_empty() {
        bail!(
            "{} holds no valid {:?} rows ({} rows, {} skipped)",
            args.input.display(),
            args.format,
            loaded.rows,
            loaded.skipped_total()
        );
    }
    let mode = args
        .mode
        .map(Mode::from)
        .unwrap_or(if args.format.default_purchase_mode() {
            Mode::Purchase
        } else {
            Mode::Discovery
        });
    if loaded.skipped_total() > 0 {
        eprintln!(
            "skipped {} of {} rows: {:?}",
            loaded.skipped_total(),
            loaded.rows,
            loaded.skipped
        );
        for example in &loaded.examples {
            eprintln!("  {example}");
        }
    }
    let mut methods = standard_methods(&config.engine.ranking.blend);
    if !args.methods.is_empty() {
        let known: Vec<String> = methods.iter().map(|m| m.name.clone()).collect();
        if let Some(unknown) = args.methods.iter().find(|m| !known.contains(m)) {
            bail!("unknown method {unknown:?}; known: {}", known.join(", "));
        }
        methods.retain(|m| args.methods.contains(&m.name));
    }
    let listings = catalog::for_eval(&args, &loaded.events, &config)?;
    if args.instances == 0 || args.sync_every == 0 {
        bail!("--instances and --sync-every must be at least 1");
    }
    let protocol = Protocol {
        mode,
        top_n: args.top_n,
        instances: args.instances,
        sync_every: args.sync_every,
    };
    let report = evaluate(
        loaded.events,
        &listings,
        &protocol,
        &config.engine,
        &methods,
    );
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["input"] = args.input.display().to_string().into();
        value["skipped_rows"] = serde_json::to_value(&loaded.skipped)?;
        println!("{value}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
