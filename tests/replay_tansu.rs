//! `streamrec replay` and `backfill` against a real broker process (Tansu), with real `streamrec`
//! processes: a replay rebuilds exactly the state a live run built, never moves the live group,
//! starts and stops at times, and hands over to `streamrec run` with no gap and no overlap; a
//! SIGTERM-stopped run restarted after more events continues exactly; backfill from a file and
//! replay of the same file from a topic agree.
//!
//! `#[ignore]`d like the other broker tests; `.ci/run` runs them with `--include-ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tansu::{
    applied, produce_file_with, produced, run_to_end, state_config, state_digest, streamrec, Broker,
};
use common::{committed, dataset, ends_by_reading, read_topic, unique};

/// What `streamrec replay` printed.
#[derive(Debug)]
struct Replayed {
    applied: u64,
    started: String,
    ended: String,
    digest: String,
}

fn replay(config: &Path, state_dir: &Path, args: &[&str]) -> Replayed {
    let out = streamrec()
        .args(["replay", "--quiet", "--config", config.to_str().unwrap()])
        .args(["--state-dir", state_dir.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
            .trim()
            .to_owned()
    };
    let counts = line("replayed ");
    let applied = counts
        .split(": ")
        .nth(1)
        .and_then(|c| c.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no applied count in {counts}"));
    Replayed {
        applied,
        started: line("started at:"),
        ended: line("state ends at:"),
        digest: line("state:").rsplit(' ').next().unwrap().to_owned(),
    }
}

/// The Taobao rows in time order, split at `share`: two files to load one after the other.
fn split_by_time(path: &Path, dir: &Path, share: f64) -> (PathBuf, PathBuf) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut rows: Vec<(i64, &str)> = text
        .lines()
        .filter_map(|line| {
            let ts = line.split(',').nth(4)?.trim().parse().ok()?;
            Some((ts, line))
        })
        .collect();
    rows.sort_by_key(|(ts, _)| *ts);
    let cut = (rows.len() as f64 * share) as usize;
    let write = |name: &str, rows: &[(i64, &str)]| {
        let file = dir.join(name);
        let body: Vec<&str> = rows.iter().map(|(_, line)| *line).collect();
        std::fs::write(&file, body.join("\n") + "\n").unwrap();
        file
    };
    (
        write("first.csv", &rows[..cut]),
        write("second.csv", &rows[cut..]),
    )
}

fn now_rfc3339() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%3NZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn create_outputs(broker: &Broker, name: &str) {
    for suffix in ["recs", "similar", "dead"] {
        broker.create_topic_with(&format!("{name}-{suffix}"), 1);
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn replays_rebuild_live_state_and_hand_over_to_run_without_gap_or_overlap() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // One partition: a live run then applies events in the same order as a replay.
    let input = unique("shop");
    broker.create_topic_with(&input, 1);
    let (first, second) = split_by_time(&path, dir.path(), 0.6);
    let group = unique("live");
    let live = state_config(dir.path(), &broker, "live", &input, &group);
    create_outputs(&broker, "live");

    // Live: the first batch, SIGTERM; the second batch, restart. Each event applied once.
    let first_count = produced(&produce_file_with(
        &broker.address,
        &input,
        &first,
        "taobao",
        Some(&live),
    ));
    let first_end = ends_by_reading(&broker.address, &input, 1, first_count)[0];
    let applied_first = applied(&run_to_end(&broker, &live, &group, &input, first_end));
    std::thread::sleep(Duration::from_millis(1100));
    let between = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    let second_count = produced(&produce_file_with(
        &broker.address,
        &input,
        &second,
        "taobao",
        Some(&live),
    ));
    let end = ends_by_reading(&broker.address, &input, 1, first_count + second_count)[0];
    let applied_second = applied(&run_to_end(&broker, &live, &group, &input, end));
    let live_digest = state_digest(&live);

    // From earliest: the live state exactly, and the live group's commits untouched.
    let commits_before = committed(&broker.address, &group, &input, 1);
    let full = replay(&live, &dir.path().join("full"), &[]);
    assert_eq!(full.digest, live_digest, "replay differs from the live run");
    assert_eq!(full.applied, applied_first + applied_second);
    assert_eq!(
        committed(&broker.address, &group, &input, 1),
        commits_before
    );
    let replay_group = format!("{group}.replay");
    assert_eq!(
        committed(&broker.address, &replay_group, &input, 1),
        [-1001]
    );

    // A time splits the topic where the batches meet, from either side.
    let head = replay(&live, &dir.path().join("head-state"), &["--to", &between]);
    assert_eq!(head.ended, format!("{input}/0@{first_end}"));
    assert_eq!(head.applied, applied_first);
    let tail = replay(&live, &dir.path().join("tail"), &["--from", &between]);
    assert_eq!(tail.started, format!("{input}/0@{first_end}"));
    assert_eq!(tail.applied, applied_second);
    let from_offset = format!("0:{first_end}");
    let tail = replay(&live, &dir.path().join("tail2"), &["--from", &from_offset]);
    assert_eq!(tail.started, format!("{input}/0@{first_end}"));
    assert_eq!(tail.applied, applied_second);

    // `run` on the head state continues with exactly the second batch.
    let handover_group = unique("handover");
    let handover = state_config(dir.path(), &broker, "head", &input, &handover_group);
    create_outputs(&broker, "head");
    let applied_after = applied(&run_to_end(
        &broker,
        &handover,
        &handover_group,
        &input,
        end,
    ));
    assert_eq!(
        applied_after, applied_second,
        "gap or overlap at the handover"
    );
    assert_eq!(state_digest(&handover), live_digest);

    // Shadow outputs go to suffixed topics; the live topics get nothing.
    let live_recs = read_topic(
        &broker.address,
        "live-recs",
        1,
        usize::MAX,
        Duration::from_secs(3),
    )
    .len();
    replay(
        &live,
        &dir.path().join("shadow"),
        &["--output", "shadow", "--shadow-suffix", ".shadow"],
    );
    let shadow = read_topic(
        &broker.address,
        "live-recs.shadow",
        1,
        usize::MAX,
        Duration::from_secs(3),
    );
    assert!(!shadow.is_empty(), "no shadow recommendations");
    assert_eq!(
        shadow[0].json()["schema"],
        "streamrec.recommendations.v1",
        "{:?}",
        shadow[0]
    );
    let after = read_topic(
        &broker.address,
        "live-recs",
        1,
        usize::MAX,
        Duration::from_secs(3),
    );
    assert_eq!(
        after.len(),
        live_recs,
        "a shadow replay wrote to a live topic"
    );
    for name in ["live", "head", "live-recs.shadow"] {
        if name.contains('.') {
            let topics = [(name, common::schemas::Output::Recommendations)];
            assert!(common::schemas::validate_topics(&broker.address, &topics) > 0);
        } else {
            assert!(common::schemas::validate_named(&broker.address, name) > 0);
        }
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn backfill_from_a_file_and_replay_of_it_from_a_topic_agree() {
    let Some(path) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("ratings");
    broker.create_topic_with(&input, 1);
    let config = state_config(dir.path(), &broker, "ml", &input, &unique("ml"));
    let text = std::fs::read_to_string(&config).unwrap();
    let text = format!("[engine.clean]\nmin_ts_ms = 0  # MovieLens starts in 1996\n{text}");
    std::fs::write(&config, text).unwrap();
    let count = produced(&produce_file_with(
        &broker.address,
        &input,
        &path,
        "movielens-csv",
        Some(&config),
    ));
    let replayed = replay(&config, &dir.path().join("replayed"), &[]);
    assert_eq!(replayed.applied as usize, count, "every rating of the file");
    // --max-rate holds a replay down (an upper bound on speed, so a lower bound on time).
    let rate = 40_000;
    let started = std::time::Instant::now();
    let paced = replay(
        &config,
        &dir.path().join("paced"),
        &["--max-rate", &rate.to_string()],
    );
    let floor = Duration::from_secs_f64(0.9 * count as f64 / rate as f64);
    assert!(
        started.elapsed() >= floor,
        "{:?} < {floor:?}",
        started.elapsed()
    );
    assert_eq!(paced.digest, replayed.digest);

    let backfilled = dir.path().join("backfilled");
    let out = streamrec()
        .args(["backfill", "--format", "movielens-csv"])
        .args(["--input", path.to_str().unwrap()])
        .args(["--state-dir", backfilled.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("digest: "))
        .unwrap();
    assert_eq!(digest, replayed.digest);
}
