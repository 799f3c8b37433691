//! `streamrec demo`: the whole pipeline on librdkafka's in-process mock cluster — a synthetic
//! shop (with duplicates and malformed events on purpose) streams into the real `run` loop, and
//! the summary shows what happened and why three shoppers got what they got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use tokio::sync::watch;

use crate::config::{Blend, Config};
use crate::engine::Engine;
use crate::event::Event;
use crate::experiments::{BlendOverride, Experiment, Variant};
use crate::kafka::{produce_messages, Health, Observers, RunReport};
use crate::online::{two_proportion_z, OnlineCounts, OnlineTally};
use crate::pipeline::Stats;
use crate::rng::SplitMix64;
use crate::runtime::run;
use crate::synthetic::{ShopperConfig, Shoppers};
use crate::tools::demo_queries::show_queries;

pub struct DemoOptions {
    pub events: usize,
    /// Events per second the shop sends.
    pub rate: u64,
    pub duration: Duration,
    pub seed: u64,
}

const DEMO_USERS: usize = 2_000;

/// Campaign triggers for the demo: the synthetic shop spans ~17 minutes of event time per 100k
/// events, so the windows are minutes (config/triggers.toml has shop-scale ones).
const DEMO_RULES: &str = r#"
[[rule]]
name = "browse-abandonment"
kind = "browse_abandonment"
scope = "item"
min_views = 2
window_ms = 300000
quiet_ms = 60000
cooldown_ms = 600000

[[rule]]
name = "cart-abandonment"
kind = "cart_abandonment"
window_ms = 120000
cooldown_ms = 600000

[[rule]]
name = "welcome-back"
kind = "re_engagement"
inactive_ms = 300000
items = 5
cooldown_ms = 600000

[[rule]]
name = "new-favourite-category"
kind = "affinity_shift"
min_events = 10
cooldown_ms = 600000
"#;
const DUPLICATE_RATE: f64 = 0.01;
const MALFORMED_RATE: f64 = 0.005;

/// The demo's synthetic shop.
pub fn demo_shop(seed: u64) -> ShopperConfig {
    ShopperConfig {
        users: DEMO_USERS,
        items: 5_000,
        seed,
        ..ShopperConfig::default()
    }
}

/// The demo's input: a synthetic stream with ~1% exact duplicates and ~0.5% broken payloads.
pub fn demo_payloads(events: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    let shop = demo_shop(seed);
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    let mut previous: Option<(String, Vec<u8>)> = None;
    let mut payloads = Vec::with_capacity(events);
    let mut stream = Shoppers::new(shop);
    while payloads.len() < events {
        let roll = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if roll < DUPLICATE_RATE {
            if let Some(dup) = previous.clone() {
                payloads.push(dup);
                continue;
            }
        }
        let event: Event = stream.next().expect("the stream is endless");
        let message = if roll < DUPLICATE_RATE + MALFORMED_RATE {
            (event.user_id.clone(), malformed(&event, rng.below(4)))
        } else {
            (event.user_id.clone(), event.to_json().into_bytes())
        };
        previous = Some(message.clone());
        payloads.push(message);
    }
    payloads
}

fn malformed(event: &Event, kind: usize) -> Vec<u8> {
    match kind {
        0 => b"{\"type\":\"view\",\"user_id\":".to_vec(),
        1 => format!(
            r#"{{"type":"view","item_id":"{}","ts":{}}}"#,
            event.item_id, event.ts_ms
        )
        .into_bytes(),
        2 => format!(
            r#"{{"type":"refund","user_id":"{}","item_id":"{}","ts":{}}}"#,
            event.user_id, event.item_id, event.ts_ms
        )
        .into_bytes(),
        _ => format!(
            r#"{{"type":"purchase","user_id":"{}","item_id":"{}","ts":{},"price":-5}}"#,
            event.user_id, event.item_id, event.ts_ms
        )
        .into_bytes(),
    }
}

