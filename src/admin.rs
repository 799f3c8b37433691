//! The admin listener of `run`: `/metrics` (OpenMetrics text when the scraper's `Accept` asks
//! for it, as Prometheus does; the Prometheus text format 0.0.4 otherwise), `/healthz` (the
//! process answers) and `/readyz` (state loaded and partitions assigned). It exposes counters
//! and gauges only — never state, config or secrets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::item_metrics::ItemMetrics;
use crate::kafka::Health;
use crate::online_metrics::OnlineMetrics;
use crate::pipeline::Stats;
use crate::query::QueryMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub topic: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

/// Upper bounds (s) of the event-to-output histogram: milliseconds when caught up, up to an
/// hour during a catch-up or backlog, which is when operators look at it.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Every metric `run` reports. Counters follow the pipeline's `Stats` (summed over workers);
/// the rest are recorded where they happen.
pub struct Metrics {
    registry: Registry,
    consumed: Counter,
    applied: Counter,
    duplicates: Counter,
    already_applied: Counter,
    not_keyed_by_user: Counter,
    purchases_learned: Counter,
    rebuys_learned: Counter,
    restoring_partitions: Gauge,
    rejected: Family<ReasonLabel, Counter>,
    published: Family<TopicLabel, Counter>,
    /// Outputs a topic refused for what they were (a dead letter took each one's place).
    refused: Family<RefusalLabel, Counter>,
    /// Errors the input consumer returned in place of a message, by librdkafka's code.
    consumer_errors: Family<CodeLabel, Counter>,
    /// Dead letters published as a prefix of a larger input.
    truncated: Counter,
    /// Seconds from an event's Kafka timestamp to its recommendation's acknowledgement.
    pub event_to_output: Histogram,
    pub checkpoint_seconds: Histogram,
    pub checkpoint_bytes: Gauge,
    pub users_in_memory: Gauge,
    pub items: Gauge,
    /// `engine.max_items` (0: no cap), so an alert can fire before events are refused.
    pub max_items: Gauge,
    /// Users the state store holds, as of the last checkpoint.
    pub users_in_store: Gauge,
    /// Messages the producer holds: queued or sent and not yet acknowledged.
    pub producer_queue: Gauge,
    assigned_partitions: Gauge,
    /// Messages between the consumer's position and each partition's end, from librdkafka's
    /// statistics (every `statistics.interval.ms`).
    consumer_lag: Family<PartitionLabel, Gauge>,
    /// Item-owned scale-out's owners and follower count into these.
    pub items_side: ItemMetrics,
    pub query: QueryMetrics,
    online: OnlineMetrics,
    /// The totals last added to the counters.
    seen: Mutex<Stats>,
    /// Output topic names for `published`: recommendations, similar items, dead letters,
    /// triggers, model updates.
    topics: [String; 5],
    /// The registered metric families' full names.
    families: Vec<String>,
}

fn register<M: Metric + Clone>(
    registry: &mut Registry,
    families: &mut Vec<String>,
    name: &str,
    help: &str,
    metric: &M,
) {
    crate::families::add(&mut (registry, families), name, help, metric);
}

