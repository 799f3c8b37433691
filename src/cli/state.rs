//! `streamrec state`: look into (or forget the offsets of) a state dir.

use std::path::PathBuf;

use clap::Subcommand;

use super::load_config;
use crate::config::Config;
use crate::inspect;
use crate::store::StateStore;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Counts, sizes, stored offsets and the digest.
    Stats {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// A hash of the logical state, independent of how sled lays it out.
    Digest {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Forget which input offsets the state reflects, keeping everything learned: for a state
    /// whose topic was recreated (or whose broker lost data), which `run` refuses to continue.
    ForgetOffsets {
        #[arg(long)]
        state_dir: PathBuf,
        /// The engine settings the state was built with; defaults when left out.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// One user's profile and recommendations, or one item's neighbours.
    Inspect {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long, conflicts_with = "item", required_unless_present = "item")]
        user: Option<String>,
        #[arg(long)]
        item: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub(super) fn state(command: StateCommand) -> anyhow::Result<()> {
    match command {
        StateCommand::Digest { state_dir } => {
            let stored = read_state(&state_dir)?;
            println!("{}", stored.digest());
        }
        StateCommand::Stats { state_dir } => {
            let store = StateStore::open(&state_dir, false)?;
            let stored = store.read()?.ok_or_else(|| empty_state(&state_dir))?;
            let (engine, _) = store
                .load(Config::default().engine)?
                .ok_or_else(|| empty_state(&state_dir))?;
            print!("{}", inspect::stats(&stored, &engine));
        }
        StateCommand::ForgetOffsets { state_dir, config } => {
            let config = load_config(config.as_ref(), &[])?;
            let store = StateStore::open(&state_dir, false)?;
            let (mut engine, _) = store
                .load(config.engine)?
                .ok_or_else(|| empty_state(&state_dir))?;
            engine.forget_positions();
            // The engine holds every user and the first worker's shard; the other workers'
            // shards stay as stored (a write replaces only the records it has).
            let dropped = store.forget_offsets(&engine.to_records())?;
            for ((topic, partition), next) in &dropped {
                println!("forgot {topic}/{partition}: next offset {next}");
            }
            println!(
                "{} offsets forgotten; {} users kept; run now reads from the group's committed offsets, or the log's start",
                dropped.len(),
                engine.user_count()
            );
        }
        StateCommand::Inspect {
            state_dir,
            user,
            item,
            config,
        } => {
            let config = load_config(config.as_ref(), &[])?;
            let store = StateStore::open(&state_dir, false)?;
            let (engine, _) = store
                .load(config.engine)?
                .ok_or_else(|| empty_state(&state_dir))?;
            let text = match (user, item) {
                (Some(user), _) => inspect::user(&engine, &user).ok_or_else(|| {
                    anyhow::anyhow!("no user {user:?} in {}", state_dir.display())
                })?,
                (None, Some(item)) => inspect::item(&engine, &item).ok_or_else(|| {
                    anyhow::anyhow!("no item {item:?} in {}", state_dir.display())
                })?,
                (None, None) => unreachable!("clap requires --user or --item"),
            };
            print!("{text}");
        }
    }
    Ok(())
}

fn read_state(state_dir: &std::path::Path) -> anyhow::Result<crate::store::Stored> {
    let store = StateStore::open(state_dir, false)?;
    store.read()?.ok_or_else(|| empty_state(state_dir))
}

fn empty_state(state_dir: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!("state dir {} holds no state yet", state_dir.display())
}
