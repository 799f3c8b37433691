//! Scale-out on a real broker (Tansu): `streamrec run` processes in one group on a 6-partition
//! input loaded with the Taobao sample, sharing the item model through `model-updates` and user
//! state through the changelog, each member with two durable workers. One member is killed with SIGKILL mid-stream and another joins
//! later with an empty state dir; at the end every partition's user state (profiles, attributes,
//! positions: what only a user's own events decide) has the same digest as a single instance's,
//! so every event was applied exactly once to its user, and every user got recommendations.
//!
//! `#[ignore]`d like the other broker tests; `.ci/run` runs them with `--include-ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use streamrec::engine::PortableUser;

use common::tansu::{
    produced, start_logged, streamrec, terminate, wait_for_any_line, wait_for_line, Broker,
};
use common::{committed, dataset, ends_by_reading, read_topic, unique};

const PARTITIONS: i32 = 6;
/// Complete rows of the Taobao sample (its last line is cut short).
const SAMPLE_ROWS: i64 = 84_475;

/// One deployment: its topics and group on the shared broker.
struct Deployment {
    name: String,
    input: String,
    group: String,
    /// Pipeline workers per member.
    workers: usize,
}

impl Deployment {
    fn new(broker: &Broker, input: &str, name: &str, workers: usize) -> Deployment {
        let deployment = Deployment {
            name: name.to_owned(),
            input: input.to_owned(),
            group: unique(name),
            workers,
        };
        for topic in deployment.internal_topics() {
            broker.create_topic_with(&topic, PARTITIONS);
        }
        for suffix in ["recs", "similar", "dead", "triggers"] {
            broker.create_topic_with(&format!("{name}-{suffix}"), 1);
        }
        deployment
    }

    fn internal_topics(&self) -> [String; 2] {
        [
            format!("{}-changelog", self.name),
            format!("{}-model-updates", self.name),
        ]
    }

