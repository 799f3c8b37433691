//! `streamrec run`: the live pipeline until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{load_config, runtime, shutdown_signal};

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

pub(super) fn run_pipeline(args: RunArgs) -> anyhow::Result<()> {
    let config = load_config(Some(&args.config), &args.set)?;
    tracing::info!(brokers = %config.kafka.brokers, topics = ?config.kafka.input_topics, "starting");
    let runtime = runtime()?;
    let report = runtime.block_on(async {
        let limit = Duration::from_millis(config.pipeline.shutdown_limit_ms);
        let shutdown = shutdown_signal(Some(limit))?;
        anyhow::Ok(crate::runtime::run(&config, shutdown, Default::default()).await?)
    });
    crate::kafka::shut_down_within_bound(runtime);
    let report = report?;
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
