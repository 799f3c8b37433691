//! A durable `run` with two workers on a real broker (Tansu): the Taobao sample on a
//! 3-partition input survives SIGKILLs at several points, and the state it ends with has the
//! same user-side digest as a crash-free two-worker run's and a one-worker run's: every event
//! applied exactly once to its user, whichever worker applied it. (The shared item model's
//! factors and counts depend on how the workers interleave, so they differ between any two
//! multi-worker runs, crash or not; the engine's property tests check that each checkpoint
//! round is a consistent cut of it.)
//!
//! `#[ignore]`d like the other broker tests; `.ci/run` runs them with `--include-ignored`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use streamrec::config::Config;
use streamrec::engine::Engine;
use streamrec::store::StateStore;

use common::tansu::{produce_file, run_log_tail, run_to_ends, start_run, state_config, Broker};
use common::{committed, dataset, ends_by_reading, unique};

const PARTITIONS: i32 = 3;
/// Complete rows of the Taobao sample (its last line is cut short).
const SAMPLE_ROWS: usize = 84_475;

/// `state_config` with `workers` pipeline workers.
fn workers_config(
    dir: &Path,
    broker: &Broker,
    name: &str,
    input: &str,
    workers: usize,
) -> std::path::PathBuf {
    let path = state_config(dir, broker, name, input, &group(name));
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace(
        "[pipeline]\n",
        &format!("[pipeline]\nworkers = {workers}\n"),
    );
    std::fs::write(&path, text).unwrap();
    for suffix in ["recs", "similar", "dead"] {
        broker.create_topic_with(&format!("{name}-{suffix}"), 1);
    }
    path
}

/// The consumer group of a config `workers_config` wrote.
fn group(name: &str) -> String {
    format!("{name}-group")
}

/// The user-side digest of the state dir a config names (see `Engine::own_state_digest`).
fn own_digest(config: &Path) -> String {
    let config = Config::load(config).unwrap();
    let store = StateStore::open(Path::new(&config.state.dir), false).unwrap();
    let stored = store.read().unwrap().expect("a checkpointed state");
    assert_eq!(stored.records.shards.len(), config.pipeline.workers);
    let engine = Engine::from_records(config.engine, &stored.records).unwrap();
    engine.own_state_digest()
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn two_durable_workers_survive_sigkill_with_every_event_applied_once() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("taobao");
    broker.create_topic_with(&input, PARTITIONS);
    produce_file(&broker.address, &input, &path, "taobao");
    let ends = ends_by_reading(&broker.address, &input, PARTITIONS, SAMPLE_ROWS);
    let total: i64 = ends.iter().sum();

    let crashy = workers_config(dir.path(), &broker, "crashy", &input, 2);
    let mut kills = 0;
    for (fraction, extra_ms) in [(0.0, 300u64), (0.2, 0), (0.45, 90), (0.7, 40)] {
        let mut child = start_run(&crashy);
        let target = (total as f64 * fraction) as i64;
        let started = Instant::now();
        let progress = || -> i64 {
            committed(&broker.address, &group("crashy"), &input, PARTITIONS)
                .iter()
                .map(|&c| c.max(0))
                .sum()
        };
        while target > 0 && progress() < target {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no progress to {target}; the log ends:\n{}",
                run_log_tail(&crashy)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert_eq!(kills, 4);
    run_to_ends(&broker, &crashy, &group("crashy"), &input, &ends);

    let calm = workers_config(dir.path(), &broker, "calm", &input, 2);
    run_to_ends(&broker, &calm, &group("calm"), &input, &ends);
    let single = workers_config(dir.path(), &broker, "single", &input, 1);
    run_to_ends(&broker, &single, &group("single"), &input, &ends);

    let expected = own_digest(&single);
    assert_eq!(own_digest(&calm), expected, "two workers differ from one");
    assert_eq!(own_digest(&crashy), expected, "crashes changed the users");
}
