//! The `streamrec` binary as a user runs it: real files, real process, exit codes and output.

use std::io::Write;
use std::process::{Command, Output};

fn streamrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamrec"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn fixture(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// Two users watch A then B, a third watches A then B later: co-occurrence must find B.
const RATINGS: &str = "userId,movieId,rating,timestamp\r\n1,10,4.0,1000\r\n1,20,4.0,1001\r\n2,10,3.0,2000\r\n2,20,5.0,2001\r\n3,10,4.0,3000\r\n3,20,4.0,3001\r\nbroken-row\r\n";

#[test]
fn eval_prints_a_table_and_reports_skipped_rows() {
    let file = fixture(RATINGS);
    let out = streamrec(&[
        "eval",
        "--input",
        file.path().to_str().unwrap(),
        "--format",
        "movielens-csv",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for method in ["popularity", "cooc", "mf", "hybrid"] {
        assert!(table.contains(method), "{table}");
    }
    assert!(table.contains("3 test cases"), "{table}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("wrong_field_count"), "{stderr}");
    assert!(stderr.contains("line 8"), "{stderr}");
}

#[test]
fn eval_json_has_the_figures_per_method() {
    let file = fixture(RATINGS);
    let out = streamrec(&[
        "eval",
        "--input",
        file.path().to_str().unwrap(),
        "--format",
        "movielens-csv",
        "--json",
        "--methods",
        "cooc,popularity",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "discovery");
    assert_eq!(report["tests"], 3);
    assert_eq!(report["skipped_rows"]["wrong_field_count"], 1);
    let methods = report["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 2);
    let cooc = methods.iter().find(|m| m["method"] == "cooc").unwrap();
    // Test cases: 1→20 (20 unseen), 2→20 and 3→20 (both found through 10 → 20).
    assert_eq!(cooc["hits"], 2);
}

#[test]
fn eval_grid_scores_each_setting_on_a_fresh_engine() {
    let file = fixture(RATINGS);
    let path = file.path().to_str().unwrap();
    let grid = |axis: &str| {
        let args = [
            "eval",
            "--input",
            path,
            "--format",
            "movielens-csv",
            "--json",
        ];
        let only_cooc = [
            "--set",
            "engine.ranking.blend.popular=0",
            "--set",
            "engine.ranking.blend.mf=0",
        ];
        streamrec(
            &[
                &args[..],
                &only_cooc,
                &["--methods", "hybrid", "--grid", axis],
            ]
            .concat(),
        )
    };
    let out = grid("engine.ranking.blend.cooc=0,1");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = report["grid"].as_array().unwrap();
    let hits = |i: usize| &points[i]["report"]["methods"][0]["hits"];
    assert_eq!(points[0]["settings"][0], "engine.ranking.blend.cooc=0");
    assert_eq!(hits(0), 0, "history only: nothing leads from 10 to 20");
    assert_eq!(points[1]["settings"][0], "engine.ranking.blend.cooc=1");
    assert_eq!(hits(1), 2);
    let out = grid("engine.nothing=1,2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--grid engine.nothing=1"), "{stderr}");
    assert!(stderr.contains("names no setting"), "{stderr}");
}

#[test]
fn bad_invocations_fail_with_a_clear_message() {
    let file = fixture(RATINGS);
    let path = file.path().to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["eval", "--input", "/no/such/file", "--format", "taobao"],
            "cannot read /no/such/file",
        ),
        (
            &["eval", "--input", path, "--format", "taobao"],
            "holds no valid Taobao rows",
        ),
        (
            &[
                "eval",
                "--input",
                path,
                "--format",
                "movielens-csv",
                "--methods",
                "magic",
            ],
            "unknown method \"magic\"",
        ),
        (
            &[
                "eval",
                "--input",
                path,
                "--format",
                "movielens-csv",
                "--top-n",
                "0",
            ],
            "--top-n must be at least 1",
        ),
    ];
    for (args, expected) in cases {
        let out = streamrec(args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_bad_config_names_the_key() {
    let file = fixture(RATINGS);
    let config = fixture("[engine.factorization]\nrank = 0\n");
    let out = streamrec(&[
        "eval",
        "--input",
        file.path().to_str().unwrap(),
        "--format",
        "movielens-csv",
        "--config",
        config.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("engine.factorization.rank"), "{stderr}");
}

/// `config check` refuses a broken experiment, naming the key and the rule.
#[test]
fn config_check_refuses_bad_experiments() {
    let variants = |second: &str| {
        format!(
            "[[engine.experiments]]\nname = \"e\"\n[[engine.experiments.variants]]\n\
             name = \"a\"\nshare = 0.5\n[[engine.experiments.variants]]\n{second}\n"
        )
    };
    let cases = [
        (
            variants("name = \"b\"\nshare = 0.4"),
            "`engine.experiments`: experiment \"e\": shares must sum to 1, got 0.9",
        ),
        (
            variants("name = \"a\"\nshare = 0.5"),
            "experiment \"e\" variant \"a\" is named twice",
        ),
        (
            variants("name = \"b\"\nshare = 0.5\nblend = { mff = 0.0 }"),
            "unknown field `mff`",
        ),
        (
            variants("name = \"b\"\nshare = 0.5\nseed_decay = 2.0"),
            "variant \"b\": engine.ranking.seed_decay must be in (0.0, 1.0]",
        ),
    ];
    for (text, expected) in cases {
        let config = fixture(&text);
        let out = streamrec(&[
            "config",
            "check",
            "--config",
            config.path().to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn run_and_produce_refuse_bad_settings_before_touching_kafka() {
    let config = fixture("[pipeline]\nworkers = 0\n");
    let out = streamrec(&["run", "--config", config.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipeline.workers"));

    let out = streamrec(&["run", "--config", "/no/such/streamrec.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read config file /no/such/streamrec.toml"));

    let out = streamrec(&[
        "produce",
        "--input",
        "/no/such/ratings.csv",
        "--format",
        "movielens-csv",
        "--topic",
        "events",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /no/such/ratings.csv"));
}

#[test]
fn config_check_shows_the_layered_settings_with_secrets_masked() {
    let file = fixture("[kafka]\ngroup_id = \"from-file\"\nbrokers = \"file:9092\"\n");
    let check = |env: &[(&str, &str)], sets: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_streamrec"));
        command.args(["config", "check", "--config", file.path().to_str().unwrap()]);
        for set in sets {
            command.args(["--set", set]);
        }
        command.envs(env.iter().copied()).output().unwrap()
    };
    let out = check(
        &[
            ("STREAMREC__KAFKA__GROUP_ID", "from-env"),
            ("STREAMREC__KAFKA__LIBRDKAFKA__SASL_PASSWORD", "hunter2"),
        ],
        &["pipeline.top_n=7"],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("group_id = \"from-env\""), "{text}");
    assert!(text.contains("brokers = \"file:9092\""), "{text}");
    assert!(text.contains("top_n = 7"), "{text}");
    assert!(text.contains("\"sasl.password\" = \"***\""), "{text}");
    assert!(!text.contains("hunter2"));

    let out = check(&[("STREAMREC__STATE__DIRR", "/x")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("STREAMREC__STATE__DIRR: state.dirr names no setting"),
        "{err}"
    );
}

#[test]
fn an_invalid_trigger_rule_is_refused_at_start_with_its_name_and_field() {
    let rules = fixture(
        "[[rule]]\nname = \"abandoned-carts\"\nkind = \"cart_abandonment\"\ncooldown_ms = 1000\n",
    );
    let set = format!("triggers.file={}", rules.path().display());
    let empty = fixture("");
    let config = empty.path().to_str().unwrap();
    for command in [&["config", "check"][..], &["run", "--config", config][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_streamrec"))
            .args(command)
            .args(["--set", &set])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("trigger rule \"abandoned-carts\": `window_ms` is required"),
            "{stderr}"
        );
    }
}

/// The restart is timed in a new process of its own, which reads back the state the bench
/// wrote and reports each part.
#[test]
fn bench_state_times_a_restart_in_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bench-state");
    let out = streamrec(&[
        "bench-state",
        "--users",
        "300",
        "--events",
        "900",
        "--batch",
        "100",
        "--rate",
        "200",
        "--json",
        "--dir",
        state.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let restart = &report["restart"];
    let part = |name: &str| restart[name].as_f64().unwrap_or(-1.0);
    assert!(
        part("open_store_s") > 0.0 && part("decode_s") > 0.0,
        "{report}"
    );
    assert!(
        part("to_first_event_s") >= part("open_store_s") + part("decode_s"),
        "{report}"
    );
    assert!(restart["page_faults"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["restart_cold"], false);
    assert!(!state.exists(), "the bench removes its state dir");
}

/// With `--keep` the state stays, and the command the bench prints restarts it again.
#[test]
fn bench_state_keeps_its_state_to_restart_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("kept");
    let args = [
        "--users", "200", "--events", "600", "--batch", "50", "--rate", "200",
    ];
    let dir_arg = ["--keep", "--json", "--dir", state.to_str().unwrap()];
    let out = streamrec(&[&["bench-state"][..], &args, &dir_arg].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(state.exists(), "--keep keeps the state dir");
    let again = (stderr.lines())
        .find_map(|line| line.split_once("restart it again with: "))
        .map(|(_, command)| command.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|| panic!("no restart command in: {stderr}"));
    let out = std::process::Command::new(again[0])
        .args(&again[1..])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let times: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        times["to_first_event_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{times}"
    );
}

/// README's first command: the demo streams a shop through the real pipeline, splits its
/// shoppers between two ranking variants, and asks the query API a user's, a filtered, a
/// session's and an item's question, and a bad one.
#[test]
fn the_demo_runs_the_pipeline_and_shows_the_query_api() {
    let out = streamrec(&["demo", "--events", "20000", "--rate", "20000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("consumed 20000 of 20000"), "{text}");
    for answered in [
        "GET /v1/users/u0/recommendations?n=5 → 200",
        "GET /v1/users/u0/recommendations?n=5&category=",
        "POST /v1/recommendations {\"items\":",
        "/similar?n=5 → 200",
        "GET /v1/users/u0/recommendations?n=abc → 400",
    ] {
        assert!(text.contains(answered), "{answered} in\n{text}");
    }
    let online = text
        .lines()
        .find(|l| l.contains("online metrics"))
        .expect("an online line");
    let events: u64 = online
        .split(" over ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        events > 1000,
        "events are judged against the lists shown: {online}"
    );
    for variant in [
        "    hybrid    HR@N ",
        "    trending  HR@N ",
        "trending against hybrid: HR@N z = ",
    ] {
        assert!(
            text.contains(variant),
            "the demo's experiment: {variant} in\n{text}"
        );
    }
}