impl Metrics {
    /// `arms`: each experiment variant (experiment, variant) with series of its own.
    pub fn new(topics: [String; 5], arms: &[(String, String)]) -> Metrics {
        let mut metrics = Metrics {
            consumed: Counter::default(),
            applied: Counter::default(),
            duplicates: Counter::default(),
            already_applied: Counter::default(),
            not_keyed_by_user: Counter::default(),
            purchases_learned: Counter::default(),
            rebuys_learned: Counter::default(),
            restoring_partitions: Gauge::default(),
            rejected: Family::default(),
            published: Family::default(),
            refused: Family::default(),
            consumer_errors: Family::default(),
            truncated: Counter::default(),
            event_to_output: Histogram::new(LATENCY_BUCKETS.iter().copied()),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            checkpoint_bytes: Gauge::default(),
            users_in_memory: Gauge::default(),
            items: Gauge::default(),
            max_items: Gauge::default(),
            users_in_store: Gauge::default(),
            producer_queue: Gauge::default(),
            assigned_partitions: Gauge::default(),
            consumer_lag: Family::default(),
            items_side: ItemMetrics::default(),
            query: QueryMetrics::default(),
            online: OnlineMetrics::default(),
            seen: Mutex::default(),
            topics,
            registry: Registry::with_prefix("streamrec"),
            families: Vec::new(),
        };
        let m = &mut metrics;
        register(
            &mut m.registry,
            &mut m.families,
            "events_consumed",
            "Input messages consumed",
            &m.consumed,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "events_applied",
            "Events learned from",
            &m.applied,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "events_duplicate",
            "Events dropped as duplicates",
            &m.duplicates,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "inputs_already_applied",
            "Inputs skipped because their user's state (restored from the changelog) reflects them",
            &m.already_applied,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "inputs_not_keyed_by_user",
            "Inputs of a user whose message key is not their user_id (they may spread a user over partitions)",
            &m.not_keyed_by_user,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "purchases_learned",
            "Purchases learned since the state began (the base of the re-buy rates)",
            &m.purchases_learned,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "rebuys_learned",
            "Purchases learned that re-bought an item the buyer had bought before",
            &m.rebuys_learned,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "partitions_restoring",
            "Assigned partitions held until their users are restored from the changelog",
            &m.restoring_partitions,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "events_rejected",
            "Input messages sent to the dead letters, by reason",
            &m.rejected,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "outputs_published",
            "Output messages queued for publishing, by topic",
            &m.published,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "outputs_refused",
            "Outputs a topic refused for what they were (size, invalid record), by topic and code; a dead letter took each one's place",
            &m.refused,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "consumer_errors",
            "Errors the input consumer returned in place of a message, by librdkafka code; one that keeps growing is a partition the consumer cannot get past (see the log)",
            &m.consumer_errors,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "dead_letters_truncated",
            "Dead letters published as a prefix of a larger input (pipeline.dead_letter_max_bytes)",
            &m.truncated,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "event_to_output_seconds",
            "From an event's Kafka timestamp to its recommendation's acknowledgement",
            &m.event_to_output,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "checkpoint_seconds",
            "Checkpoint duration, encoding and writing",
            &m.checkpoint_seconds,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "checkpoint_bytes",
            "Bytes the latest checkpoint wrote",
            &m.checkpoint_bytes,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "users_in_memory",
            "Users held in memory",
            &m.users_in_memory,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "items",
            "Items known",
            &m.items,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "max_items",
            "The most items the model holds (engine.max_items; 0: no cap)",
            &m.max_items,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "users_in_store",
            "Users the state store holds, as of the last checkpoint",
            &m.users_in_store,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "producer_queue_messages",
            "Messages queued in the producer or awaiting the broker's acknowledgement",
            &m.producer_queue,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "assigned_partitions",
            "Input partitions this member holds",
            &m.assigned_partitions,
        );
        register(
            &mut m.registry,
            &mut m.families,
            "consumer_lag",
            "Messages between the consumer's position and the partition's end",
            &m.consumer_lag,
        );
        let items = m.items_side.register(&mut m.registry);
        m.families.extend(items);
        let query = m.query.register(&mut m.registry);
        m.families.extend(query);
        let online = m.online.register(&mut m.registry, arms);
        m.families.extend(online);
        metrics
    }

    /// Adds what the totals grew by since the last call.
    pub fn record(&self, total: &Stats, health: &Health) {
        let mut seen = self.seen.lock().expect("not poisoned");
        self.consumed.inc_by(total.consumed - seen.consumed);
        self.applied.inc_by(total.applied - seen.applied);
        self.duplicates.inc_by(total.duplicates - seen.duplicates);
        self.already_applied
            .inc_by(total.already_applied - seen.already_applied);
        self.not_keyed_by_user
            .inc_by(total.not_keyed_by_user - seen.not_keyed_by_user);
        self.purchases_learned.inc_by(
            total
                .purchases_learned
                .saturating_sub(seen.purchases_learned),
        );
        self.rebuys_learned
            .inc_by(total.rebuys_learned.saturating_sub(seen.rebuys_learned));
        self.truncated
            .inc_by(total.dead_letters_truncated - seen.dead_letters_truncated);
        let items = &self.items_side;
        (items.work_sent).inc_by(total.item_work_batches - seen.item_work_batches);
        (items.work_sent_bytes).inc_by(total.item_work_bytes - seen.item_work_bytes);
        self.restoring_partitions
            .set(health.restoring().len() as i64);
        self.online.record(&total.online, &seen.online);
        for (reason, &count) in &total.rejected {
            let before = seen.rejected.get(reason).copied().unwrap_or(0);
            self.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.clone(),
                })
                .inc_by(count - before);
        }
        let published = [
            (total.recommendations, seen.recommendations),
            (total.similar_items, seen.similar_items),
            (total.rejected_total(), seen.rejected_total()),
            (total.triggers, seen.triggers),
            (total.model_updates, seen.model_updates),
        ];
        for (topic, (now, before)) in self.topics.iter().zip(published) {
            if topic.is_empty() {
                continue; // an output that is off
            }
            self.published
                .get_or_create(&TopicLabel {
                    topic: topic.clone(),
                })
                .inc_by(now - before);
        }
        self.assigned_partitions
            .set(health.assigned_partitions() as i64);
        *seen = total.clone();
    }

    /// One output refused by `topic` with `code`.
    pub fn count_refused(&self, topic: &str, code: &str) {
        let label = RefusalLabel {
            topic: topic.to_owned(),
            code: code.to_owned(),
        };
        self.refused.get_or_create(&label).inc();
    }

    /// One error the input consumer returned in place of a message.
    pub fn count_consumer_error(&self, code: &str) {
        let label = CodeLabel {
            code: code.to_owned(),
        };
        self.consumer_errors.get_or_create(&label).inc();
    }

    /// Per-partition lag from librdkafka's statistics, for the partitions this member consumes.
    pub fn record_lag(&self, statistics: &rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (&partition, p) in &stats.partitions {
                // librdkafka reports -1 for partitions it does not consume, and a -1 partition
                // for the topic's unassigned messages.
                if partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                self.consumer_lag
                    .get_or_create(&PartitionLabel {
                        topic: topic.clone(),
                        partition,
                    })
                    .set(p.consumer_lag);
            }
        }
    }

    /// Every metric family's name (`streamrec_…`; counters get `_total` in the exposition).
    pub fn families(&self) -> &[String] {
        &self.families
    }

    /// The OpenMetrics text exposition (what `prometheus-client` encodes).
    pub fn exposition(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// The exposition in the format an `Accept` header asks for, with its content type:
    /// OpenMetrics when it names `application/openmetrics-text`, else Prometheus text 0.0.4.
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, String) {
        let openmetrics = self.exposition();
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (OPENMETRICS, openmetrics)
        } else {
            (PROMETHEUS_TEXT, prometheus_text(&openmetrics))
        }
    }
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as Prometheus text 0.0.4: a counter family is named after its `_total`
/// sample (a 0.0.4 parser would otherwise read a sample-less counter and an untyped
/// `…_total`), and the `# UNIT` and `# EOF` lines 0.0.4 does not have are left out.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| Some((prefix, line.strip_prefix(prefix)?)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                text.push_str(&format!("{prefix}{name}{total} {tail}"));
            }
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

