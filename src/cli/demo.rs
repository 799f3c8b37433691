//! `streamrec demo`: the whole pipeline on an in-process mock cluster.

use clap::Args;

use super::runtime;

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

pub(super) fn demo(args: DemoArgs) -> anyhow::Result<()> {
    runtime()?.block_on(crate::tools::demo::demo(crate::tools::demo::DemoOptions {
        events: args.events,
        rate: args.rate,
        duration: std::time::Duration::from_secs(args.duration),
        seed: args.seed,
    }))
}
