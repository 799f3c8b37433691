//! Outputs in Confluent's Schema Registry wire format (`kafka.schema_ids`), on a real broker
//! (Tansu) from a real `streamrec run`, read by Confluent's own JSON Schema deserializer
//! (confluent-kafka's Python `JSONDeserializer`, given our schema): the header it expects, and
//! a body valid by `docs/schemas`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use common::tansu::{start_run, terminate, Broker, PARTITIONS};
use common::{read_topic, unique, Read};

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

fn deserializer_present() -> bool {
    let import = "import confluent_kafka.schema_registry.json_schema";
    let present = Command::new("python3")
        .args(["-c", import])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install confluent-kafka[json,schemaregistry] (pip)"
        );
        eprintln!("SKIPPED: python3 with confluent_kafka's JSON Schema deserializer is absent");
    }
    present
}

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

fn send_views(brokers: &str, topic: &str) -> usize {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut sent = 0;
    for user in 0..4 {
        for (n, item) in ["a", "b", "c"].iter().enumerate() {
            let ts = T0 + (user * 10 + n as i64) * 1000;
            let json =
                format!(r#"{{"type":"view","user_id":"u{user}","item_id":"{item}","ts":{ts}}}"#);
            let key = format!("u{user}");
            producer
                .send(BaseRecord::to(topic).key(&key).payload(&json))
                .unwrap();
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    sent
}

fn header(id: u32) -> Vec<u8> {
    let mut header = vec![0];
    header.extend(id.to_be_bytes());
    header
}

#[test]
#[ignore = "needs the Tansu broker: set STREAMREC_TANSU (.ci/run does)"]
fn outputs_framed_for_the_schema_registry_read_with_confluents_deserializer() {
    if !deserializer_present() {
        return;
    }
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let names = ["events", "recs", "similar", "dead", "triggers", "online"].map(unique);
    let [input, recs, similar, dead, triggers, online] = &names;
    for topic in &names {
        broker.create_topic(topic);
    }
    let config = dir.path().join("streamrec.toml");
    let group = unique("group");
    let text = format!(
        r#"
[kafka]
brokers = "{}"
group_id = "{group}"
input_topics = ["{input}"]
recommendations_topic = "{recs}"
similar_items_topic = "{similar}"
dead_letter_topic = "{dead}"
triggers_topic = "{triggers}"
online_metrics_topic = "{online}"
instance_id = "a"
session_timeout_ms = 6000
[kafka.schema_ids]
recommendations = {RECOMMENDATIONS_ID}
similar_items = {SIMILAR_ITEMS_ID}
online_metrics = {ONLINE_METRICS_ID}
[pipeline]
min_update_interval_ms = 0
"#,
        broker.address
    );
    std::fs::write(&config, text).unwrap();
    let sent = send_views(&broker.address, input);
    let run = start_run(&config);
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
