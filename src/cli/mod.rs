//! Command-line interface: argument parsing and the glue from files to the engine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::kafka;

mod backfill;
mod bench;
mod bench_instances;
mod bench_state;
mod catalog;
mod config;
mod demo;
mod eval;
mod eval_grid;
mod produce;
mod replay;
mod run;
mod state;

use backfill::BackfillArgs;
use bench::BenchArgs;
use bench_instances::BenchInstancesArgs;
use bench_state::BenchStateArgs;
use config::ConfigCommand;
use demo::DemoArgs;
use eval::EvalArgs;
use produce::ProduceArgs;
use replay::ReplayArgs;
use run::RunArgs;
use state::StateCommand;

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
    /// The restart half of `bench-state`, which starts it in a process of its own.
    #[command(name = "bench-state-restart", hide = true)]
    BenchStateRestart(crate::tools::state_restart::RestartArgs),
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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_logging(cli.log_format);
    match cli.command {
        Command::Demo(args) => demo::demo(args),
        Command::Run(args) => run::run_pipeline(args),
        Command::Produce(args) => produce::produce_file(args),
        Command::Eval(args) => eval::eval(args),
        Command::Bench(args) => bench::bench(args),
        Command::BenchState(args) => bench_state::bench_state(args),
        Command::BenchStateRestart(args) => bench_state::restart(args),
        Command::BenchInstances(args) => bench_instances::bench_instances(args),
        Command::Replay(args) => replay::replay(args),
        Command::Backfill(args) => backfill::backfill(args),
        Command::State(command) => state::state(command),
        Command::Catalog(command) => catalog::run(command),
        Command::Config(command) => config::config(command),
    }
}

/// A failed command's exit status: 75 (EX_TEMPFAIL) when `run` stopped for something that may
/// pass by itself (the brokers, the network), so restarting it is the fix; 78 (EX_CONFIG) when
/// an operator must act first (settings, topics, the state dir); 1 for anything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let run = err
        .chain()
        .find_map(|e| e.downcast_ref::<kafka::RunError>());
    match run.map(kafka::RunError::retry) {
        Some(kafka::Retry::Transient) => EXIT_TEMPFAIL as u8,
        Some(kafka::Retry::Fatal) => 78,
        None => 1,
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

/// The exit status of a shutdown cut short (see [`exit_code`]): what was not committed is read
/// again at the next start, so a restart is the fix.
const EXIT_TEMPFAIL: i32 = 75;

/// SIGINT and SIGTERM, with their handlers installed on creation.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Installs the SIGINT/SIGTERM handlers now (so a signal during start-up, while state loads, is
/// not fatal) and returns a future that resolves on either. From then on the process exits at
/// once on a second signal, and by `limit` (if any) whatever its shutdown still waits for; must
/// be awaited on a runtime that keeps running while the shutdown does.
fn shutdown_signal(
    limit: Option<Duration>,
) -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut signals = Signals::install()?;
    Ok(async move {
        signals.next().await;
        tracing::info!("shutdown requested: draining");
        if let Some(limit) = limit {
            exit_after(limit);
        }
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("a second signal: exiting now, without the rest of the shutdown");
            std::process::exit(EXIT_TEMPFAIL);
        });
    })
}

/// Exits the process `limit` from now unless it exited before.
fn exit_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(
            limit_ms = limit.as_millis() as u64,
            "shutdown not done within pipeline.shutdown_limit_ms: exiting now; what was not committed is read again at the next start"
        );
        std::process::exit(EXIT_TEMPFAIL);
    });
}

/// A flag that SIGINT or SIGTERM sets (handlers installed before returning); a second signal
/// exits at once. No time limit: what sets the flag (a replay) ends with a checkpoint that may
/// take minutes at scale, and cutting it short would lose the work since the last.
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signal = runtime.block_on(async { shutdown_signal(None) })?;
    let flag = stop.clone();
    std::thread::spawn(move || {
        runtime.block_on(async {
            signal.await;
            flag.store(true, Ordering::Relaxed);
            // Keeps the runtime, where a second signal is awaited, running.
            std::future::pending::<()>().await
        })
    });
    Ok(stop)
}

/// Defaults, then the file, then `STREAMREC__*` variables, then `--set` flags.
fn load_config(path: Option<&PathBuf>, sets: &[String]) -> anyhow::Result<Config> {
    Ok(crate::config_layers::load(
        path.map(PathBuf::as_path),
        std::env::vars(),
        sets,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_whether_a_restart_can_help() {
        let transient = kafka::RunError::DrainTimeout {
            open: 3,
            drain_ms: 10_000,
        };
        let fatal = kafka::RunError::StateAheadOfLog {
            topic: "events".into(),
            partition: 0,
            next: 300,
            log_end: 12,
        };
        assert_eq!(exit_code(&transient.into()), 75);
        assert_eq!(exit_code(&anyhow::Error::from(fatal).context("run")), 78);
        assert_eq!(exit_code(&anyhow::anyhow!("--rate must be at least 1")), 1);
    }
}
