//! `streamrec bench-state`: checkpoint cost and restart time on real sled files.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use crate::tools::state_restart::RestartArgs;

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
    /// Events per second in the two latency windows (3 s each; keep it below what the engine
    /// sustains, or every event waits for the ones before it).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Where the temporary state dir goes.
    #[arg(long, default_value = "target/bench-state")]
    pub dir: PathBuf,
    /// Drop the kernel's page cache before the restart, as after a reboot (needs root).
    #[arg(long)]
    pub cold: bool,
    /// Keep the state dir afterwards, and print the command that restarts it again (to time
    /// or profile restarts without writing the state anew).
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn bench_state(args: BenchStateArgs) -> anyhow::Result<()> {
    if args.users == 0 {
        bail!("--users must be at least 1");
    }
    if !(args.rate >= 1.0 && args.rate <= 1e7) {
        bail!("--rate must be between 1 and 10,000,000 events per second");
    }
    let options = crate::tools::state_bench::StateBenchOptions {
        users: args.users,
        events: args.events.unwrap_or(args.users * 3),
        batch: args.batch,
        rate: args.rate,
        dir: args.dir,
        cold: args.cold,
        keep: args.keep,
    };
    let r = crate::tools::state_bench::bench_state(&options)?;
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
    let (quiet, under) = (&r.without_checkpoint, &r.during_checkpoint);
    println!(
        "  event → recommendations at {:.0}/s, without a checkpoint: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        r.rate, quiet.p50_ms, quiet.p99_ms, quiet.max_ms
    );
    println!(
        "  … during a checkpoint ({} users, {} items changed): p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms",
        r.users_changed, under.items_written, under.window.p50_ms, under.window.p99_ms, under.window.max_ms
    );
    println!(
        "    the cut on the worker {:.3} s; encoding and writing {:.1} MB on another thread {:.2} s",
        under.cut_s,
        mb(under.bytes as f64),
        under.encode_and_write_s
    );
    println!(
        "  state dir on disk                         {:>17.1} MB",
        mb(r.disk_bytes as f64)
    );
    let cache = if r.restart_cold { "cold" } else { "warm" };
    println!(
        "  restart to the first processed event      {:>7.2} s  (new process, {cache} page cache: opening sled {:.2} s, decoding {:.2} s)",
        r.restart.to_first_event_s, r.restart.open_store_s, r.restart.decode_s
    );
    println!(
        "    … of which in the kernel                {:>7.2} s  ({} page faults: memory touched for the first time)",
        r.restart.kernel_s, r.restart.page_faults
    );
    println!(
        "  loading every user instead                {:>7.2} s",
        r.restart.full_load_s
    );
    Ok(())
}

/// `bench-state-restart`: one restart, its times as JSON on stdout.
pub(super) fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let times = crate::tools::state_restart::restart(&args.dir, &args.first_event())?;
    println!("{}", serde_json::to_string(&times)?);
    Ok(())
}
