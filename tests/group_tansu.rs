//! Two `streamrec run` processes in one consumer group on a 6-partition topic (Tansu), each with
//! its own state dir. A member stopped with SIGTERM mid-stream hands its partitions over from
//! where its last checkpoint and commit left them; a member joining mid-stream takes partitions
//! the other one checkpoints and commits as they are revoked. Every event is applied exactly
//! once across the two (counted, with dedup cut to one entry so only offsets can prevent double
//! application).
//!
//! `#[ignore]`d like the other broker tests; `.ci/run` runs them with `--include-ignored`.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::tansu::{
    applied, produced, start_logged, state_config, streamrec, strip_ansi, terminate, Broker,
};
use common::{committed, dataset, ends_by_reading, unique};

const PARTITIONS: i32 = 6;

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

/// Two members' configs on a fresh 6-partition topic.
struct Pair {
    broker: Broker,
    dir: tempfile::TempDir,
    input: String,
    group: String,
}

impl Pair {
    fn new() -> Pair {
        let broker = Broker::start();
        let dir = tempfile::tempdir().unwrap();
        let input = unique("shop");
        broker.create_topic_with(&input, PARTITIONS);
        for name in ["first", "second"] {
            for suffix in ["recs", "similar", "dead"] {
                broker.create_topic_with(&format!("{name}-{suffix}"), 1);
            }
        }
        Pair {
            broker,
            dir,
            input,
            group: unique("pair"),
        }
    }

    /// Starts member `name`; returns it and its log.
    fn start(&self, name: &str) -> (Child, std::path::PathBuf) {
        let config = state_config(
            self.dir.path(),
            &self.broker,
            name,
            &self.input,
            &self.group,
        );
        let log = self.dir.path().join(format!("{name}.log"));
        (start_logged(&config, &log), log)
    }

    /// Loads the Taobao sample (at `rate` events/s if given); returns the end offset of each
    /// partition.
    fn produce(&self, path: &Path, rate: Option<u64>) -> Vec<i64> {
        let mut command = streamrec();
        command
            .args(["produce", "--format", "taobao", "--quiet"])
            .args(["--input", path.to_str().unwrap()])
            .args(["--brokers", &self.broker.address, "--topic", &self.input]);
        if let Some(rate) = rate {
            command.args(["--rate", &rate.to_string()]);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = String::from_utf8(out.stdout).unwrap();
        ends_by_reading(
            &self.broker.address,
            &self.input,
            PARTITIONS,
            produced(&report),
        )
    }

    fn committed(&self) -> Vec<i64> {
        committed(&self.broker.address, &self.group, &self.input, PARTITIONS)
    }

    fn wait_for_progress(&self, share: f64, ends: &[i64]) {
        let total: i64 = ends.iter().sum();
        let started = Instant::now();
        while (self.committed().iter().map(|c| (*c).max(0)).sum::<i64>() as f64)
            < total as f64 * share
        {
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_end(&self, ends: &[i64]) {
        let started = Instant::now();
        while self.committed() != ends {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "not finished: {:?} of {ends:?}",
                self.committed()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_member_stopped_mid_stream_hands_its_partitions_over_without_loss_or_repeat() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let pair = Pair::new();
    let (first, first_log) = pair.start("first");
    wait_for_assignment(&first_log, PARTITIONS as usize);
    let (second, second_log) = pair.start("second");
    wait_for_assignment(&second_log, 3);
    wait_for_assignment(&first_log, 3);

    // Events arrive once both members hold their halves.
    let ends = pair.produce(&path, None);
    pair.wait_for_progress(0.25, &ends);
    let applied_first = applied(&terminate(first));
    pair.wait_for_end(&ends);
    let applied_second = applied(&terminate(second));
    assert!(applied_first > 0 && applied_second > 0);
    assert_eq!(
        applied_first + applied_second,
        ends.iter().sum::<i64>() as u64,
        "events lost or applied twice across the hand-over (first {applied_first}, second {applied_second})"
    );
    for name in ["first", "second"] {
        common::schemas::validate_named(&pair.broker.address, name);
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_member_joining_mid_stream_takes_partitions_without_loss_or_repeat() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let pair = Pair::new();
    let (first, first_log) = pair.start("first");
    wait_for_assignment(&first_log, PARTITIONS as usize);
    // A steady stream (about 8 s) that the first member follows; the second joins after ~2 s.
    let ends = std::thread::scope(|scope| {
        let producing = scope.spawn(|| pair.produce(&path, Some(10_000)));
        std::thread::sleep(Duration::from_secs(2));
        let joined = pair.start("second");
        (producing.join().unwrap(), joined)
    });
    let (ends, (second, second_log)) = ends;
    wait_for_assignment(&second_log, 3);
    pair.wait_for_end(&ends);
    let applied_first = applied(&terminate(first));
    let applied_second = applied(&terminate(second));
    assert!(applied_second > 0, "the new member got nothing to do");
    assert_eq!(
        applied_first + applied_second,
        ends.iter().sum::<i64>() as u64,
        "events lost or applied twice across the rebalance (first {applied_first}, second {applied_second})"
    );
    for name in ["first", "second"] {
        common::schemas::validate_named(&pair.broker.address, name);
    }
}
