//! The JSON Schemas in docs/schemas describe what the code really produces and accepts.

use std::path::PathBuf;

use streamrec::config::Config;
use streamrec::offsets::Waiter;
use streamrec::pipeline::{Destination, Output, Processor, Record};
use streamrec::synthetic::{ShopperConfig, Shoppers};

fn schema(name: &str) -> jsonschema::Validator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_valid(validator: &jsonschema::Validator, value: &serde_json::Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{value}: {errors:?}");
}

/// Runs a synthetic stream plus bad inputs through the processor, with an update per event.
fn outputs() -> Vec<Output> {
    let mut config = Config::default();
    config.pipeline.min_update_interval_ms = 0;
    let mut processor = Processor::new(&config);
    let shop = ShopperConfig {
        users: 50,
        items: 300,
        ..ShopperConfig::default()
    };
    let mut payloads: Vec<Vec<u8>> = Shoppers::new(shop)
        .take(2000)
        .map(|e| e.to_json().into_bytes())
        .collect();
    payloads.push(b"nope".to_vec());
    payloads.push(br#"{"type":"view","user_id":"u","item_id":"i","ts":"yesterday"}"#.to_vec());
    payloads.push(br#"{"type":"view","user_id":["u"],"item_id":"i","ts":1}"#.to_vec());
    let mut outputs = Vec::new();
    for (offset, payload) in payloads.iter().enumerate() {
        let record = Record {
            source: Waiter {
                topic: 0,
                partition: 0,
                offset: offset as i64,
            },
            topic: "events",
            payload: Some(payload),
            timestamp_ms: Some(0),
        };
        outputs.extend(processor.process(&record, 1_700_000_000_000).outputs);
    }
    outputs
}

#[test]
fn every_output_matches_its_schema() {
    let recommendations = schema("recommendations.v1.json");
    let similar = schema("similar-items.v1.json");
    let dead_letter = schema("dead-letter.headers.json");
    let mut seen = [0usize; 3];
    for output in outputs() {
        match output.destination {
            Destination::Recommendations => {
                seen[0] += 1;
                assert_valid(
                    &recommendations,
                    &serde_json::from_slice(&output.payload).unwrap(),
                );
            }
            Destination::SimilarItems => {
                seen[1] += 1;
                assert_valid(&similar, &serde_json::from_slice(&output.payload).unwrap());
            }
            Destination::DeadLetter => {
                seen[2] += 1;
                let headers: serde_json::Map<String, serde_json::Value> = output
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.clone())))
                    .collect();
                assert_valid(&dead_letter, &serde_json::Value::Object(headers));
            }
        }
    }
    assert!(seen[0] > 1000 && seen[1] > 100, "{seen:?}");
    assert_eq!(seen[2], 3);
}

#[test]
fn the_event_schema_accepts_what_the_cleaner_accepts_and_produce_writes() {
    let event = schema("event.v1.json");
    for e in Shoppers::new(ShopperConfig::default()).take(200) {
        assert_valid(&event, &serde_json::from_str(&e.to_json()).unwrap());
    }
    let accepted = [
        r#"{"type":"PV","user_id":7,"item_id":" sku-1 ","ts":"2024-05-01T12:00:00Z"}"#,
        r#"{"type":"buy","user_id":"u","item_id":"i","ts":1700000000000,"price":0,"quantity":3,"extra":true}"#,
    ];
    let mut cleaner = streamrec::clean::Cleaner::new(Default::default());
    for text in accepted {
        assert!(cleaner.clean_json(text.as_bytes()).is_ok(), "{text}");
        assert_valid(&event, &serde_json::from_str(text).unwrap());
    }
    let refused = [
        r#"{"type":"refund","user_id":"u","item_id":"i","ts":1}"#,
        r#"{"type":"view","item_id":"i","ts":1}"#,
        r#"{"type":"view","user_id":"u","item_id":"i","ts":1,"price":-1}"#,
        r#"{"type":"view","user_id":"  ","item_id":"i","ts":1}"#,
    ];
    for text in refused {
        assert!(cleaner.clean_json(text.as_bytes()).is_err(), "{text}");
        assert!(
            !event.is_valid(&serde_json::from_str(text).unwrap()),
            "{text}"
        );
    }
}
