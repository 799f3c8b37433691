//! Online metrics survive SIGKILL exactly: `streamrec run` on a real broker (Tansu), publishing
//! an update per event, killed three times mid-stream, ends with the same online counters in
//! its state as a crash-free run's — in total and per experiment variant (the lists and
//! counters are checkpointed with the users and offsets, so events after a checkpoint are
//! judged again, never twice). A user keeps their variant across the kills and in both runs.
//! Every update and online metrics summary it published validates against its schema.
//! `#[ignore]`d like every Tansu test (see `tests/e2e_tansu.rs`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::tansu::{
    run_to_end, run_until_committed, state_config, state_digest, stored_online, taobao_topic,
    Broker,
};
use common::{dataset, read_topic, unique};

/// A `state_config` that publishes an update after every event: what a user was shown then
/// depends on the inputs alone, so two runs' online counters can be compared.
fn per_event(
    dir: &Path,
    broker: &Broker,
    name: &str,
    input: &str,
    group: &str,
) -> std::path::PathBuf {
    let path = state_config(dir, broker, name, input, group);
    let text = std::fs::read_to_string(&path).unwrap();
    let per_event = text.replace("min_update_interval_ms = 300", "min_update_interval_ms = 0");
    assert_ne!(per_event, text);
    let per_event = per_event + EXPERIMENT;
    std::fs::write(&path, per_event).unwrap();
    for suffix in ["recs", "similar", "dead", "online"] {
        broker.create_topic_with(&format!("{name}-{suffix}"), 1);
    }
    path
}

/// Two variants that rank differently.
const EXPERIMENT: &str = r#"
[[engine.experiments]]
name = "cooc-only"
[[engine.experiments.variants]]
name = "control"
share = 0.5
[[engine.experiments.variants]]
name = "cooc"
share = 0.5
blend = { history = 0.0, mf = 0.0, content = 0.0 }
"#;

/// Each user's variant as the updates on `topic` name it; panics if one names two.
fn variants_published(broker: &Broker, topic: &str) -> BTreeMap<String, String> {
    let updates = read_topic(
        &broker.address,
        topic,
        1,
        usize::MAX,
        Duration::from_secs(2),
    );
    let mut variants = BTreeMap::new();
    for update in &updates {
        let json = update.json();
        let variant = json["variants"]["cooc-only"].as_str().unwrap().to_owned();
        let earlier = variants.insert(update.key.clone(), variant.clone());
        if let Some(earlier) = earlier.filter(|e| *e != variant) {
            panic!("user {} moved from {earlier} to {variant}", update.key);
        }
    }
    variants
}

#[test]
#[ignore = "needs a Tansu broker: STREAMREC_TANSU=path/to/tansu"]
fn online_metrics_after_sigkills_equal_a_crash_free_run_s() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (input, end) = taobao_topic(&broker, &path);

    let (crashy_group, calm_group) = (unique("crashy"), unique("calm"));
    let crashy = per_event(dir.path(), &broker, "crashy", &input, &crashy_group);
    for fraction in [0.2, 0.5, 0.8] {
        let target = (end as f64 * fraction) as i64;
        let at = (crashy_group.as_str(), input.as_str());
        let mut child = run_until_committed(&broker, &crashy, at, target);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    run_to_end(&broker, &crashy, &crashy_group, &input, end);
    let calm = per_event(dir.path(), &broker, "calm", &input, &calm_group);
    run_to_end(&broker, &calm, &calm_group, &input, end);

    let online = stored_online(&calm);
    assert!(!online.starts_with("online: 0 judged"), "{online}");
    assert!(online.contains("\n  cooc-only/cooc: "), "{online}");
    assert_eq!(
        stored_online(&crashy),
        online,
        "crashes changed the online counters"
    );
    assert_eq!(state_digest(&crashy), state_digest(&calm));
    for name in ["crashy", "calm"] {
        let summaries = read_topic(
            &broker.address,
            &format!("{name}-online"),
            1,
            1,
            Duration::from_secs(2),
        );
        assert!(!summaries.is_empty(), "{name} published its online metrics");
        assert!(common::schemas::validate_named(&broker.address, name) > 0);
    }
    let crashy_variants = variants_published(&broker, "crashy-recs");
    assert!(crashy_variants.len() > 500, "{}", crashy_variants.len());
    assert_eq!(crashy_variants, variants_published(&broker, "calm-recs"));
    let in_cooc = crashy_variants.values().filter(|v| *v == "cooc").count();
    assert!((200..600).contains(&in_cooc), "about half: {in_cooc}");
}
