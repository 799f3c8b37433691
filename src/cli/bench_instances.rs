//! `streamrec bench-instances`: throughput of several instances in one group, as processes on
//! a real broker (`--brokers`) or in this process on the mock cluster.

use anyhow::bail;
use clap::Args;

use super::eval::TopologyArg;
use super::runtime;
use crate::tools::bench_processes::{bench_processes, Bench, ProcessesRow, Topology};

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
    /// A real broker (host:port): run each instance as a `streamrec run` process and report
    /// the CPU seconds of all of them per 100k events. Without it: instances in this process
    /// on the mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the input and internal topics (with --brokers; the mock cluster has 6).
    #[arg(long, default_value_t = 24)]
    pub partitions: i32,
    /// How the item side is shared between processes (with --brokers): `replicated` (every
    /// process learns all of it; model-updates) or `owned` (item partitions owned through the
    /// item topics).
    #[arg(long, value_enum, default_value = "replicated")]
    pub topology: TopologyArg,
    /// No state dirs and no changelog (by default each instance checkpoints to its own state
    /// dir and writes changed users to a changelog topic, as a deployment does). Mock cluster
    /// only.
    #[arg(long)]
    pub no_state: bool,
    /// Produce the events at this many per second (with --brokers) instead of in one burst,
    /// and report the latency from event to recommendation (p50, p99) at that load.
    #[arg(long)]
    pub rate: Option<u64>,
}

pub(super) fn bench_instances(args: BenchInstancesArgs) -> anyhow::Result<()> {
    if args.instances.first() != Some(&1) || args.instances.contains(&0) {
        bail!("--instances must start with 1 (the baseline) and hold no 0");
    }
    match &args.brokers {
        Some(brokers) => on_broker(&args, brokers),
        None => in_process(&args),
    }
}

fn on_broker(args: &BenchInstancesArgs, brokers: &str) -> anyhow::Result<()> {
    if args.no_state {
        bail!("--no-state is for the mock cluster: processes run as deployed, with state");
    }
    let bench = Bench {
        brokers,
        events: args.events,
        partitions: args.partitions,
        seed: args.seed,
        exe: std::env::current_exe()?,
        topology: args.topology.into(),
        rate: args.rate,
    };
    let rows = runtime()?.block_on(bench_processes(&bench, &args.instances))?;
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    let deployed = match bench.topology {
        Topology::Replicated => "with state dirs, the changelog and model-updates",
        Topology::Owned => {
            "with state dirs, the changelog and the item topics with checkpoints (owned)"
        }
    };
    println!(
        "{} events, broker {brokers}, {} partitions, `streamrec run` processes {deployed}",
        args.events, args.partitions
    );
    for row in rows {
        print_row(&row);
    }
    Ok(())
}

fn print_row(row: &ProcessesRow) {
    println!(
        "  {} process(es): {:>8.0} events/s, scaling efficiency {:.2}, {:.2} CPU s per 100k events ({:.2} × one), {:.2} model updates, {:.2} item records and {:.0} item checkpoint bytes per event",
        row.instances,
        row.events_per_s,
        row.efficiency,
        row.cpu_s_per_100k_events,
        row.cpu_relative,
        row.model_updates_per_event,
        row.item_records_per_event,
        row.item_checkpoint_bytes_per_event
    );
    if row.topology == Topology::Owned {
        println!(
            "      internal topics per event: {:.3} work batches ({:.0} bytes), {:.2} item records ({:.0} bytes), {:.0} checkpoint bytes",
            row.item_work_batches_per_event,
            row.item_work_bytes_per_event,
            row.item_records_per_event,
            row.item_record_bytes_per_event,
            row.item_checkpoint_bytes_per_event
        );
    }
    if let (Some(p50), Some(p99)) = (row.latency_p50_ms, row.latency_p99_ms) {
        println!("      event to recommendation: p50 {p50:.1} ms, p99 {p99:.1} ms");
    }
}

fn in_process(args: &BenchInstancesArgs) -> anyhow::Result<()> {
    if args.rate.is_some() {
        bail!("--rate is for --brokers: the mock cluster's instances share this process's CPU");
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
