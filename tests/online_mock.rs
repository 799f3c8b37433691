//! Online metrics computed two ways: `run` replaying MovieLens (the first 40k ratings of
//! ml-latest-small) on the mock cluster, publishing after every event, counts exactly what
//! `eval --online` counts on the same log with the same settings — in total and per experiment
//! variant — and its online HR@10 is eval's prequential HR@10 within rounding; the summaries it
//! publishes validate against their schema and the last holds its totals. Skips when the data
//! is absent.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use streamrec::config::Config;
use streamrec::online::{OnlineCounts, VariantCounts};

use common::schemas::{validate_topics, Output};
use common::tansu::produce_file_with;
use common::{dataset, fresh_config, read_topic, run_for, unique};

/// Publishing after every event, excluding all the user touched (the whole history fits the
/// profile, as eval's exclusions are unbounded), and no horizon (ratings come years apart).
/// An experiment whose variants rank alike (b sets what the base sets), so the prequential
/// comparison holds while users are split, assigned and counted by both.
const SETTINGS: &str = r#"
[engine.clean]
min_ts_ms = 0
[engine.profile]
max_recent_items = 5000
[engine.online]
horizon_ms = 1000000000000
[pipeline]
min_update_interval_ms = 0
exclude_seen = true
[[engine.experiments]]
name = "split"
[[engine.experiments.variants]]
name = "a"
share = 0.3
[[engine.experiments.variants]]
name = "b"
share = 0.7
exclude_seen = true
"#;

/// The log's first events: the mock cluster keeps only the last ~60k messages of a partition.
const EVENTS: usize = 40_000;

/// Writes the `count` earliest ratings of a MovieLens `ratings.csv` (ties in file order) to `to`.
fn earliest(ratings: &Path, count: usize, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(ratings).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut rows: Vec<(i64, &str)> = lines
        .map(|l| (l.rsplit(',').next().unwrap().parse().unwrap(), l))
        .collect();
    rows.sort_by_key(|r| r.0);
    let kept: Vec<&str> = rows.iter().take(count).map(|r| r.1).collect();
    std::fs::write(to, format!("{header}\n{}\n", kept.join("\n"))).unwrap();
    to.to_owned()
}

fn eval_online(ratings: &Path, config: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_streamrec"))
        .args(["eval", "--format", "movielens-csv", "--methods", "hybrid"])
        .args(["--online", "--json", "--input", ratings.to_str().unwrap()])
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_log_s_online_metrics_equal_eval_s() {
    let Some(ratings) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ratings = earliest(&ratings, EVENTS, &dir.path().join("ratings.csv"));
    let settings = dir.path().join("online.toml");
    std::fs::write(&settings, SETTINGS).unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let loaded = Config::load(&settings).unwrap();
    let mut config = fresh_config(cluster.bootstrap_servers());
    (config.engine, config.pipeline) = (loaded.engine, loaded.pipeline);
    config.kafka.instance_id = "a".into();
    config.kafka.online_metrics_topic = unique("online");
    config.pipeline.online_summary_interval_ms = 200;
    for topic in config.kafka.all_topics() {
        // One input partition: `run` applies the events in the log's time order, as eval does.
        let partitions = if topic == config.kafka.input_topics[0] {
            1
        } else {
            3
        };
        cluster.create_topic(&topic, partitions, 1).unwrap();
    }
    let (brokers, input) = (&config.kafka.brokers, &config.kafka.input_topics[0]);
    produce_file_with(brokers, input, &ratings, "movielens-csv", Some(&settings));
    let eval = eval_online(&ratings, &settings);
    let events = eval["events"].as_u64().unwrap();
    let report = run_for(&config, events, Duration::from_millis(200)).await;
    let tally = report.stats().online;
    let live = &tally.total;
    let offline: OnlineCounts = serde_json::from_value(eval["online"].clone()).unwrap();
    let variants: Vec<VariantCounts> =
        serde_json::from_value(eval["online_variants"].clone()).unwrap();
    assert_eq!(tally.variants, variants, "each variant counted alike");
    let split: Vec<u64> = (variants.iter())
        .map(|v| v.counts.new_item_events)
        .collect();
    assert!(split[0] > 8_000 && split[1] > 20_000, "{split:?}");
    assert!(live.new_item_events > 35_000, "{live:?}");
    assert_eq!(
        (live.judged, live.new_item_events, live.hits),
        (offline.judged, offline.new_item_events, offline.hits)
    );
    assert_eq!(live.hits_by_source, offline.hits_by_source);
    let prequential = eval["methods"][0]["hr_at_n"].as_f64().unwrap();
    assert!(
        (live.hit_rate() - prequential).abs() < 0.0005,
        "online HR@10 {} against eval's prequential {prequential}",
        live.hit_rate()
    );
    let brokers = &config.kafka.brokers;
    let topic = &config.kafka.online_metrics_topic;
    let checked = validate_topics(brokers, &[(topic.as_str(), Output::OnlineMetrics)]);
    assert!(checked > 0, "summaries were published");
    let summaries = read_topic(brokers, topic, 1, checked, Duration::from_secs(1));
    let last = summaries.last().unwrap();
    assert_eq!(last.key, "a");
    let last = last.json();
    assert_eq!(
        last["hits"], live.hits,
        "the shutdown's summary holds the totals"
    );
    assert_eq!(last["new_item_events"], live.new_item_events);
    assert_eq!(last["variants"][1]["variant"], "b");
    assert_eq!(last["variants"][1]["hits"], variants[1].counts.hits);
    drop(cluster);
}
