//! `streamrec backfill` and `streamrec state ...` on real sled directories.

use std::io::Write;
use std::process::{Command, Output};

fn streamrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamrec"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

const TAOBAO: &str = "1,10,100,pv,1511544070\n1,11,100,cart,1511544080\n2,10,100,pv,1511544090\n2,11,100,buy,1511544095\n3,12,200,fav,1511544100\n";

fn backfill(dir: &std::path::Path, input: &std::path::Path) -> Output {
    streamrec(&[
        "backfill",
        "--state-dir",
        dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--format",
        "taobao",
    ])
}

#[test]
fn backfill_then_look_inside() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("behavior.csv");
    std::fs::File::create(&input)
        .unwrap()
        .write_all(TAOBAO.as_bytes())
        .unwrap();
    let (first, second) = (tmp.path().join("a"), tmp.path().join("b"));

    let report = stdout(&backfill(&first, &input));
    assert!(report.starts_with("backfilled 5 events"), "{report}");
    let digest = report
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("digest: ")
        .to_owned();
    let stored = stdout(&streamrec(&[
        "state",
        "digest",
        "--state-dir",
        first.to_str().unwrap(),
    ]));
    assert_eq!(stored.trim(), digest, "the stored state is the state built");
    let again = stdout(&backfill(&second, &input));
    assert!(
        again.ends_with(&format!("digest: {digest}\n")),
        "same input, same digest"
    );

    let refused = backfill(&first, &input);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already holds state"));

    let stats = stdout(&streamrec(&[
        "state",
        "stats",
        "--state-dir",
        first.to_str().unwrap(),
    ]));
    assert!(stats.contains("users: 3"), "{stats}");
    assert!(stats.contains("items: 3"), "{stats}");
    let user = stdout(&streamrec(&[
        "state",
        "inspect",
        "--state-dir",
        first.to_str().unwrap(),
        "--user",
        "2",
    ]));
    assert!(user.contains("purchased: 11"), "{user}");
    assert!(user.contains("10 (view, 1 events)"), "{user}");
    let item = stdout(&streamrec(&[
        "state",
        "inspect",
        "--state-dir",
        first.to_str().unwrap(),
        "--item",
        "10",
    ]));
    assert!(item.contains("  11 "), "10 and 11 co-occur: {item}");
}

#[test]
fn a_missing_state_dir_is_named() {
    let out = streamrec(&["state", "digest", "--state-dir", "/no/such/state"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("state dir /no/such/state does not exist")
    );
}

/// `streamrec replay` with these arguments after `--config` and `--state-dir`: its stderr.
fn replay_refusal(config: &std::path::Path, state_dir: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec![
        "replay",
        "--quiet",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state_dir.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = streamrec(&all);
    assert!(!out.status.success(), "replay {args:?} was not refused");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn replay_refuses_the_live_state_a_used_dir_and_unconfirmed_live_output() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let config = tmp.path().join("streamrec.toml");
    // No broker listens on port 9: every refusal must come before any connection.
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:9\"\n[state]\ndir = \"{}\"\n",
            live.display()
        ),
    )
    .unwrap();
    let err = replay_refusal(&config, &live, &[]);
    assert!(err.contains("is the live state dir"), "{err}");

    let input = tmp.path().join("behavior.csv");
    std::fs::write(&input, TAOBAO).unwrap();
    let used = tmp.path().join("used");
    stdout(&backfill(&used, &input));
    let err = replay_refusal(&config, &used, &[]);
    assert!(err.contains("already holds state"), "{err}");

    let fresh = tmp.path().join("fresh");
    let err = replay_refusal(&config, &fresh, &["--output", "live"]);
    assert!(err.contains("add --yes"), "{err}");
    let err = replay_refusal(&config, &fresh, &["--from", "last tuesday"]);
    assert!(err.contains("expected `earliest`"), "{err}");
    let err = replay_refusal(&config, &fresh, &["--to", "0:5"]);
    assert!(err.contains("expected `latest`"), "{err}");
}
