//! `streamrec bench`: end-to-end throughput and latency on the mock cluster.

use anyhow::bail;
use clap::Args;

use super::{load_config, runtime};

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
    /// Engine settings (TOML, its `[engine]` tables: ranking, experiments …); defaults when
    /// left out. The benchmark's own Kafka and pipeline settings stay.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

pub(super) fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let engine = load_config(args.config.as_ref(), &[])?.engine;
    let report = runtime()?.block_on(crate::tools::bench::bench(
        engine,
        args.events,
        args.seed,
        args.workers,
    ))?;
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
        "  pipeline with a state dir  {:>9.0} events/s  ({:.2}x without)",
        report.durable_per_s,
        report.durable_per_s / report.pipeline_per_s
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
