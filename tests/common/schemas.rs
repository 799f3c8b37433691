//! Every output message a real-broker test leaves in its topics, validated against the JSON
//! Schemas users validate with (`docs/schemas`, Draft 2020-12).

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::read_topic;

/// What an output topic carries.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    Recommendations,
    SimilarItems,
    DeadLetters,
    Triggers,
    OnlineMetrics,
}

impl Output {
    fn schema(self) -> &'static str {
        match self {
            Output::Recommendations => "recommendations.v1.json",
            Output::SimilarItems => "similar-items.v1.json",
            Output::DeadLetters => "dead-letter.headers.json",
            Output::Triggers => "trigger.v1.json",
            Output::OnlineMetrics => "online-metrics.v1.json",
        }
    }
}

fn validator(name: &str) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn partitions(brokers: &str, topic: &str) -> i32 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32)
}

/// Reads each topic to its end and validates every message against its kind's schema (a dead
/// letter's headers; the others' JSON values). Returns how many messages were checked.
pub fn validate_topics(brokers: &str, topics: &[(&str, Output)]) -> usize {
    let mut checked = 0;
    for &(topic, kind) in topics {
        let schema = validator(kind.schema());
        let count = partitions(brokers, topic);
        if count == 0 {
            continue; // never written: nothing to check
        }
        let read = read_topic(brokers, topic, count, usize::MAX, Duration::from_secs(3));
        for message in read {
            let value = match kind {
                Output::DeadLetters => serde_json::to_value(&message.headers).unwrap(),
                _ => serde_json::from_slice(&message.payload)
                    .unwrap_or_else(|e| panic!("{topic}@{}: not JSON: {e}", message.offset)),
            };
            let errors: Vec<String> = schema.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{topic}/{}@{} breaks {}: {errors:?}\n{value}",
                message.partition,
                message.offset,
                kind.schema()
            );
            checked += 1;
        }
    }
    checked
}

/// `validate_topics` over the output topics of a config (the online metrics' when set).
pub fn validate_outputs_of(brokers: &str, kafka: &streamrec::config::KafkaConfig) -> usize {
    let mut topics = vec![
        (
            kafka.recommendations_topic.as_str(),
            Output::Recommendations,
        ),
        (&kafka.similar_items_topic, Output::SimilarItems),
        (&kafka.dead_letter_topic, Output::DeadLetters),
        (&kafka.triggers_topic, Output::Triggers),
    ];
    if !kafka.online_metrics_topic.is_empty() {
        topics.push((&kafka.online_metrics_topic, Output::OnlineMetrics));
    }
    validate_topics(brokers, &topics)
}

/// `validate_topics` over the output topics a `tansu::state_config` named `name` writes.
pub fn validate_named(brokers: &str, name: &str) -> usize {
    let topic = |suffix: &str| format!("{name}-{suffix}");
    let (recs, similar, dead, triggers, online) = (
        topic("recs"),
        topic("similar"),
        topic("dead"),
        topic("triggers"),
        topic("online"),
    );
    validate_topics(
        brokers,
        &[
            (&recs, Output::Recommendations),
            (&similar, Output::SimilarItems),
            (&dead, Output::DeadLetters),
            (&triggers, Output::Triggers),
            (&online, Output::OnlineMetrics),
        ],
    )
}
