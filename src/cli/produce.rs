//! `streamrec produce`: a file of events into a topic, warning of what `run` will reject.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::{load_config, runtime};
use crate::config::Config;
use crate::formats::{history, load, Format, Loaded};
use crate::kafka;

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

pub(super) fn produce_file(args: ProduceArgs) -> anyhow::Result<()> {
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
