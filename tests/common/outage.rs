//! The broker unreachable for 30 s a third of the way through a stream: `run` keeps running,
//! `/readyz` says why nothing moves, consumption resumes by itself, and at the end the state
//! reflects every event exactly once (a state dir: partitions re-read after the outage are
//! skipped where the state has them) and every user got a recommendation. How the broker goes
//! away is the caller's: the mock cluster takes it down, a proxy cuts the real one off.

use std::time::{Duration, Instant};

use streamrec::config::Config;
use streamrec::kafka::{produce_messages, Observers};
use streamrec::pipeline::Stats;
use streamrec::runtime::run;

use super::read_topic;

const EVENTS: usize = 3000;
const OUTAGE: Duration = Duration::from_secs(30);

/// `n` views by `users` users in turn (`users == n`: every event owes a new user an update).
pub fn views(n: usize, users: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let user = format!("u{}", i % users);
            let json = format!(
                r#"{{"type":"view","user_id":"{user}","item_id":"i{}","ts":{}}}"#,
                i % 50,
                1_700_000_000_000i64 + i as i64
            );
            (user, json.into_bytes())
        })
        .collect()
}

pub fn readyz(address: &str) -> Option<(u16, String)> {
    super::http::get(address, "/readyz", None)
}

pub async fn wait_for(
    progress: &mut tokio::sync::watch::Receiver<Stats>,
    what: impl Fn(&Stats) -> bool,
) {
    while !what(&progress.borrow_and_update()) {
        progress.changed().await.unwrap();
    }
}

/// Runs the scenario on `config` (topics with 3 partitions made by the caller).
pub async fn survive_an_outage(mut config: Config, down: impl FnOnce(), up: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    config.state.dir = dir.path().join("state").display().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.admin.listen = listener.local_addr().unwrap().to_string();
    drop(listener);
    config
        .kafka
        .librdkafka
        .insert("statistics.interval.ms".into(), "500".into());
    let events = views(EVENTS, EVENTS);
    let input = config.kafka.input_topics[0].clone();
    let third = EVENTS / 3;
    produce_messages(&config.kafka, &input, &events[..third], false, None)
        .await
        .unwrap();
    let (progress_tx, mut progress) = tokio::sync::watch::channel(Stats::default());
    let observers = Observers {
        progress: Some(progress_tx),
        ..Observers::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let config = config.clone();
        tokio::spawn(
            async move { run(&config, async { stopped.await.unwrap_or(()) }, observers).await },
        )
    };
    wait_for(&mut progress, |s| s.applied >= third as u64).await;
    // The rest is queued before the outage, so the backlog waits in the broker.
    produce_messages(&config.kafka, &input, &events[third..], false, None)
        .await
        .unwrap();
    down();
    let address = config.admin.listen.clone();
    let said = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut said = None;
        while started.elapsed() < OUTAGE {
            if let Some((503, body)) = readyz(&address) {
                if body.contains("unreachable") {
                    said.get_or_insert(body);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        said
    })
    .await
    .unwrap();
    if running.is_finished() {
        let outcome = running.await.unwrap().map(|r| r.stats());
        panic!("run stopped during the outage: {outcome:?}");
    }
    let said = said.expect("/readyz said the brokers are unreachable");
    up();
    let all = EVENTS as u64;
    tokio::time::timeout(
        Duration::from_secs(120),
        wait_for(&mut progress, |s| s.applied >= all),
    )
    .await
    .expect("run resumed by itself");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(()).unwrap();
    let report = running.await.unwrap().expect("run ends cleanly");
    assert_eq!(
        report.stats().applied,
        all,
        "every event applied exactly once: {said}"
    );
    let recs = read_topic(
        &config.kafka.brokers,
        &config.kafka.recommendations_topic,
        3,
        usize::MAX,
        Duration::from_secs(3),
    );
    let users: std::collections::BTreeSet<&str> = recs.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(users.len(), EVENTS, "every user got a recommendation");
}
