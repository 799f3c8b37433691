//! The JSON Schemas in docs/schemas describe what the code really produces and accepts.

use std::path::PathBuf;
use std::sync::Arc;

use streamrec::config::Config;
use streamrec::offsets::Waiter;
use streamrec::pipeline::{Destination, Output, Processor, Record};
use streamrec::synthetic::{ShopperConfig, Shoppers};
use streamrec::triggers::Rules;

/// Short windows, so a synthetic stream of a few minutes fires every kind.
const RULES: &str = r#"
[[rule]]
name = "browse"
kind = "browse_abandonment"
scope = "category"
min_views = 2
window_ms = 600000
quiet_ms = 1000
cooldown_ms = 1000

[[rule]]
name = "cart"
kind = "cart_abandonment"
window_ms = 1000
cooldown_ms = 1000

[[rule]]
name = "back"
kind = "re_engagement"
inactive_ms = 60000
items = 3
cooldown_ms = 1000

[[rule]]
name = "shift"
kind = "affinity_shift"
min_events = 3
cooldown_ms = 1000

[[rule]]
name = "drop"
kind = "price_drop"
min_drop_pct = 5.0
watch_ms = 864000000
cooldown_ms = 1

[[rule]]
name = "restock"
kind = "back_in_stock"
watch_ms = 864000000
cooldown_ms = 1
"#;

