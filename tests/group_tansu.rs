//! Two `streamrec run` processes in one consumer group on a 6-partition topic (Tansu), each with
//! its own state dir: one is stopped with SIGTERM mid-stream, the other takes over its
//! partitions from where the stopped one's last checkpoint and commit left them. Every event is
//! applied exactly once across the two (counted, with dedup cut to one entry so only offsets
//! can prevent double application).
//!
//! `#[ignore]`d like the other broker tests; `.ci/run` runs them with `--include-ignored`.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::tansu::{produce_file, state_config, streamrec, terminate, Broker};
use common::{committed, dataset, ends_by_reading, unique};

const PARTITIONS: i32 = 6;

/// `streamrec run` with its log in `log` (to see its assignments).
fn start_logged(config: &Path, log: &Path) -> Child {
    streamrec()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until the member logging to `log` holds `partitions` partitions.
fn wait_for_assignment(log: &Path, partitions: usize) {
    let wanted = format!("partitions={partitions}");
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let last = text
            .lines()
            .rfind(|l| l.contains("partition assignment changed"))
            .unwrap_or("");
        if strip_ansi(last).contains(&wanted) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no assignment of {partitions} partitions in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn applied(printed: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|e| panic!("run printed {printed:?}: {e}"));
    stats["applied"].as_u64().unwrap()
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_member_stopped_mid_stream_hands_its_partitions_over_without_loss_or_repeat() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("shop");
    broker.create_topic_with(&input, PARTITIONS);
    let group = unique("pair");
    let first = state_config(dir.path(), &broker, "first", &input, &group);
    let second = state_config(dir.path(), &broker, "second", &input, &group);
    for name in ["first", "second"] {
        for suffix in ["recs", "similar", "dead"] {
            broker.create_topic_with(&format!("{name}-{suffix}"), 1);
        }
    }
    let (first_log, second_log) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let first_run = start_logged(&first, &first_log);
    wait_for_assignment(&first_log, PARTITIONS as usize);
    let second_run = start_logged(&second, &second_log);
    wait_for_assignment(&second_log, 3);
    wait_for_assignment(&first_log, 3);

    // Events arrive once both members hold their halves.
    let report = produce_file(&broker.address, &input, &path, "taobao");
    let produced: usize = report
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {report}"));
    let ends = ends_by_reading(&broker.address, &input, PARTITIONS, produced);
    let total: i64 = ends.iter().sum();
    let started = Instant::now();
    while committed(&broker.address, &group, &input, PARTITIONS)
        .iter()
        .map(|c| (*c).max(0))
        .sum::<i64>()
        < total / 4
    {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let applied_first = applied(&terminate(first_run));

    let started = Instant::now();
    while committed(&broker.address, &group, &input, PARTITIONS) != ends {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the remaining member did not finish: {:?} of {ends:?}",
            committed(&broker.address, &group, &input, PARTITIONS)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let applied_second = applied(&terminate(second_run));
    assert!(applied_first > 0 && applied_second > 0);
    assert_eq!(
        applied_first + applied_second,
        total as u64,
        "events lost or applied twice across the hand-over (first {applied_first}, second {applied_second})"
    );
}
