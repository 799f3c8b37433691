//! Scale-out on a real broker (Tansu): `streamrec run` processes in one group on a 6-partition
//! input loaded with the Taobao sample, sharing user state through the changelog, each member
//! with two durable workers, and the item side through `model-updates` (replicated) or through
//! item ownership (`[items]`). One member is killed with SIGKILL mid-stream and another joins
//! later with an empty state dir; at the end every partition's user state (profiles,
//! attributes, positions: what only a user's own events decide) has the same digest as a single
//! instance's, so every event was applied exactly once to its user, and every user got
//! recommendations. Item-owned, every item's learned marginals are also a single instance's.
//!
//! `#[ignore]`d like the other broker tests; `.ci/run` runs them with `--include-ignored`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use streamrec::engine::PortableUser;

use common::moving::changelog_users;
use common::tansu::{
    free_port, produced, start_logged, streamrec, strip_ansi, terminate_logged, wait_for_any_line,
    wait_for_line, Broker,
};
use common::{committed, dataset, ends_by_reading, read_records, read_topic, unique};

const PARTITIONS: i32 = 6;
/// Complete rows of the Taobao sample (its last line is cut short).
const SAMPLE_ROWS: i64 = 84_475;

/// How a deployment shares the item side.
#[derive(Clone, Copy, PartialEq)]
enum Items {
    /// `model-updates`: every member learns all of it.
    Replicated,
    /// `[items]`: item partitions owned through the work and records topics.
    Owned,
}

/// One deployment: its topics and group on the shared broker.
struct Deployment {
    name: String,
    input: String,
    group: String,
    /// Pipeline workers per member.
    workers: usize,
    items: Items,
}

impl Deployment {
    fn new(
        broker: &Broker,
        input: &str,
        name: &str,
        (workers, items): (usize, Items),
    ) -> Deployment {
        let deployment = Deployment {
            name: name.to_owned(),
            input: input.to_owned(),
            group: unique(name),
            workers,
            items,
        };
        for topic in deployment.internal_topics() {
            broker.create_topic_with(&topic, PARTITIONS);
        }
        for suffix in ["recs", "similar", "dead", "triggers"] {
            broker.create_topic_with(&format!("{name}-{suffix}"), 1);
        }
        deployment
    }

    /// The changelog first, then the item side's topics.
    fn internal_topics(&self) -> Vec<String> {
        let name = &self.name;
        let items = match self.items {
            Items::Replicated => vec![format!("{name}-model-updates")],
            Items::Owned => vec![
                format!("{name}-item-work"),
                self.records_topic(),
                format!("{name}-item-checkpoints"),
            ],
        };
        [vec![format!("{name}-changelog")], items].concat()
    }

    fn records_topic(&self) -> String {
        format!("{}-item-records", self.name)
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
instance_id = "{member}"
session_timeout_ms = 6000
{items}
[pipeline]
min_update_interval_ms = 300
workers = {workers}
[state]
dir = "{state}"
checkpoint_interval_ms = {checkpoint_ms}
checkpoint_max_events = 40000
"#,
            brokers = broker.address,
            group = self.group,
            input = self.input,
            state = state.display(),
            workers = self.workers,
            // Item-owned: seconds between checkpoints, so that a kill leaves work delivered for
            // inputs the next owner of their partition reads again.
            checkpoint_ms = match self.items {
                Items::Replicated => 300,
                Items::Owned => 3000,
            },
            items = match self.items {
                Items::Replicated => format!("model_updates_topic = \"{name}-model-updates\""),
                Items::Owned => String::new(),
            },
        );
        let text = match self.items {
            Items::Replicated => text,
            // Every change published: each item's last view is exact.
            // Each member's /metrics shows its owners' lag.
            Items::Owned => text + &format!(
                "[items]\nwork_topic = \"{name}-item-work\"\nrecords_topic = \"{}\"\nchangelog_topic = \"{name}-item-checkpoints\"\ncheckpoint_interval_ms = 3000\nsignificance = 0.0\npublish_interval_ms = 300\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
                self.records_topic(),
                free_port()
            ),
        };
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

/// The admin address a member's config names.
fn admin_of(config: &Path) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap();
    listen.trim_matches('"').to_owned()
}