fn listing(item: &str, price: f64, in_stock: bool, updated_at: i64) -> Vec<u8> {
    serde_json::json!({
        "schema": "streamrec.item.v1", "item_id": item, "category": "c1", "price": price,
        "in_stock": in_stock, "brand": "acme", "tags": ["a", "b"], "updated_at": updated_at,
    })
    .to_string()
    .into_bytes()
}

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
    config.kafka.catalog_topic = "catalog".into();
    let mut processor = Processor::new(&config).with_rules(Arc::new(Rules::parse(RULES).unwrap()));
    let shop = ShopperConfig {
        users: 50,
        items: 300,
        ..ShopperConfig::default()
    };
    let events: Vec<_> = Shoppers::new(shop).take(2000).collect();
    let mut payloads: Vec<(&str, Vec<u8>)> = Vec::new();
    // Every item the shop has, listed; then price drops and restocks of the most viewed ones.
    for n in 0..300 {
        payloads.push(("catalog", listing(&format!("i{n}"), 10.0, n % 2 == 0, 1)));
    }
    payloads.extend(events.iter().map(|e| ("events", e.to_json().into_bytes())));
    for n in 0..300 {
        payloads.push(("catalog", listing(&format!("i{n}"), 8.0, true, 2)));
    }
    // A shopper who comes back after an hour away.
    let last = events.last().unwrap().ts_ms;
    for ts in [last, last + 3_600_000] {
        let view = format!(r#"{{"type":"view","user_id":"returning","item_id":"i1","ts":{ts}}}"#);
        payloads.push(("events", view.into_bytes()));
    }
    payloads.push(("events", b"nope".to_vec()));
    payloads.push((
        "events",
        br#"{"type":"view","user_id":"u","item_id":"i","ts":"yesterday"}"#.to_vec(),
    ));
    payloads.push((
        "events",
        br#"{"type":"view","user_id":["u"],"item_id":"i","ts":1}"#.to_vec(),
    ));
    let mut outputs = Vec::new();
    for (offset, (topic, payload)) in payloads.iter().enumerate() {
        let record = Record {
            source: Waiter {
                topic: 0,
                partition: 0,
                offset: offset as i64,
            },
            topic,
            key: None,
            payload: Some(payload),
            // Written as the events happen: the skew rule judges against this.
            timestamp_ms: serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v["ts"].as_i64()),
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
    let trigger = schema("trigger.v1.json");
    let mut seen = [0usize; 3];
    let mut kinds = std::collections::BTreeSet::new();
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
            Destination::ModelUpdates | Destination::ItemWork { .. } => {
                panic!("this processor neither replicates nor sends item work")
            }
            Destination::Triggers => {
                let value: serde_json::Value = serde_json::from_slice(&output.payload).unwrap();
                assert_valid(&trigger, &value);
                kinds.insert(value["kind"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(kinds.len(), 6, "every rule kind fired: {kinds:?}");
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
        // Integers as a serializer of doubles writes them: JSON Schema's `integer` takes them.
        r#"{"type":"buy","user_id":42.0,"item_id":7E1,"ts":1.7E12,"quantity":2.0}"#,
    ];
    let cleaner = streamrec::clean::Cleaner::new(Default::default());
    for text in accepted {
        assert!(cleaner.clean_json(text.as_bytes()).is_ok(), "{text}");
        assert_valid(&event, &serde_json::from_str(text).unwrap());
    }
    let refused = [
        r#"{"type":"refund","user_id":"u","item_id":"i","ts":1}"#,
        r#"{"type":"view","item_id":"i","ts":1}"#,
        r#"{"type":"view","user_id":"u","item_id":"i","ts":1,"price":-1}"#,
        r#"{"type":"view","user_id":"  ","item_id":"i","ts":1}"#,
        r#"{"type":"view","user_id":"u","item_id":"i","ts":1700000000000.5}"#,
        r#"{"type":"buy","user_id":"u","item_id":"i","ts":1,"quantity":1.5}"#,
    ];
    for text in refused {
        assert!(cleaner.clean_json(text.as_bytes()).is_err(), "{text}");
        assert!(
            !event.is_valid(&serde_json::from_str(text).unwrap()),
            "{text}"
        );
    }
}

/// `accepted` must pass both the cleaner (as `clean`) and the schema; `refused` neither.
fn check_contract(
    schema_name: &str,
    accepted: &[&str],
    refused: &[&str],
    clean: impl Fn(&[u8]) -> bool,
) {
    let validator = schema(schema_name);
    for text in accepted {
        assert!(clean(text.as_bytes()), "cleaner refused {text}");
        assert_valid(&validator, &serde_json::from_str(text).unwrap());
    }
    for text in refused {
        assert!(!clean(text.as_bytes()), "cleaner accepted {text}");
        assert!(
            !validator.is_valid(&serde_json::from_str(text).unwrap()),
            "schema accepted {text}"
        );
    }
}

#[test]
fn the_profile_schema_matches_the_cleaner() {
    let many: serde_json::Map<String, serde_json::Value> = (0..33)
        .map(|n| (format!("k{n}"), serde_json::Value::from("v")))
        .collect();
    let too_many = serde_json::json!({"type": "profile", "user_id": "u", "ts": 1_700_000_000_000i64, "attributes": many}).to_string();
    let long = format!(
        r#"{{"type":"profile","user_id":"u","ts":1700000000000,"attributes":{{"bio":"{}"}}}}"#,
        "x".repeat(200)
    );
    check_contract(
        "profile.v1.json",
        &[
            r#"{"type":"profile","user_id":"u1","ts":1700000000000,"attributes":{"region":"EU","age_band":"25-34","vip":true,"gone":null}}"#,
            r#"{"type":"profile","user_id":7,"ts":"2024-05-01T12:00:00Z","attributes":{}}"#,
            r#"{"type":"profile","user_id":7.0,"ts":1.7E12,"attributes":{}}"#,
        ],
        &[
            r#"{"type":"profile","user_id":"u1","ts":1700000000000}"#,
            r#"{"type":"profile","user_id":"u1","ts":1700000000000,"attributes":{"a":[1]}}"#,
            r#"{"type":"profile","user_id":"u1","ts":1700000000000,"attributes":"EU"}"#,
            &too_many,
            &long,
        ],
        |bytes| {
            let cleaner = streamrec::clean::Cleaner::new(Default::default());
            matches!(
                cleaner.clean_input(bytes, None),
                Ok(streamrec::event::Input::Profile(_))
            )
        },
    );
}

#[test]
fn the_item_schema_matches_the_cleaner() {
    let tags: Vec<String> = (0..33).map(|n| format!("t{n}")).collect();
    let too_many = serde_json::json!({"schema": "streamrec.item.v1", "item_id": "i", "category": "c", "price": 1, "in_stock": true, "tags": tags, "updated_at": 1}).to_string();
    check_contract(
        "item.v1.json",
        &[
            r#"{"schema":"streamrec.item.v1","item_id":"i1","category":"shoes","price":19.9,"in_stock":true,"brand":"acme","tags":["running"],"updated_at":"2024-05-01T12:00:00Z"}"#,
            r#"{"schema":"streamrec.item.v1","item_id":42,"category":7,"price":0,"in_stock":false,"updated_at":1700000000000}"#,
            r#"{"schema":"streamrec.item.v1","item_id":42.0,"category":7.0,"price":0,"in_stock":false,"updated_at":1.7E12}"#,
        ],
        &[
            r#"{"item_id":"i1","category":"shoes","price":1,"in_stock":true,"updated_at":1}"#,
            r#"{"schema":"streamrec.item.v2","item_id":"i1","category":"shoes","price":1,"in_stock":true,"updated_at":1}"#,
            r#"{"schema":"streamrec.item.v1","item_id":"i1","category":"shoes","price":-1,"in_stock":true,"updated_at":1}"#,
            r#"{"schema":"streamrec.item.v1","item_id":"i1","category":"shoes","price":1,"in_stock":"yes","updated_at":1}"#,
            r#"{"schema":"streamrec.item.v1","item_id":"i1","category":"shoes","price":1,"in_stock":true}"#,
            r#"{"schema":"streamrec.item.v1","item_id":"i1","category":"shoes","price":1,"in_stock":true,"tags":[1],"updated_at":1}"#,
            &too_many,
        ],
        |bytes| {
            let cleaner = streamrec::clean::Cleaner::new(Default::default());
            cleaner.clean_catalog(Some(bytes), None).is_ok()
        },
    );
}

fn headers_json(headers: &[(&str, String)]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(v.clone())))
        .collect();
    serde_json::Value::Object(map)
}

#[test]
fn the_feedback_schema_matches_the_cleaner() {
    let ids: Vec<String> = (0..101).map(|n| format!("i{n}")).collect();
    let too_many =
        serde_json::json!({"type": "impression", "user_id": "u", "ts": 1, "item_ids": ids})
            .to_string();
    check_contract(
        "feedback.v1.json",
        &[
            r#"{"type":"impression","user_id":"u1","ts":1700000000000,"item_ids":["i1",2,"i1"]}"#,
            r#"{"type":"dismiss","user_id":7,"ts":"2024-05-01T12:00:00Z","item_id":"i1"}"#,
            r#"{"type":"dismiss","user_id":"u1","ts":1700000000000,"item_id":"i1","category":true}"#,
            r#"{"type":"impression","user_id":1.0,"ts":1.7E12,"item_ids":[2.0,"i1"]}"#,
        ],
        &[
            r#"{"type":"impression","user_id":"u1","ts":1700000000000}"#,
            r#"{"type":"impression","user_id":"u1","ts":1700000000000,"item_ids":[]}"#,
            r#"{"type":"impression","user_id":"u1","ts":1700000000000,"item_ids":"i1"}"#,
            r#"{"type":"impression","user_id":"u1","ts":1700000000000,"item_ids":[""]}"#,
            r#"{"type":"dismiss","user_id":"u1","ts":1700000000000}"#,
            r#"{"type":"dismiss","user_id":"u1","ts":1700000000000,"item_id":"i1","category":"yes"}"#,
            r#"{"type":"dismiss","item_id":"i1","ts":1700000000000}"#,
            &too_many,
        ],
        |bytes| {
            let cleaner = streamrec::clean::Cleaner::new(Default::default());
            matches!(
                cleaner.clean_input(bytes, None),
                Ok(streamrec::event::Input::Feedback(_))
            )
        },
    );
}

/// Every reason code the cleaner has, and every refusal code the producer side can name, is a
/// valid `streamrec-reason`; truncated and replacement dead letters carry valid headers.
#[test]
fn every_dead_letter_the_code_can_make_matches_the_header_schema() {
    use streamrec::clean::Rejection;
    use streamrec::dead_letter::{refused_output, rejected_input, Origin, Refused};
    let validator = schema("dead-letter.headers.json");
    let source = Origin {
        topic: "events",
        waiter: Waiter::default(),
    };
    let fields = [
        "user_id",
        "item_id",
        "event_id",
        "attributes",
        "tags",
        "brand",
        "item_ids",
    ];
    for field in fields {
        for reason in streamrec::clean::Reason::every(field) {
            let detail = format!("{} {}", reason.code(), "…".repeat(1000));
            let dead = rejected_input(source, b"x", &Rejection { reason, detail }, 4096);
            assert_valid(&validator, &headers_json(&dead.headers));
        }
    }
    let too_large = Rejection {
        reason: streamrec::clean::Reason::PayloadTooLarge,
        detail: "10000 bytes, limit 4096".into(),
    };
    let big = rejected_input(source, &[b'x'; 10_000], &too_large, 4096);
    assert_valid(&validator, &headers_json(&big.headers));
    for code in [
        "msg_size_too_large",
        "record_list_too_large",
        "invalid_message_size",
        "corrupt_message",
        "invalid_record",
        "bad_message",
    ] {
        for destination in [Destination::DeadLetter, Destination::Recommendations] {
            let refused = Refused {
                destination,
                topic: "t".into(),
                key: "k".into(),
                payload: vec![b'x'; 10_000],
                headers: big.headers.clone(),
                waiters: vec![Waiter::default()],
                code: code.into(),
            };
            let replacement = refused_output(refused, &["events".to_owned()]).unwrap();
            assert_valid(&validator, &headers_json(&replacement.headers));
        }
    }
}

/// Ids and attributes are limited in characters, as the schemas' `maxLength` counts them: 128
/// "ü" (256 bytes) pass both, 129 pass neither.
#[test]
fn multi_byte_ids_and_attributes_at_the_limit_pass_schema_and_cleaner_alike() {
    let id = |n: usize| "ü".repeat(n);
    let event = |n: usize| {
        format!(
            r#"{{"type":"view","user_id":"{}","item_id":"i","ts":1700000000000}}"#,
            id(n)
        )
    };
    let profile = |n: usize| {
        format!(
            r#"{{"type":"profile","user_id":"u","ts":1700000000000,"attributes":{{"region":"{}"}}}}"#,
            id(n)
        )
    };
    let item = |n: usize| {
        format!(
            r#"{{"schema":"streamrec.item.v1","item_id":"{}","category":"c","price":1,"in_stock":true,"tags":["{}"],"updated_at":1}}"#,
            id(n),
            id(n)
        )
    };
    let input = |bytes: &[u8]| {
        let cleaner = streamrec::clean::Cleaner::new(Default::default());
        cleaner.clean_input(bytes, None).is_ok()
    };
    check_contract("event.v1.json", &[&event(128)], &[&event(129)], input);
    check_contract("profile.v1.json", &[&profile(128)], &[&profile(129)], input);
    check_contract("item.v1.json", &[&item(128)], &[&item(129)], |bytes| {
        let cleaner = streamrec::clean::Cleaner::new(Default::default());
        cleaner.clean_catalog(Some(bytes), None).is_ok()
    });
}
