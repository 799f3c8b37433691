//! `/metrics` in both formats it serves, read by the Prometheus project's own Python parsers
//! (`prometheus_client`): each body parses under the format its content type names, and every
//! metric family comes out once, typed, with its samples. `.ci/run` installs the parsers; where
//! they are absent outside CI the test says it skipped.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use streamrec::admin::{Metrics, OPENMETRICS, PROMETHEUS_TEXT};
use streamrec::kafka::Health;
use streamrec::pipeline::Stats;

use common::python;

/// Prints each family as `name type samples`, parsed by the parser of `format`.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
for family in parse(sys.stdin.read()):
    print(family.name, family.type, len(family.samples))
"#;

fn parse(format: &str, body: &str) -> Vec<(String, String, usize)> {
    let mut child = Command::new("python3")
        .args(["-c", PARSE, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{format} parser: {stderr}\n{body}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().unwrap().to_owned();
            (name, kind, parts.next().unwrap().parse().unwrap())
        })
        .collect()
}

fn metrics_with_counts() -> Metrics {
    let topics = ["recs", "similar", "dead", "triggers", ""].map(String::from);
    // An experiment's variants have series of their own.
    let arms = [("blend", "a"), ("blend", "b")].map(|(e, v)| (e.to_owned(), v.to_owned()));
    let metrics = Metrics::new(topics, &arms);
    let mut stats = Stats {
        consumed: 10,
        applied: 7,
        recommendations: 5,
        ..Stats::default()
    };
    stats.rejected.insert("not_json".into(), 3);
    metrics.record(&stats, &Health::default());
    metrics.count_refused("dead", "msg_size_too_large");
    metrics.count_consumer_error("NotImplemented");
    metrics
}

#[test]
fn each_format_parses_with_its_own_parser_and_every_family_once() {
    if !python::module_present("prometheus_client", "prometheus-client") {
        return;
    }
    let metrics = metrics_with_counts();
    for (accept, content_type, parser) in [
        (
            Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
            OPENMETRICS,
            "openmetrics",
        ),
        (
            Some("text/plain;version=0.0.4"),
            PROMETHEUS_TEXT,
            "prometheus",
        ),
        (None, PROMETHEUS_TEXT, "prometheus"),
    ] {
        let (served_as, body) = metrics.negotiate(accept);
        assert_eq!(served_as, content_type, "for Accept {accept:?}");
        let families = parse(parser, &body);
        let names: Vec<&str> = families.iter().map(|f| f.0.as_str()).collect();
        // Lag has a sample per consumed partition; here none is, and parsers skip empty families.
        let mut expected: Vec<&str> = metrics
            .families()
            .iter()
            .map(String::as_str)
            .filter(|&name| name != "streamrec_consumer_lag")
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(sorted, expected, "{parser}: one family per metric");
        for (name, kind, samples) in &families {
            assert_ne!(kind, "unknown", "{parser}: {name} lost its type");
            assert!(*samples > 0, "{parser}: {name} has no samples");
        }
        let consumed = families
            .iter()
            .find(|f| f.0 == "streamrec_events_consumed")
            .unwrap();
        assert_eq!((consumed.1.as_str(), consumed.2), ("counter", 1));
    }
}