/// A member's metric (0 when absent); None while it does not answer.
fn metric(config: &Path, name: &str) -> Option<u64> {
    let (_, body) = common::http::get(&admin_of(config), "/metrics", None)?;
    let prefix = format!("{name} ");
    let line = body.lines().find(|l| l.starts_with(&prefix));
    Some(
        line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0),
    )
}

/// Waits until every item partition has an owner and every owner has applied all work (their
/// lag, measured each second, is 0 twice in a row: a partition between owners counts in no
/// one's lag), then for their last publication. Returns the inputs their owners skipped
/// because their work came again, and the item partitions they restored from a checkpoint.
fn wait_for_owners(configs: &[PathBuf]) -> (u64, u64) {
    let lag = |config: &PathBuf| metric(config, "streamrec_item_work_lag");
    let owned = |config: &PathBuf| metric(config, "streamrec_item_partitions_owned");
    let started = Instant::now();
    let mut done_before = false;
    loop {
        let lags: Vec<Option<u64>> = configs.iter().map(lag).collect();
        let held: u64 = configs.iter().filter_map(owned).sum();
        let done = lags.iter().all(|l| *l == Some(0)) && held == PARTITIONS as u64;
        if done && done_before {
            break;
        }
        done_before = done;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "owners' lag stays at {lags:?}, {held} of {PARTITIONS} item partitions owned"
        );
        std::thread::sleep(Duration::from_millis(1200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let sum = |name: &str| -> u64 { configs.iter().map(|c| metric(c, name).unwrap_or(0)).sum() };
    (
        sum("streamrec_item_work_inputs_skipped_total"),
        sum("streamrec_item_partition_restores_total{outcome=\"checkpoint\"}"),
    )
}

/// What a member logs when it took a partition's users from the changelog.
const RESTORED_LINE: &str = "partition restored from the changelog";

/// The dedup keys each logged restore took from the changelog.
fn dedup_keys_restored(logs: &[PathBuf]) -> Vec<u64> {
    let text: String = logs
        .iter()
        .map(|log| strip_ansi(&std::fs::read_to_string(log).unwrap_or_default()))
        .collect();
    let restores = text.lines().filter(|line| line.contains(RESTORED_LINE));
    let keys = restores.filter_map(|line| line.split("dedup_keys=").nth(1));
    keys.filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// Per changelog partition: the latest record of every user (by id).
type PartitionUsers = Vec<BTreeMap<String, PortableUser>>;

/// Per changelog partition: a digest of the latest record of every user, over what only the
/// user's own events decide (not the factors, which depend on the item vectors other users
/// shaped), and the users' records.
fn changelog_digests(brokers: &str, topic: &str) -> (Vec<String>, PartitionUsers) {
    let mut digests = Vec::new();
    let mut partitions = Vec::new();
    for partition in 0..PARTITIONS {
        let latest = changelog_users(brokers, topic, partition);
        let users: BTreeMap<String, PortableUser> = (latest.iter())
            .map(|(user, bytes)| (user.clone(), PortableUser::decode(bytes, user).unwrap()))
            .collect();
        let mut parts: Vec<u8> = Vec::new();
        for (user, state) in &users {
            parts.extend_from_slice(user.as_bytes());
            parts.push(0);
            parts.extend_from_slice(&state.own_state_bytes());
        }
        digests.push(format!("{:016x}", fxhash(&parts)));
        partitions.push(users);
    }
    (digests, partitions)
}

/// What differs between two deployments' user records, per partition, for a failure message:
/// the first few users whose own state differs, with both records' profile counts, last event
/// and position.
fn user_state_differences(scaled: &PartitionUsers, single: &PartitionUsers) -> Vec<String> {
    let brief = |user: Option<&PortableUser>| {
        user.map(|u| {
            let recent = u.profile.recent.len();
            let last = u.profile.last_seen_ms;
            format!(
                "counts {:?} recent {recent} last {last} at {:?}",
                u.profile.counts, u.position
            )
        })
    };
    let mut differences = Vec::new();
    for (partition, (a, b)) in scaled.iter().zip(single).enumerate() {
        let ids: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let differing = ids.into_iter().filter(|id| {
            a.get(*id).map(PortableUser::own_state_bytes)
                != b.get(*id).map(PortableUser::own_state_bytes)
        });
        for id in differing.take(5) {
            differences.push(format!(
                "partition {partition} user {id}: scaled {:?}, single {:?}",
                brief(a.get(id)),
                brief(b.get(id))
            ));
        }
    }
    differences
}

fn fxhash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
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

/// Each item's marginals, scaled out and on one instance, and the inputs the scaled-out
/// owners skipped because their work came again and the partitions they restored from a
/// checkpoint.
type Learned = (
    BTreeMap<String, (f32, f32)>,
    BTreeMap<String, (f32, f32)>,
    (u64, u64),
);

/// Three members (two workers each) over the Taobao sample at a steady rate: b is killed a
/// third of the way through, a and c take its partitions over, d joins after that; then one
/// instance (one worker) over the same input. Returns both deployments, finished, and
/// item-owned, each one's item marginals once its owners applied all work; None without the
/// data.
fn scaled_and_single(
    broker: &Broker,
    items: Items,
) -> Option<(Deployment, Deployment, Option<Learned>)> {
    let path = dataset("taobao-sample/UserBehavior.csv")?;
    let dir = tempfile::tempdir().unwrap();
    let input = unique("shop");
    broker.create_topic_with(&input, PARTITIONS);
    let scaled = Deployment::new(broker, &input, &unique("scaled"), (2, items));
    let single = Deployment::new(broker, &input, &unique("single"), (1, items));
    let log = |name: &str| dir.path().join(format!("{name}.log"));

    let mut members: BTreeMap<&str, Child> = ["a", "b", "c"]
        .into_iter()
        .map(|m| {
            (
                m,
                start_logged(&scaled.config(dir.path(), broker, m), &log(m)),
            )
        })
        .collect();
    for m in ["a", "b", "c"] {
        wait_for_line(&log(m), "partition assignment changed partitions=2");
    }
    // A steady stream (about 17 s). b is killed a third of the way through; a and c take its
    // partitions over once the group notices (the session timeout); d joins after that.
    let ends = std::thread::scope(|scope| {
        let producing = scope.spawn(|| produce(broker, &input, &path, 5_000));
        scaled.wait_for_commits(
            broker,
            |c| c.iter().map(|o| (*o).max(0)).sum::<i64>() > SAMPLE_ROWS / 3,
            "a third of the stream",
        );
        let mut killed = members.remove("b").unwrap();
        killed.kill().unwrap(); // SIGKILL: no checkpoint, no commit, no leave
        killed.wait().unwrap();
        wait_for_any_line(&[log("a"), log("c")], RESTORED_LINE);
        members.insert(
            "d",
            start_logged(&scaled.config(dir.path(), broker, "d"), &log("d")),
        );
        wait_for_line(&log("d"), RESTORED_LINE);
        producing.join().unwrap()
    });
    scaled.wait_for_commits(broker, |c| c == ends.as_slice(), "the end");
    let marginals = |deployment: &Deployment, members: &[&str]| {
        let configs: Vec<PathBuf> = (members.iter())
            .map(|m| dir.path().join(format!("{}-{m}.toml", deployment.name)))
            .collect();
        let owners = wait_for_owners(&configs);
        (settled_marginals(broker, deployment), owners)
    };
    let scaled_items = (items == Items::Owned).then(|| marginals(&scaled, &["a", "c", "d"]));
    for (name, member) in members {
        terminate_logged(member, &log(name));
    }
    let carried = dedup_keys_restored(&[log("a"), log("c"), log("d")]);
    assert!(
        carried.iter().any(|&keys| keys > 0),
        "the partitions moved with dedup keys through the broker: {carried:?}"
    );

    // The reference: one instance over the same input.
    let alone = start_logged(&single.config(dir.path(), broker, "alone"), &log("alone"));
    single.wait_for_commits(
        broker,
        |c| c == ends.as_slice(),
        "the single instance's end",
    );
    let single_items = (items == Items::Owned).then(|| marginals(&single, &["alone"]));
    terminate_logged(alone, &log("alone"));
    let learned = (scaled_items.zip(single_items))
        .map(|((scaled, owners), (single, _))| (scaled, single, owners));
    Some((scaled, single, learned))
}

/// Per-partition digests of user state are equal; returns the users.
fn assert_same_user_state(
    broker: &Broker,
    scaled: &Deployment,
    single: &Deployment,
) -> BTreeSet<String> {
    let (scaled_digests, scaled_records) =
        changelog_digests(&broker.address, &scaled.internal_topics()[0]);
    let (single_digests, single_records) =
        changelog_digests(&broker.address, &single.internal_topics()[0]);
    let ids = |records: &PartitionUsers| -> BTreeSet<String> {
        records.iter().flat_map(|p| p.keys().cloned()).collect()
    };
    let (scaled_users, single_users) = (ids(&scaled_records), ids(&single_records));
    assert_eq!(
        scaled_users.len(),
        815,
        "every user of the sample has state"
    );
    assert_eq!(scaled_users, single_users);
    assert_eq!(
        scaled_digests,
        single_digests,
        "per-partition digests of user state: scaled out (with a kill and a join) vs one \
         instance; users that differ: {:#?}",
        user_state_differences(&scaled_records, &single_records)
    );
    let recommended = keys(
        broker,
        &format!("{}-recs", scaled.name),
        1,
        Duration::from_secs(5),
    );
    assert_eq!(
        recommended, scaled_users,
        "every user received recommendations"
    );
    for deployment in [scaled, single] {
        assert!(common::schemas::validate_named(&broker.address, &deployment.name) > 0);
    }
    scaled_users
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn members_killed_and_joining_mid_stream_apply_every_event_once_per_user() {
    let broker = Broker::start();
    let Some((scaled, single, _)) = scaled_and_single(&broker, Items::Replicated) else {
        return;
    };
    assert_same_user_state(&broker, &scaled, &single);
}

/// Each item's marginals once two reads in a row agree. The owners' lag reads 0 from
/// statistics up to a second old, so an owner may still be applying its last work batches and
/// publishing their items when the wait for them ends.
fn settled_marginals(broker: &Broker, deployment: &Deployment) -> BTreeMap<String, (f32, f32)> {
    let mut last = item_marginals(broker, deployment);
    for _ in 0..4 {
        let now = item_marginals(broker, deployment);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the owners' publications kept changing after their lag read 0");
}

/// Each item's pair marginals (entries, purchases) as its last view on a records topic says.
fn item_marginals(broker: &Broker, deployment: &Deployment) -> BTreeMap<String, (f32, f32)> {
    let publication = read_records(&broker.address, &deployment.records_topic(), PARTITIONS);
    (publication.views.into_iter())
        .map(|view| (view.item, (view.entries, view.purchases)))
        .collect()
}

/// Item-owned: with the same kill and join, the owners (moving with the `.items` group, each
/// reading its partitions' work logs from the start) learned every input's item work once:
/// every item's marginals are one instance's, to float rounding (sums in another order); a
/// duplicate or a lost input moves them by at least an event's weight.
#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn owned_items_learn_every_input_once_through_a_kill_and_a_join() {
    let broker = Broker::start();
    let Some((scaled, single, learned)) = scaled_and_single(&broker, Items::Owned) else {
        return;
    };
    assert_same_user_state(&broker, &scaled, &single);
    let (scaled_items, single_items, owners) = learned.expect("owned: marginals");
    assert!(single_items.len() > 1_000, "{} items", single_items.len());
    let only = |a: &BTreeMap<String, (f32, f32)>, b: &BTreeMap<String, (f32, f32)>| {
        let only: Vec<&String> = a.keys().filter(|item| !b.contains_key(*item)).collect();
        (
            only.len(),
            only.into_iter().take(5).cloned().collect::<Vec<String>>(),
        )
    };
    let (only_scaled, only_single) = (
        only(&scaled_items, &single_items),
        only(&single_items, &scaled_items),
    );
    assert!(
        only_scaled.0 == 0 && only_single.0 == 0,
        "items only scaled out: {only_scaled:?}; only on one instance: {only_single:?} (of {})",
        single_items.len()
    );
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0);
    let differing: Vec<_> = (scaled_items.iter())
        .filter(|(item, &(entries, purchases))| {
            let (e, p) = single_items[*item];
            !(close(entries, e) && close(purchases, p))
        })
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "marginals differ from one instance's: {differing:?}"
    );
    let (skipped, restored) = owners;
    assert!(
        skipped > 0,
        "the kill left inputs whose work was delivered to be read again: the owners must skip them"
    );
    assert!(
        restored > 0,
        "partitions moved by the kill and the join are restored from their owners' checkpoints"
    );
}
