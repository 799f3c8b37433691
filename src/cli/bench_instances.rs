//! `streamrec bench-instances`: throughput of several instances in one group.

use anyhow::bail;
use clap::Args;

use super::runtime;

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

pub(super) fn bench_instances(args: BenchInstancesArgs) -> anyhow::Result<()> {
    if args.instances.first() != Some(&1) || args.instances.contains(&0) {
        bail!("--instances must start with 1 (the baseline) and hold no 0");
    }
    let rows = runtime()?.block_on(crate::tools::bench_instances::bench_instances(
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