pub async fn demo(options: DemoOptions) -> anyhow::Result<()> {
    let cluster = MockCluster::new(1).context("cannot start the mock cluster")?;
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.kafka.group_id = "streamrec-demo".into();
    config.kafka.session_timeout_ms = 6_000;
    config.query.listen = "127.0.0.1:0".into();
    config.engine.experiments = vec![demo_experiment()];
    for (topic, partitions) in [
        ("events", 3),
        ("recommendations", 3),
        ("similar-items", 3),
        ("dead-letter", 1),
        ("campaign-triggers", 3),
    ] {
        cluster.create_topic(topic, partitions, 1)?;
    }
    let rules =
        std::env::temp_dir().join(format!("streamrec-demo-rules-{}.toml", std::process::id()));
    std::fs::write(&rules, DEMO_RULES).context("cannot write the demo's trigger rules")?;
    config.triggers.file = rules.display().to_string();
    println!(
        "mock cluster at {}; generating {} events",
        config.kafka.brokers, options.events
    );
    let payloads = demo_payloads(options.events, options.seed);
    let total = payloads.len() as u64;
    let (progress_tx, progress_rx) = watch::channel(Stats::default());
    let observers = Observers {
        progress: Some(progress_tx),
        health: Arc::new(Health::default()),
        ..Observers::default()
    };
    let producer_config = config.kafka.clone();
    let health = observers.health.clone();
    let rate = options.rate;
    let loader = tokio::spawn(async move {
        // Producing before the group has formed would measure the join, not the pipeline.
        while health.assigned_partitions() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        produce_messages(&producer_config, "events", &payloads, false, Some(rate)).await
    });
    let deadline = Instant::now() + options.duration;
    let query_address = observers.query_address.clone();
    let shop = demo_shop(options.seed);
    let watcher = async move {
        show_progress(progress_rx, total, deadline).await;
        if let Some(&address) = query_address.get() {
            show_queries(address, &shop).await;
        }
    };
    let report = run(&config, watcher, observers).await;
    let _ = std::fs::remove_file(&rules);
    let report = report?;
    loader.await??;
    print_summary(&report, total, config.pipeline.min_update_interval_ms);
    drop(cluster);
    Ok(())
}

/// Prints a line a second; resolves when every event was consumed or the deadline passed.
async fn show_progress(mut progress: watch::Receiver<Stats>, total: u64, deadline: Instant) {
    let mut last = (Instant::now(), 0u64);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        ticker.tick().await;
        let stats = progress.borrow_and_update().clone();
        let rate = (stats.consumed - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), stats.consumed);
        println!(
            "  {:>8}/{total} consumed  {:>8.0} events/s  {:>5} rejected  {:>5} duplicates  {:>7} recommendation updates",
            stats.consumed,
            rate,
            stats.rejected_total(),
            stats.duplicates,
            stats.recommendations
        );
        if stats.consumed >= total {
            return;
        }
        if Instant::now() >= deadline {
            println!("  --duration reached; stopping");
            return;
        }
    }
}

/// Half the shoppers get the hybrid ranking, half only what is trending: the split shows how a
/// shop reads an experiment (docs/experiments.md).
fn demo_experiment() -> Experiment {
    let trending = Variant {
        blend: BlendOverride::all(&Blend::TRENDING),
        ..Variant::new("trending", 0.5)
    };
    Experiment {
        name: "ranking".into(),
        variants: vec![Variant::new("hybrid", 0.5), trending],
    }
}

