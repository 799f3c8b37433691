//! The restart half of `streamrec bench-state`, in a process of its own, as a real restart is:
//! timed inside the process that had just written the state, opening sled read 3 – 4 × slower
//! than any restart sees.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::EngineConfig;
use crate::event::{Event, EventType};
use crate::store::{StateStore, StoreError};

/// The hidden command `bench-state` starts for its restart.
pub const COMMAND: &str = "bench-state-restart";

/// Times from the restarted process's start.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct RestartTimes {
    /// Opening sled (it rebuilds its page table from the log written since its last open).
    pub open_store_s: f64,
    /// Decoding the item model and the shards (users stay in the store).
    pub decode_s: f64,
    /// Start to the first event applied, its user read back from the store.
    pub to_first_event_s: f64,
    /// Of that, CPU time in the kernel, and the page faults behind most of it: memory touched
    /// for the first time (see `docs/guarantees.md` on what it costs in a fresh VM).
    pub kernel_s: f64,
    pub page_faults: u64,
    /// Loading every user as well, for contrast (after the first event).
    pub full_load_s: f64,
}

/// The restart, in this process: open, decode, apply `first`, then load everything.
pub fn restart(dir: &Path, first: &Event) -> Result<RestartTimes, StoreError> {
    let config = EngineConfig::default();
    let started = Instant::now();
    let store = StateStore::open(dir, false)?;
    let open_store = started.elapsed();
    let (mut engine, _) = store
        .open_engine(config.clone())?
        .ok_or_else(|| empty(dir))?;
    let decoded = started.elapsed();
    if let Some(record) = store.user(&first.user_id)? {
        engine
            .insert_user(&first.user_id, &record)
            .map_err(|e| store_corrupt(dir, e.to_string()))?;
    }
    engine.apply(first);
    let to_first_event = started.elapsed();
    let (kernel_s, page_faults) = kernel_time_and_faults().unwrap_or_default();
    drop(engine);
    let full = Instant::now();
    let loaded = store.load(config)?;
    let full_load = full.elapsed();
    drop(loaded);
    Ok(RestartTimes {
        open_store_s: open_store.as_secs_f64(),
        decode_s: (decoded - open_store).as_secs_f64(),
        to_first_event_s: to_first_event.as_secs_f64(),
        kernel_s,
        page_faults,
        full_load_s: full_load.as_secs_f64(),
    })
}

/// This process's kernel CPU seconds and minor page faults so far.
fn kernel_time_and_faults() -> Option<(f64, u64)> {
    use crate::tools::scrape::{ProcStat, MINFLT, STIME, TICKS_PER_SECOND};
    let stat = ProcStat::read("self").ok()?;
    let faults = stat.field(MINFLT).ok()? as u64;
    Some((stat.field(STIME).ok()? / TICKS_PER_SECOND, faults))
}

/// How the restarted process finds the state and its first event.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub item: String,
    #[arg(long, allow_hyphen_values = true)]
    pub ts_ms: i64,
}

impl RestartArgs {
    pub fn first_event(&self) -> Event {
        Event::new(EventType::View, &self.user, &self.item, self.ts_ms)
    }
}

/// Runs `restart` in a new process of this executable and reads back its times. With
/// `cold`, the kernel's page cache is dropped first (needs root), as after a reboot.
pub fn restart_in_new_process(
    dir: &Path,
    first: &Event,
    cold: bool,
) -> anyhow::Result<RestartTimes> {
    if cold {
        drop_page_cache()?;
    }
    let output = Command::new(std::env::current_exe()?)
        .args(restart_args(dir, first))
        .output()?;
    if !output.status.success() {
        anyhow::bail!(
            "the restarted process failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn restart_args(dir: &Path, first: &Event) -> Vec<String> {
    let dir = dir.display().to_string();
    let ts_ms = first.ts_ms.to_string();
    let (user, item) = (first.user_id.clone(), first.item_id.clone());
    let args = [
        COMMAND, "--dir", &dir, "--user", &user, "--item", &item, "--ts-ms", &ts_ms,
    ];
    args.map(str::to_owned).to_vec()
}

/// The command that restarts the state in `dir` again and prints its times as JSON.
pub fn command_line(dir: &Path, first: &Event) -> String {
    let exe = std::env::current_exe().map_or("streamrec".into(), |p| p.display().to_string());
    std::iter::once(exe)
        .chain(restart_args(dir, first))
        .collect::<Vec<_>>()
        .join(" ")
}

fn drop_page_cache() -> anyhow::Result<()> {
    // Dirty pages cannot be dropped: write them back first.
    Command::new("sync").status()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| anyhow::anyhow!("--cold drops the kernel's page cache, which needs root: {e}"))
}

fn empty(dir: &Path) -> StoreError {
    store_corrupt(dir, "the state dir is empty".to_owned())
}

fn store_corrupt(dir: &Path, detail: String) -> StoreError {
    StoreError::Corrupt {
        path: dir.display().to_string(),
        detail,
    }
}
