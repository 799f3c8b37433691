//! `streamrec bench-instances --brokers` on a real broker (Tansu): N `streamrec run` processes
//! consume the whole input, and the JSON row of each N carries what the scale-out goal is
//! judged by (events/s, CPU seconds per 100k events) and what replication costs (model updates
//! per event). `#[ignore]`d without a broker; `.ci/run` runs it.

mod common;

use common::tansu::{streamrec, Broker};

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn the_process_bench_runs_every_instance_count_to_the_end_and_reports_cpu() {
    let broker = Broker::start();
    let output = streamrec()
        .args(["bench-instances", "--brokers", &broker.address])
        .args([
            "--instances",
            "1,2",
            "--events",
            "3000",
            "--partitions",
            "4",
        ])
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    let counts: Vec<u64> = rows
        .iter()
        .map(|r| r["instances"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2]);
    for row in &rows {
        let cpu = row["cpu_s_per_100k_events"].as_f64().unwrap();
        assert!(cpu > 0.0, "no CPU counted: {row}");
        assert!(row["events_per_s"].as_f64().unwrap() > 0.0, "{row}");
        // Every learned event publishes one update; the demo input holds 1 % duplicates and
        // 0.5 % malformed events.
        let updates = row["model_updates_per_event"].as_f64().unwrap();
        assert!((0.95..=1.0).contains(&updates), "{row}");
    }
    assert_eq!(rows[0]["cpu_relative"].as_f64(), Some(1.0));
}