    /// Writes member `member`'s config (its own state dir); returns its path.
    fn config(&self, dir: &Path, broker: &Broker, member: &str) -> PathBuf {
        let name = &self.name;
        let state = dir.join(format!("{name}-{member}-state"));
        let text = format!(
            r#"
[engine.dedup]
max_entries = 1  # so that only positions, not dedup, can prevent applying twice
[kafka]
brokers = "{brokers}"
group_id = "{group}"
input_topics = ["{input}"]
recommendations_topic = "{name}-recs"
similar_items_topic = "{name}-similar"
dead_letter_topic = "{name}-dead"
triggers_topic = "{name}-triggers"
changelog_topic = "{name}-changelog"
model_updates_topic = "{name}-model-updates"
instance_id = "{member}"
session_timeout_ms = 6000
[pipeline]
min_update_interval_ms = 300
workers = {workers}
[state]
dir = "{state}"
checkpoint_interval_ms = 300
checkpoint_max_events = 4000
"#,
            brokers = broker.address,
            group = self.group,
            input = self.input,
            state = state.display(),
            workers = self.workers,
        );
        let path = dir.join(format!("{name}-{member}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn committed(&self, broker: &Broker) -> Vec<i64> {
        committed(&broker.address, &self.group, &self.input, PARTITIONS)
    }

    fn wait_for_commits(&self, broker: &Broker, reached: impl Fn(&[i64]) -> bool, what: &str) {
        let started = Instant::now();
        loop {
            let now = self.committed(broker);
            if reached(&now) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "{what}: commits stand at {now:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// What a member logs when it took a partition's users from the changelog.
const RESTORED_LINE: &str = "partition restored from the changelog";

/// Per changelog partition: a digest of the latest record of every user, over what only the
/// user's own events decide (not the factors, which depend on the item vectors other users
/// shaped), and the users.
fn changelog_digests(brokers: &str, topic: &str) -> (Vec<String>, BTreeSet<String>) {
    let mut digests = Vec::new();
    let mut all = BTreeSet::new();
    for partition in 0..PARTITIONS {
        let latest = read_changelog_partition(brokers, topic, partition);
        let mut users: Vec<(&String, &Vec<u8>)> = latest.iter().collect();
        users.sort();
        let mut parts: Vec<u8> = Vec::new();
        for (user, bytes) in users {
            let state = PortableUser::decode(bytes, user).unwrap();
            parts.extend_from_slice(user.as_bytes());
            parts.push(0);
            parts.extend_from_slice(&state.own_state_bytes());
            all.insert(user.clone());
        }
        digests.push(format!("{:016x}", fxhash(&parts)));
    }
    (digests, all)
}

fn fxhash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The latest user record per user id in one changelog partition.
fn read_changelog_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
) -> HashMap<String, Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("digest"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut latest = HashMap::new();
    loop {
        let message = match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(message)) => message,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            other => panic!("reading {topic}/{partition}: {other:?}"),
        };
        let is_user = message.headers().is_some_and(|h| {
            h.iter()
                .any(|h| h.key == "streamrec-changelog" && h.value == Some(b"user".as_slice()))
        });
        if is_user {
            let user = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
            latest.insert(user, message.payload().unwrap().to_vec());
        }
    }
    latest
}

fn produce(broker: &Broker, input: &str, path: &Path, rate: u64) -> Vec<i64> {
    let out = streamrec()
        .args(["produce", "--format", "taobao", "--quiet"])
        .args(["--input", path.to_str().unwrap()])
        .args(["--brokers", &broker.address, "--topic", input])
        .args(["--rate", &rate.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    ends_by_reading(&broker.address, input, PARTITIONS, produced(&report))
}

/// Users of the input (keys), as the recommendations topic must cover them.
fn keys(broker: &Broker, topic: &str, partitions: i32, quiet: Duration) -> BTreeSet<String> {
    read_topic(&broker.address, topic, partitions, usize::MAX, quiet)
        .into_iter()
        .map(|r| r.key)
        .collect()
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn members_killed_and_joining_mid_stream_apply_every_event_once_per_user() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("shop");
    broker.create_topic_with(&input, PARTITIONS);
    // The scaled members checkpoint two workers each (in rounds, partitions handed over
    // between workers' owners); the reference is one worker in one instance.
    let scaled = Deployment::new(&broker, &input, "scaled", 2);
    let single = Deployment::new(&broker, &input, "single", 1);
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    let mut members: BTreeMap<&str, Child> = ["a", "b", "c"]
        .into_iter()
        .map(|m| {
            (
                m,
                start_logged(&scaled.config(dir.path(), &broker, m), &log(m)),
            )
        })
        .collect();
    for m in ["a", "b", "c"] {
        wait_for_line(&log(m), "partition assignment changed partitions=2");
    }
    // A steady stream (about 17 s). b is killed a third of the way through; a and c take its
    // partitions over once the group notices (the session timeout); d joins after that.
    let ends = std::thread::scope(|scope| {
        let producing = scope.spawn(|| produce(&broker, &input, &path, 5_000));
        scaled.wait_for_commits(
            &broker,
            |c| c.iter().map(|o| (*o).max(0)).sum::<i64>() > SAMPLE_ROWS / 3,
            "a third of the stream",
        );
        let mut killed = members.remove("b").unwrap();
        killed.kill().unwrap(); // SIGKILL: no checkpoint, no commit, no leave
        killed.wait().unwrap();
        let taken_over = RESTORED_LINE;
        wait_for_any_line(&[log("a"), log("c")], taken_over);
        members.insert(
            "d",
            start_logged(&scaled.config(dir.path(), &broker, "d"), &log("d")),
        );
        wait_for_line(&log("d"), RESTORED_LINE);
        producing.join().unwrap()
    });
    scaled.wait_for_commits(&broker, |c| c == ends.as_slice(), "the end");
    for (_, member) in members {
        terminate(member);
    }

    // The reference: one instance over the same input.
    let alone = start_logged(&single.config(dir.path(), &broker, "alone"), &log("alone"));
    single.wait_for_commits(
        &broker,
        |c| c == ends.as_slice(),
        "the single instance's end",
    );
    terminate(alone);

    let (scaled_digests, scaled_users) =
        changelog_digests(&broker.address, &scaled.internal_topics()[0]);
    let (single_digests, single_users) =
        changelog_digests(&broker.address, &single.internal_topics()[0]);
    assert_eq!(
        scaled_users.len(),
        815,
        "every user of the sample has state"
    );
    assert_eq!(scaled_users, single_users);
    assert_eq!(
        scaled_digests, single_digests,
        "per-partition digests of user state: scaled out (with a kill and a join) vs one instance"
    );
    let recommended = keys(&broker, "scaled-recs", 1, Duration::from_secs(5));
    assert_eq!(
        recommended, scaled_users,
        "every user received recommendations"
    );
    for name in ["scaled", "single"] {
        assert!(common::schemas::validate_named(&broker.address, name) > 0);
    }
}
