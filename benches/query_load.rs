//! The query API under load: `run` on librdkafka's mock cluster ingesting the synthetic shop at
//! `BENCH_RATE` events/s (10,000) while `oha` sends `BENCH_QPS` requests/s (2,000: 60 % user
//! lists, 15 % similar items, 25 % anonymous sessions) for `BENCH_SECONDS` (20), then the same
//! ingest without queries. Prints oha's latency quantiles, status codes and errors, and the
//! ingest rate of both phases. Needs `oha` on PATH (`cargo install oha`); says so otherwise.
//! Run: `cargo bench --bench query_load`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use streamrec::config::Config;
use streamrec::kafka::{produce_messages, Health, Observers};
use streamrec::pipeline::Stats;
use streamrec::runtime::run;
use streamrec::synthetic::{ShopperConfig, Shoppers};
use tokio::sync::watch;

const USERS: usize = 5_000;
const WARM_EVENTS: usize = 100_000;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

fn payloads(shoppers: &mut Shoppers, count: usize) -> Vec<(String, Vec<u8>)> {
    let events = shoppers.by_ref().take(count);
    events
        .map(|e| (e.user_id.clone(), e.to_json().into_bytes()))
        .collect()
}

/// Ingests `events` at `rate` and returns the events/s consumed meanwhile, and how many were
/// still unconsumed when the producer finished.
async fn ingest(
    config: &Config,
    events: &[(String, Vec<u8>)],
    rate: u64,
    progress: &mut watch::Receiver<Stats>,
) -> (f64, u64) {
    let before = progress.borrow_and_update().consumed;
    let started = Instant::now();
    let topic = &config.kafka.input_topics[0];
    produce_messages(&config.kafka, topic, events, false, Some(rate))
        .await
        .expect("produced");
    let seconds = started.elapsed().as_secs_f64();
    let consumed = progress.borrow_and_update().consumed - before;
    (
        consumed as f64 / seconds,
        events.len() as u64 - consumed.min(events.len() as u64),
    )
}

/// Starts oha against `url` (GET from a file of URLs, or POST of a body) for `seconds`.
fn oha(args: &[&str], qps: u64, seconds: u64) -> std::process::Child {
    let (qps, duration) = (qps.to_string(), format!("{seconds}s"));
    let common = [
        "--no-tui",
        "--output-format",
        "json",
        "--latency-correction",
        // Requests under way when the time is up are answered, not counted as errors.
        "--wait-ongoing-requests-after-deadline",
        "-c",
        "32",
    ];
    Command::new("oha")
        .args(common)
        .args(["-q", &qps, "-z", &duration])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("oha starts")
}

