//! The query API's metrics: answers by endpoint and status, and latency by endpoint.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::routes::Degraded;
use crate::families::add;

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
        for reason in Degraded::ALL.map(Degraded::as_str) {
            let endpoint = "user";
            let _ = self
                .degraded
                .get_or_create(&DegradedLabel { endpoint, reason });
        }
        let mut names = Vec::new();
        let mut to = (registry, &mut names);
        let help = "Query API answers by endpoint and HTTP status";
        add(&mut to, "query_responses", help, &self.responses);
        let help = "Query API latency from request to answer, by endpoint";
        add(&mut to, "query_seconds", help, &self.seconds);
        let help = "Query API answers marked degraded, by endpoint and reason";
        add(&mut to, "query_degraded", help, &self.degraded);
        let help = "Workers whose first keyed event was not where query.partitioner puts its key";
        add(
            &mut to,
            "query_partitioner_mismatches",
            help,
            &self.partitioner_mismatches,
        );
        names
    }
}
