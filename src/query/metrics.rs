//! The query API's metrics: answers by endpoint and status, and latency by endpoint.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabel {
    pub endpoint: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DegradedLabel {
    pub endpoint: &'static str,
    pub reason: &'static str,
}

/// The endpoints' names in the metrics' labels.
pub const ENDPOINTS: [&str; 3] = ["user", "session", "similar"];

fn latency_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

#[derive(Clone, Debug)]
pub struct QueryMetrics {
    /// Answers by endpoint and HTTP status (errors included).
    pub responses: Family<ResponseLabel, Counter>,
    /// Seconds from a request's arrival to its answer, by endpoint.
    pub seconds: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    /// Answers marked degraded, by endpoint and reason.
    pub degraded: Family<DegradedLabel, Counter>,
    /// Workers whose first keyed event was not where `query.partitioner` would put it.
    pub partitioner_mismatches: Counter,
}

impl Default for QueryMetrics {
    fn default() -> Self {
        QueryMetrics {
            responses: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            degraded: Family::default(),
            partitioner_mismatches: Counter::default(),
        }
    }
}

impl QueryMetrics {
    /// Registers the families; returns their names (as `/metrics` shows them).
    pub fn register(&self, registry: &mut Registry) -> Vec<String> {
        // Every endpoint's series from the start: parsers drop families without samples.
        for endpoint in ENDPOINTS {
            let _ = self.seconds.get_or_create(&EndpointLabel { endpoint });
            let status = 200;
            let _ = self
                .responses
                .get_or_create(&ResponseLabel { endpoint, status });
        }
        for reason in ["starting", "restoring", "not-owner"] {
            let endpoint = "user";
            let _ = self
                .degraded
                .get_or_create(&DegradedLabel { endpoint, reason });
        }
        registry.register(
            "query_responses",
            "Query API answers by endpoint and HTTP status",
            self.responses.clone(),
        );
        registry.register(
            "query_seconds",
            "Query API latency from request to answer, by endpoint",
            self.seconds.clone(),
        );
        registry.register(
            "query_degraded",
            "Query API answers marked degraded, by endpoint and reason",
            self.degraded.clone(),
        );
        registry.register(
            "query_partitioner_mismatches",
            "Workers whose first keyed event was not where query.partitioner puts its key",
            self.partitioner_mismatches.clone(),
        );
        let names = [
            "query_responses",
            "query_seconds",
            "query_degraded",
            "query_partitioner_mismatches",
        ];
        names
            .iter()
            .map(|name| format!("streamrec_{name}"))
            .collect()
    }
}