fn report(what: &str, child: std::process::Child) {
    let out = child.wait_with_output().expect("oha ends");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha's JSON");
    let ms = |q: &str| json["latencyPercentiles"][q].as_f64().unwrap_or(f64::NAN) * 1000.0;
    println!(
        "  {what}: {:.0} requests/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; status {}; errors {}",
        json["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        ms("p50"),
        ms("p90"),
        ms("p99"),
        json["summary"]["slowest"].as_f64().unwrap_or(f64::NAN) * 1000.0,
        json["statusCodeDistribution"],
        json["errorDistribution"],
    );
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").to_string()
}

/// The server's own view (`streamrec_query_seconds`, arrival to answer, both phases): the share
/// of answers within each bucket bound, per endpoint.
fn server_side(admin: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("the admin listener");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("sent");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    for endpoint in ["user", "session", "similar"] {
        let wanted = format!("endpoint=\"{endpoint}\"");
        let buckets: Vec<(String, f64)> = text
            .lines()
            .filter(|l| l.starts_with("streamrec_query_seconds_bucket{") && l.contains(&wanted))
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let count = l.rsplit(' ').next()?.trim().parse().ok()?;
                Some((le.to_owned(), count))
            })
            .collect();
        let total = buckets.last().map_or(0.0, |b| b.1);
        let shares: Vec<String> = buckets
            .iter()
            .filter(|(le, _)| ["0.0008", "0.0032", "0.0064", "0.0256"].contains(&le.as_str()))
            .map(|(le, count)| {
                format!(
                    "≤{} ms {:.2} %",
                    le.parse::<f64>().unwrap_or(0.0) * 1000.0,
                    100.0 * count / total.max(1.0)
                )
            })
            .collect();
        println!(
            "  server side, {endpoint}: {} answers; {}",
            total,
            shares.join(", ")
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if Command::new("oha").arg("--version").output().is_err() {
        println!("SKIPPED: oha is not on PATH (cargo install oha)");
        return;
    }
    let (rate, qps, seconds) = (
        setting("BENCH_RATE", 10_000),
        setting("BENCH_QPS", 2_000),
        setting("BENCH_SECONDS", 20),
    );
    let cluster = MockCluster::new(1).expect("a mock cluster");
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.group_id = "query-load".into();
    config.query.listen = "127.0.0.1:0".into();
    let admin = free_address();
    config.admin.listen = admin.clone();
    for topic in config.kafka.all_topics() {
        cluster.create_topic(&topic, 3, 1).expect("a topic");
    }
    let (progress_tx, mut progress) = watch::channel(Stats::default());
    let observers = Observers {
        progress: Some(progress_tx),
        health: Arc::new(Health::default()),
        ..Observers::default()
    };
    let (health, address) = (observers.health.clone(), observers.query_address.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let config = config.clone();
        tokio::spawn(
            async move { run(&config, async { stopped.await.unwrap_or(()) }, observers).await },
        )
    };
    while health.assigned_partitions() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let address = *address.get().expect("the query listener is bound");
    let shop = ShopperConfig {
        users: USERS,
        items: 20_000,
        ..ShopperConfig::default()
    };
    let mut shoppers = Shoppers::new(shop);
    let warm = payloads(&mut shoppers, WARM_EVENTS);
    produce_messages(
        &config.kafka,
        &config.kafka.input_topics[0],
        &warm,
        false,
        None,
    )
    .await
    .expect("warm-up produced");
    progress
        .wait_for(|s| s.consumed >= WARM_EVENTS as u64)
        .await
        .expect("warm-up consumed");
    let phase = payloads(&mut shoppers, (rate * seconds) as usize);
    let quiet = payloads(&mut shoppers, (rate * seconds) as usize);

    let dir = tempfile::tempdir().expect("a temp dir");
    let urls = dir.path().join("urls.txt");
    let lines: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "http://{address}/v1/users/u{}/recommendations?n=10",
                (i * 7919) % USERS
            )
        })
        .chain((0..100).map(|i| format!("http://{address}/v1/items/i{}/similar?n=10", i * 3)))
        .collect();
    std::fs::write(&urls, lines.join("\n")).expect("URLs written");
    let (get_qps, post_qps) = (qps * 3 / 4, qps / 4);
    println!(
        "{seconds} s at {rate} events/s offered, {qps} requests/s ({get_qps} GET: users 4 : similar 1; {post_qps} POST sessions):"
    );
    let gets = oha(
        &["--urls-from-file", urls.to_str().expect("a path")],
        get_qps,
        seconds,
    );
    let session_url = format!("http://{address}/v1/recommendations");
    let body = r#"{"items":["i0","i8","i16"],"n":10}"#;
    let posts = oha(
        &[
            "-m",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            body,
            &session_url,
        ],
        post_qps,
        seconds,
    );
    let (with_queries, behind) = ingest(&config, &phase, rate, &mut progress).await;
    report("GET users + similar", gets);
    report("POST sessions", posts);
    println!("  ingest with queries: {with_queries:.0} events/s, {behind} behind when the producer finished");
    let (without, behind) = ingest(&config, &quiet, rate, &mut progress).await;
    println!("  ingest without queries: {without:.0} events/s, {behind} behind when the producer finished");
    println!("  ratio: {:.2}", with_queries / without);
    server_side(&admin);
    let _ = stop.send(());
    running.await.expect("run joins").expect("run succeeds");
}
