//! Inputs in a shop's own names (`engine.clean.field_names`, `engine.clean.event_types`).

use super::Cleaner;
use crate::config::CleanConfig;
use crate::event::{EventType, FeedbackKind, Input};

const TS: i64 = 1_700_000_000_000;

fn shop_cleaner() -> Cleaner {
    let fields = [
        ("type", "eventType"),
        ("user_id", "userId"),
        ("item_id", "productId"),
        ("ts", "timestamp"),
        ("item_ids", "shownProductIds"),
    ];
    let types = [("view_item", "view"), ("product_list_view", "impression")];
    Cleaner::new(CleanConfig::with_shop_names(&fields, &types))
}

fn input(cleaner: &Cleaner, json: &str) -> Input {
    cleaner.clean_input(json.as_bytes(), Some(TS)).unwrap()
}

#[test]
fn an_event_in_the_shops_names_reads_as_ours() {
    let json =
        format!(r#"{{"eventType":"view_item","userId":42,"productId":"p1","timestamp":{TS}}}"#);
    let Input::Event(event) = input(&shop_cleaner(), &json) else {
        panic!("an event")
    };
    assert_eq!(event.kind, EventType::View);
    assert_eq!(
        (event.user_id.as_str(), event.item_id.as_str()),
        ("42", "p1")
    );
    assert_eq!(event.ts_ms, TS);
    let Err(rejection) =
        super::Cleaner::new(CleanConfig::default()).clean_input(json.as_bytes(), Some(TS))
    else {
        panic!("without the names it is refused")
    };
    assert_eq!(rejection.reason.code(), "missing_field:type");
}

#[test]
fn an_event_in_our_names_reads_as_before() {
    let json = format!(r#"{{"type":"purchase","user_id":"u","item_id":"i","ts":{TS},"price":3}}"#);
    let cleaner = shop_cleaner();
    let plain = Cleaner::new(CleanConfig::default());
    assert_eq!(input(&cleaner, &json), input(&plain, &json));
}

#[test]
fn where_a_message_holds_both_names_the_shops_wins_in_either_order() {
    let cleaner = shop_cleaner();
    for json in [
        format!(r#"{{"type":"view","user_id":"ours","userId":"shops","item_id":"i","ts":{TS}}}"#),
        format!(r#"{{"type":"view","userId":"shops","user_id":"ours","item_id":"i","ts":{TS}}}"#),
    ] {
        let Input::Event(event) = input(&cleaner, &json) else {
            panic!("an event")
        };
        assert_eq!(event.user_id, "shops", "{json}");
    }
}

#[test]
fn profile_updates_and_feedback_read_the_shops_names_too() {
    let cleaner = shop_cleaner();
    let profile = format!(
        r#"{{"eventType":"profile","userId":"u","timestamp":{TS},"attributes":{{"region":"north"}}}}"#
    );
    let Input::Profile(update) = input(&cleaner, &profile) else {
        panic!("a profile update")
    };
    assert_eq!(update.user_id, "u");
    let shown = format!(
        r#"{{"eventType":"product_list_view","userId":"u","timestamp":{TS},"shownProductIds":["a","b"]}}"#
    );
    let Input::Feedback(feedback) = input(&cleaner, &shown) else {
        panic!("feedback")
    };
    assert_eq!(
        feedback.kind,
        FeedbackKind::Impression {
            item_ids: vec!["a".into(), "b".into()]
        }
    );
}

#[test]
fn a_rejection_about_a_renamed_field_names_the_shops_name() {
    let json = format!(r#"{{"eventType":"view_item","productId":"p1","timestamp":{TS}}}"#);
    let rejection = shop_cleaner()
        .clean_input(json.as_bytes(), Some(TS))
        .unwrap_err();
    assert_eq!(rejection.reason.code(), "missing_field:user_id");
    assert!(
        rejection.detail.contains("\"userId\""),
        "{}",
        rejection.detail
    );
    let refused =
        format!(r#"{{"eventType":"refund","userId":"u","productId":"p1","timestamp":{TS}}}"#);
    let rejection = shop_cleaner()
        .clean_input(refused.as_bytes(), Some(TS))
        .unwrap_err();
    assert_eq!(rejection.reason.code(), "bad_type");
}

/// Names as a Segment-style collector nests them: fields inside `properties`.
fn nested_cleaner() -> Cleaner {
    let fields = [
        ("type", "event"),
        ("user_id", "userId"),
        ("item_id", "properties.product_id"),
        ("price", "properties.price"),
        ("ts", "timestamp"),
    ];
    let types = [("Product Viewed", "view")];
    Cleaner::new(CleanConfig::with_shop_names(&fields, &types))
}

#[test]
fn a_name_with_dots_is_a_path_into_nested_objects() {
    let json = r#"{"event":"Product Viewed","userId":"u1","timestamp":"2023-11-14T22:13:20Z",
        "properties":{"product_id":"p1","price":9.5,"name":"Shoe"},"context":{"ip":"10.0.0.1"}}"#;
    let cleaner = nested_cleaner();
    let event = cleaner.clean_json(json.as_bytes()).unwrap();
    assert_eq!(event.kind, EventType::View);
    assert_eq!(
        (event.user_id.as_str(), event.item_id.as_str()),
        ("u1", "p1")
    );
    assert_eq!(event.price, Some(9.5));
    let Input::Event(same) = input(&cleaner, json) else {
        panic!("an event")
    };
    assert_eq!(same, event);
}

#[test]
fn a_path_that_is_not_there_is_a_missing_field_named_by_its_path() {
    let cleaner = nested_cleaner();
    for json in [
        r#"{"event":"Product Viewed","userId":"u1","timestamp":1700000000000}"#,
        r#"{"event":"Product Viewed","userId":"u1","timestamp":1700000000000,"properties":7}"#,
        r#"{"event":"Product Viewed","userId":"u1","timestamp":1700000000000,"properties":{}}"#,
    ] {
        let rejection = cleaner.clean_json(json.as_bytes()).unwrap_err();
        assert_eq!(rejection.reason.code(), "missing_field:item_id", "{json}");
        assert!(
            rejection.detail.contains("\"properties.product_id\""),
            "{}",
            rejection.detail
        );
    }
}

#[test]
fn a_rejection_by_a_fields_rule_names_the_shops_name_too() {
    let cleaner = nested_cleaner();
    for (json, code, shop_name) in [
        (
            r#"{"event":"Product Viewed","userId":"u","timestamp":"yesterday","properties":{"product_id":"p"}}"#,
            "bad_timestamp",
            "\"timestamp\"",
        ),
        (
            r#"{"event":"Product Viewed","userId":"u","timestamp":1700000000000,"properties":{"product_id":"p","price":-2}}"#,
            "bad_price",
            "\"properties.price\"",
        ),
        (
            r#"{"event":"Refund","userId":"u","timestamp":1700000000000,"properties":{"product_id":"p"}}"#,
            "bad_type",
            "\"event\"",
        ),
    ] {
        let rejection = cleaner.clean_json(json.as_bytes()).unwrap_err();
        assert_eq!(rejection.reason.code(), code);
        assert!(rejection.detail.contains(shop_name), "{}", rejection.detail);
    }
}
