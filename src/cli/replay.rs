//! `streamrec replay`: a fresh state dir from the input topics.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::{load_config, stop_on_signal};
use crate::kafka;
use crate::replay_plan::{OutputMode, StartAt, StopAt};

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

pub(super) fn replay(args: ReplayArgs) -> anyhow::Result<()> {
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
