//! `streamrec backfill`: a fresh state dir from interaction files.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::load_config;
use crate::engine::{Applied, Engine};
use crate::formats::{load, Format};
use crate::store::StateStore;

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

pub(super) fn backfill(args: BackfillArgs) -> anyhow::Result<()> {
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
    let (mut duplicates, mut refused) = (0u64, 0u64);
    for event in &loaded.events {
        match engine.apply(event).applied {
            Applied::Duplicate => duplicates += 1,
            Applied::ItemLimit => refused += 1,
            Applied::Learned { .. } => {}
        }
    }
    let size = store.checkpoint(&mut engine, &Default::default())?;
    println!(
        "backfilled {} events ({} duplicates, {} refused by engine.max_items) into {} in {:.1} s: {} users, {} items, {} records, {} bytes; {} of {} rows skipped: {:?}",
        loaded.events.len(),
        duplicates,
        refused,
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