/// Each variant's online metrics, and each against the first by a two-proportion z test.
fn print_experiment(tally: &OnlineTally) {
    let Some((control, rest)) = tally.variants.split_first() else {
        return;
    };
    println!(
        "  experiment \"{}\" (users split by a stable hash; docs/experiments.md):",
        control.experiment
    );
    for v in &tally.variants {
        let c = &v.counts;
        println!(
            "    {:<9} HR@N {:.3} over {} events on new items; {} of {} purchases converted ({:.1} %)",
            v.variant,
            c.hit_rate(),
            c.new_item_events,
            c.conversions,
            c.purchases,
            100.0 * c.conversion_rate()
        );
    }
    let trials = |c: &OnlineCounts| (c.hits, c.new_item_events);
    for v in rest {
        let z = two_proportion_z(trials(&control.counts), trials(&v.counts));
        let verdict = if z.abs() > 1.96 {
            "significant at 5 %"
        } else {
            "not significant"
        };
        println!(
            "    {} against {}: HR@N z = {z:.1} ({verdict})",
            v.variant, control.variant
        );
    }
}

fn print_summary(report: &RunReport, total: u64, coalescing_ms: u64) {
    let stats = &report.stats();
    let seconds = report.elapsed.as_secs_f64();
    println!("\nsummary after {seconds:.1} s (including ~3 s of consumer-group join):");
    println!(
        "  consumed {} of {total}; applied {}; duplicates {}; rejected {}",
        stats.consumed,
        stats.applied,
        stats.duplicates,
        stats.rejected_total()
    );
    for (reason, count) in &stats.rejected {
        println!("    rejected {count:>5} × {reason}");
    }
    println!(
        "  published {} recommendation updates, {} similar-items updates, {} campaign triggers \
         (abandoned browsing and carts, returning shoppers, new favourite categories)",
        stats.recommendations, stats.similar_items, stats.triggers
    );
    let online = &stats.online.total;
    println!(
        "  online metrics (each event judged against the list its user was last shown): HR@N {:.3} \
         over {} events on items new to the user; {} of {} purchases converted, revenue {:.0} of {:.0}",
        online.hit_rate(),
        online.new_item_events,
        online.conversions,
        online.purchases,
        online.attributed_revenue,
        online.purchase_revenue
    );
    print_experiment(&stats.online);
    let l = &report.latency_us;
    if !l.is_empty() {
        let ms = |q: f64| l.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  event → acknowledged recommendation (coalesced per user over {coalescing_ms} ms): \
             p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            l.max() as f64 / 1000.0
        );
    }
    print_examples(report);
}

fn print_examples(report: &RunReport) {
    let mut users: Vec<(String, u64, &Engine)> = Vec::new();
    for engine in report.processors.iter().map(|p| p.engine()) {
        for id in (0..DEMO_USERS).map(|u| format!("u{u}")) {
            if let Some(state) = engine.user(&id) {
                users.push((id, state.profile.events(), engine));
            }
        }
    }
    users.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // The two most active shoppers of the hybrid variant, and the most active of trending.
    let variant = |user: &str, engine: &Engine| {
        let mut variants = engine.variants_of(user);
        variants.next().map_or(String::new(), |(_, v)| v.to_owned())
    };
    let mut quotas: [(&str, usize); 2] = [("hybrid", 2), ("trending", 1)];
    users.retain(|(user, _, engine)| {
        let of = variant(user, engine);
        match quotas.iter_mut().find(|(name, _)| *name == of) {
            Some((_, left)) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    });
    for (user, _, engine) in users {
        let user = user.as_str();
        let state = engine.user(user).expect("listed users exist");
        let recent: Vec<String> = state
            .profile
            .recent
            .iter()
            .rev()
            .take(5)
            .map(|r| format!("{} ({})", engine.item_id(r.item), r.strongest.as_str()))
            .collect();
        println!(
            "\n  {user} ({} variant): {} events; recent: {}",
            variant(user, engine),
            state.profile.events(),
            recent.join(", ")
        );
        for scored in engine.recommend(user, 5, &Default::default()) {
            println!(
                "    {:<8} score {:.3}  from {}",
                engine.item_id(scored.item),
                scored.score,
                scored.sources.names().join("+")
            );
        }
    }
}
