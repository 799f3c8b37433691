//! A shutdown the brokers cannot answer: `run` fed on the real broker through a TCP proxy the
//! test cuts (see `common::proxy`), then stopped. The process must exit by
//! `pipeline.shutdown_limit_ms` and say so, or at once on a second signal, instead of waiting
//! for the orchestrator's SIGKILL. `#[ignore]`d without a broker; `.ci/run` runs it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::tansu::{free_port, streamrec, strip_ansi, Broker};

const DRAIN_MS: u64 = 2_000;
const LIMIT_MS: u64 = 3_000;

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_shutdown_the_brokers_cannot_answer_ends_by_the_limit() {
    let mut cut_off = CutOff::start();
    cut_off.signal("-TERM");
    let (status, after) = cut_off.wait_for_exit();
    assert!(
        after < Duration::from_millis(LIMIT_MS + 1_500),
        "exited {after:?} after SIGTERM, limit {LIMIT_MS} ms"
    );
    assert_eq!(status, Some(75), "a shutdown cut short may be retried");
    cut_off.assert_logged("shutdown not done within pipeline.shutdown_limit_ms");
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn a_second_signal_exits_at_once() {
    let mut cut_off = CutOff::start();
    cut_off.signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    cut_off.signal("-INT");
    let (status, after) = cut_off.wait_for_exit();
    assert!(
        after < Duration::from_millis(1_500),
        "exited {after:?} after the second signal"
    );
    assert_eq!(status, Some(75));
    cut_off.assert_logged("a second signal: exiting now");
}

/// A `run` that consumed a stream still being produced, cut off from its broker: its drain
/// cannot be acknowledged and its group cannot be left.
struct CutOff {
    child: Child,
    log: PathBuf,
    _proxy: Proxy,
    _broker: Broker,
    _producer: Killed,
    _dir: tempfile::TempDir,
}

impl CutOff {
    fn start() -> CutOff {
        let port = free_port();
        let proxy = Proxy::start(format!("127.0.0.1:{port}"));
        let broker = Broker::start_advertising(port, proxy.port);
        let dir = tempfile::tempdir().unwrap();
        let input = common::unique("events");
        for topic in ["", "-recs", "-similar", "-dead", "-triggers"] {
            broker.create_topic(&format!("{input}{topic}"));
        }
        let producer = Killed(produce_steadily(&broker, &input, dir.path()));
        let config = write_config(dir.path(), &proxy.address(), &input);
        let log = dir.path().join("run.log");
        let child = streamrec()
            .args(["run", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let group = format!("{input}-group");
        common::wait_until("commits", Duration::from_secs(60), || {
            common::committed(&broker.address, &group, &input, 3)
                .iter()
                .sum::<i64>()
                >= 500
        });
        proxy.cut();
        CutOff {
            child,
            log,
            _proxy: proxy,
            _broker: broker,
            _producer: producer,
            _dir: dir,
        }
    }

    fn signal(&self, which: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([which, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// The exit code and how long after the last signal it came (killed after 60 s).
    fn wait_for_exit(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("no exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_logged(&self, text: &str) {
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(
            log.lines().any(|line| strip_ansi(line).contains(text)),
            "no {text:?} in the log:\n{log}"
        );
    }
}

/// Events at 3,000/s straight to the broker: updates are owed when the cut comes.
fn produce_steadily(broker: &Broker, input: &str, dir: &Path) -> Child {
    let events: String = (0..60_000)
        .map(|i| {
            let (user, item, ts) = (i % 97, i % 211, 1_700_000_000_000i64 + i * 1000);
            format!(r#"{{"event_id":"e{i}","type":"view","user_id":"u{user}","item_id":"i{item}","ts":{ts}}}"#) + "\n"
        })
        .collect();
    let file = dir.join("events.jsonl");
    std::fs::write(&file, events).unwrap();
    streamrec()
        .args([
            "produce",
            "--input",
            file.to_str().unwrap(),
            "--format",
            "jsonl",
        ])
        .args(["--brokers", &broker.address, "--topic", input, "--quiet"])
        .args(["--rate", "3000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn write_config(dir: &Path, brokers: &str, input: &str) -> PathBuf {
    let config = format!(
        r#"
[kafka]
brokers = "{brokers}"
group_id = "{input}-group"
input_topics = ["{input}"]
recommendations_topic = "{input}-recs"
similar_items_topic = "{input}-similar"
dead_letter_topic = "{input}-dead"
triggers_topic = "{input}-triggers"
session_timeout_ms = 6000
[pipeline]
drain_timeout_ms = {DRAIN_MS}
shutdown_limit_ms = {LIMIT_MS}
[state]
dir = "{}"
"#,
        dir.join("state").display()
    );
    let path = dir.join("run.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
