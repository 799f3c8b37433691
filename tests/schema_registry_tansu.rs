//! Outputs in Confluent's Schema Registry wire format (`kafka.schema_ids`), on a real broker
//! (Tansu) from a real `streamrec run`, read by Confluent's own JSON Schema deserializer
//! (confluent-kafka's Python `JSONDeserializer`, given our schema): the header it expects, and
//! a body valid by `docs/schemas`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use streamrec::config::OutputSchemaIds;
use streamrec::kafka::produce_messages;
use streamrec::{Event, EventType};

use common::tansu::{start_run, terminate, Broker, PARTITIONS};
use common::{fresh_config, python, read_topic, unique, Read};

const T0: i64 = 1_700_000_000_000;
const RECOMMENDATIONS_ID: u32 = 11;
const SIMILAR_ITEMS_ID: u32 = 12;
const ONLINE_METRICS_ID: u32 = 14;

/// Reads `(schema file, hex payload)` lines and deserializes each as a consumer would.
const DESERIALIZE: &str = r#"
import sys
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import SerializationContext, MessageField
deserializers = {}
count = 0
for line in sys.stdin:
    schema, payload = line.split()
    if schema not in deserializers:
        deserializers[schema] = JSONDeserializer(open(schema).read())
    value = deserializers[schema](bytes.fromhex(payload), SerializationContext("t", MessageField.VALUE))
    assert value["schema"].startswith("streamrec."), value
    count += 1
print(count)
"#;

/// How many messages Confluent's deserializer read, each `(schema file, payload)`.
fn deserialized(messages: &[(&str, &[u8])]) -> usize {
    let schemas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas");
    let mut child = Command::new("python3")
        .args(["-W", "ignore", "-c", DESERIALIZE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for (schema, payload) in messages {
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(stdin, "{} {hex}", schemas.join(schema).display()).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the deserializer refused: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// Four users view three items each: (key, event v1 JSON).
fn views() -> Vec<(String, Vec<u8>)> {
    let view = |user: i64, n: usize, item: &str| {
        let ts = T0 + (user * 10 + n as i64) * 1000;
        let event = Event::new(EventType::View, &format!("u{user}"), item, ts);
        (event.user_id.clone(), event.to_json().into_bytes())
    };
    let items = ["a", "b", "c"];
    (0..4)
        .flat_map(|user| {
            items
                .iter()
                .enumerate()
                .map(move |(n, item)| view(user, n, item))
        })
        .collect()
}

fn header(id: u32) -> Vec<u8> {
    let mut header = vec![0];
    header.extend(id.to_be_bytes());
    header
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn outputs_framed_for_the_schema_registry_read_with_confluents_deserializer() {
    let deserializer = "confluent_kafka.schema_registry.json_schema";
    if !python::module_present(deserializer, "confluent-kafka[json,schemaregistry]") {
        return;
    }
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fresh_config(broker.address.clone());
    config.kafka.online_metrics_topic = unique("online");
    config.kafka.instance_id = "a".into();
    config.kafka.schema_ids = OutputSchemaIds {
        recommendations: RECOMMENDATIONS_ID,
        similar_items: SIMILAR_ITEMS_ID,
        triggers: 0,
        online_metrics: ONLINE_METRICS_ID,
    };
    config.pipeline.min_update_interval_ms = 0;
    let kafka = &config.kafka;
    let (input, recs, similar, online) = (
        &kafka.input_topics[0],
        &kafka.recommendations_topic,
        &kafka.similar_items_topic,
        &kafka.online_metrics_topic,
    );
    for topic in kafka.output_topics().into_iter().chain([input, online]) {
        broker.create_topic(topic);
    }
    let views = views();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let produced = produce_messages(kafka, input, &views, false, None);
    runtime.block_on(produced).unwrap();
    let sent = views.len();
    let path = dir.path().join("streamrec.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let run = start_run(&path);
    let quiet = Duration::from_secs(60);
    let updates = read_topic(&broker.address, recs, PARTITIONS, sent, quiet);
    let neighbours = read_topic(&broker.address, similar, PARTITIONS, 1, quiet);
    let printed = terminate(run);
    assert_eq!(updates.len(), sent, "an update per event: {printed}");
    assert!(!neighbours.is_empty(), "similar items: {printed}");
    // One at shutdown at least.
    let metrics = read_topic(&broker.address, online, PARTITIONS, 1, quiet);
    assert!(!metrics.is_empty(), "online metrics: {printed}");

    let framed = |reads: &[Read], id: u32| {
        for read in reads {
            let shown = String::from_utf8_lossy(&read.payload);
            assert_eq!(read.payload[..5], header(id), "not framed: {shown}");
        }
    };
    framed(&updates, RECOMMENDATIONS_ID);
    framed(&neighbours, SIMILAR_ITEMS_ID);
    framed(&metrics, ONLINE_METRICS_ID);
    let kinds = [
        (&updates, "recommendations.v1.json"),
        (&neighbours, "similar-items.v1.json"),
        (&metrics, "online-metrics.v1.json"),
    ];
    let mut messages: Vec<(&str, &[u8])> = Vec::new();
    for (reads, schema) in kinds {
        messages.extend(reads.iter().map(|r| (schema, &r.payload[..])));
    }
    assert_eq!(deserialized(&messages), messages.len());
}