struct Admin {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    state_loaded: Arc<AtomicBool>,
}

/// Binds `listen` and serves until the runtime stops; an error names the address.
pub async fn serve(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    state_loaded: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let admin = Arc::new(Admin {
        metrics,
        health,
        state_loaded,
    });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(admin);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("admin.listen {listen}: {e}")))?;
    tracing::info!(%listen, "admin listener: /metrics /healthz /readyz");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "admin listener stopped");
        }
    });
    Ok(())
}

async fn metrics_text(
    State(admin): State<Arc<Admin>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let (content_type, body) = admin.metrics.negotiate(accept);
    ([(header::CONTENT_TYPE, content_type)], body)
}

async fn ready(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    if !admin.state_loaded.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "state not loaded yet\n".into(),
        );
    }
    if admin.health.brokers_down() {
        let text = "every broker is unreachable; reconnecting (nothing is consumed or committed meanwhile)\n";
        return (StatusCode::SERVICE_UNAVAILABLE, text.to_owned());
    }
    let missing = admin.health.missing_topics();
    if !missing.is_empty() {
        let text = format!("consumed topics do not exist: {}\n", missing.join(", "));
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    let behind = admin.health.model_behind();
    if behind > 0 {
        let text =
            format!("restoring the item model: {behind} updates of other instances to apply\n");
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    let records = admin.health.records_behind();
    if records > 0 {
        let text =
            format!("reading the item read model: {records} records of the owners to install\n");
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    let listings = admin.health.catalog_behind();
    if listings > 0 {
        let text = format!("reading the catalog: {listings} listings to apply\n");
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    let owners = admin.health.owners_behind();
    if owners > 0 {
        let text = format!("item owners {owners} work batches behind (a partition just given is read from its start)\n");
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    let restoring = admin.health.restoring();
    if !restoring.is_empty() {
        let text = format!(
            "restoring partitions {restoring:?} from the changelog (the others are processed)\n"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    if admin.health.assigned_partitions() == 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no partitions assigned (group forming, or the brokers unreachable)\n".into(),
        );
    }
    (StatusCode::OK, "ready\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(["r", "s", "d", "t", "m"].map(String::from), &[])
    }

    fn bucket(exposition: &str, le: &str) -> u64 {
        let prefix = format!("streamrec_event_to_output_seconds_bucket{{le=\"{le}\"}} ");
        let line = exposition
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no bucket le={le} in\n{exposition}"));
        line.parse().unwrap()
    }

    #[test]
    fn latency_buckets_tell_minutes_of_catch_up_apart() {
        let metrics = metrics();
        metrics.event_to_output.observe(0.004);
        metrics.event_to_output.observe(7.0 * 60.0);
        let text = metrics.exposition();
        assert_eq!(bucket(&text, "0.005"), 1);
        assert_eq!(bucket(&text, "300.0"), 1, "seven minutes is above five");
        assert_eq!(bucket(&text, "600.0"), 2);
    }

    #[test]
    fn consumer_errors_are_counted_by_code() {
        let metrics = metrics();
        metrics.count_consumer_error("NotImplemented");
        metrics.count_consumer_error("NotImplemented");
        let text = metrics.exposition();
        let series = "streamrec_consumer_errors_total{code=\"NotImplemented\"} 2";
        assert!(text.lines().any(|l| l == series), "{text}");
    }
}
