//! Campaign triggers on the engine directly: each rule fires exactly when it should, with its
//! cooldown, in event time (late and out-of-order events included).

use std::sync::Arc;

use streamrec::catalog::{CatalogItem, CatalogUpdate};
use streamrec::config::EngineConfig;
use streamrec::engine::Engine;
use streamrec::event::{Event, EventType, ProfileUpdate};
use streamrec::triggers::{Fired, Rules};

const T0: i64 = 1_700_000_000_000;
const MIN: i64 = 60_000;

fn engine(rules: &str) -> Engine {
    let mut engine = Engine::new(EngineConfig::default());
    engine.set_trigger_rules(Arc::new(Rules::parse(rules).unwrap()));
    engine
}

fn event(kind: EventType, user: &str, item: &str, ts_ms: i64) -> Event {
    Event::new(kind, user, item, ts_ms)
}

fn in_category(kind: EventType, user: &str, item: &str, category: &str, ts_ms: i64) -> Event {
    Event {
        category: Some(category.into()),
        ..Event::new(kind, user, item, ts_ms)
    }
}

/// Another shopper's event: it moves the engine's clock and nothing else of interest.
fn tick(engine: &mut Engine, ts_ms: i64) -> Vec<Fired> {
    let tick = event(EventType::View, "clock", &format!("tick-{ts_ms}"), ts_ms);
    engine.apply(&tick).effects.fired
}

fn apply(engine: &mut Engine, event: Event) -> Vec<Fired> {
    engine.apply(&event).effects.fired
}

/// The triggers a listing fired.
fn list(engine: &mut Engine, update: &CatalogUpdate) -> Vec<Fired> {
    engine.apply_catalog(update).effects.fired
}

const CART: &str = r#"
[[rule]]
name = "cart"
kind = "cart_abandonment"
window_ms = 600000
cooldown_ms = 3600000
"#;

#[test]
fn cart_abandonment_fires_when_the_clock_passes_the_window_without_a_purchase() {
    let mut e = engine(CART);
    assert!(apply(&mut e, event(EventType::AddToCart, "u1", "i1", T0)).is_empty());
    assert!(tick(&mut e, T0 + 10 * MIN - 1).is_empty(), "one ms early");
    let fired = tick(&mut e, T0 + 10 * MIN);
    assert_eq!(fired.len(), 1);
    let f = &fired[0];
    assert_eq!(
        (f.rule.as_str(), f.kind, f.user_id.as_str()),
        ("cart", "cart_abandonment", "u1")
    );
    assert_eq!(f.items, ["i1"]);
    assert_eq!(
        f.fired_at_ms,
        T0 + 10 * MIN,
        "the deadline, not the tick's time"
    );
    assert_eq!(f.evidence["carted_at"], T0);
    assert!(tick(&mut e, T0 + 60 * MIN).is_empty(), "fires once");
}

#[test]
fn a_purchase_in_time_cancels_the_cart_trigger_and_an_earlier_one_does_not() {
    let mut e = engine(CART);
    apply(&mut e, event(EventType::AddToCart, "u1", "i1", T0));
    apply(&mut e, event(EventType::Purchase, "u1", "i1", T0 + 5 * MIN));
    assert!(tick(&mut e, T0 + 20 * MIN).is_empty());

    // Out of order: a purchase stamped before the add-to-cart arrives after it.
    let mut e = engine(CART);
    apply(&mut e, event(EventType::AddToCart, "u2", "i2", T0));
    apply(&mut e, event(EventType::Purchase, "u2", "i2", T0 - MIN));
    assert_eq!(tick(&mut e, T0 + 10 * MIN).len(), 1);
}

#[test]
fn a_late_cart_whose_window_already_passed_fires_at_once_and_a_later_cart_restarts_the_wait() {
    let mut e = engine(CART);
    tick(&mut e, T0 + 30 * MIN);
    let fired = apply(&mut e, event(EventType::AddToCart, "u1", "i1", T0));
    assert_eq!(fired.len(), 1, "its deadline is behind the clock");
    assert_eq!(fired[0].fired_at_ms, T0 + 10 * MIN);

    let mut e = engine(CART);
    apply(&mut e, event(EventType::AddToCart, "u3", "i3", T0));
    apply(
        &mut e,
        event(EventType::AddToCart, "u3", "i3", T0 + 8 * MIN),
    );
    assert!(
        tick(&mut e, T0 + 12 * MIN).is_empty(),
        "the second add restarted it"
    );
    let fired = tick(&mut e, T0 + 18 * MIN);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].evidence["carted_at"], T0 + 8 * MIN);
}

#[test]
fn cooldown_holds_a_rule_per_user_and_ends() {
    let mut e = engine(CART);
    apply(&mut e, event(EventType::AddToCart, "u1", "a", T0));
    apply(&mut e, event(EventType::AddToCart, "u1", "b", T0 + MIN));
    apply(&mut e, event(EventType::AddToCart, "u2", "a", T0 + MIN));
    let fired = tick(&mut e, T0 + 11 * MIN);
    let who: Vec<(&str, &str)> = fired
        .iter()
        .map(|f| (f.user_id.as_str(), f.items[0].as_str()))
        .collect();
    assert_eq!(
        who,
        [("u1", "a"), ("u2", "a")],
        "u1's second cart is in the cooldown"
    );
    apply(
        &mut e,
        event(EventType::AddToCart, "u1", "c", T0 + 61 * MIN),
    );
    assert_eq!(tick(&mut e, T0 + 71 * MIN).len(), 1, "cooldown over");
}

const BROWSE: &str = r#"
[[rule]]
name = "browse"
kind = "browse_abandonment"
scope = "item"
min_views = 3
window_ms = 600000
quiet_ms = 300000
cooldown_ms = 60000
"#;

#[test]
fn browse_abandonment_needs_enough_views_in_the_window_then_a_quiet_period() {
    let mut e = engine(BROWSE);
    for minute in [0, 2, 4] {
        assert!(apply(
            &mut e,
            event(EventType::View, "u1", "i1", T0 + minute * MIN)
        )
        .is_empty());
    }
    assert!(
        tick(&mut e, T0 + 9 * MIN - 1).is_empty(),
        "quiet period not over"
    );
    let fired = tick(&mut e, T0 + 9 * MIN);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].items, ["i1"]);
    assert_eq!(fired[0].evidence["views"], 3);

    // Three views spread wider than the window, or only two: nothing.
    let mut e = engine(BROWSE);
    for minute in [0, 6, 12] {
        apply(
            &mut e,
            event(EventType::View, "u2", "i2", T0 + minute * MIN),
        );
    }
    apply(&mut e, event(EventType::View, "u3", "i3", T0));
    apply(&mut e, event(EventType::View, "u3", "i3", T0 + MIN));
    assert!(tick(&mut e, T0 + 60 * MIN).is_empty());
}

#[test]
fn a_purchase_or_another_view_during_the_quiet_period_changes_the_outcome() {
    let mut e = engine(BROWSE);
    for minute in [0, 1, 2] {
        apply(
            &mut e,
            event(EventType::View, "u1", "i1", T0 + minute * MIN),
        );
    }
    apply(&mut e, event(EventType::Purchase, "u1", "i1", T0 + 4 * MIN));
    assert!(tick(&mut e, T0 + 30 * MIN).is_empty(), "bought");

    let mut e = engine(BROWSE);
    for minute in [0, 1, 2, 6] {
        apply(
            &mut e,
            event(EventType::View, "u1", "i1", T0 + minute * MIN),
        );
    }
    assert!(
        tick(&mut e, T0 + 8 * MIN).is_empty(),
        "the fourth view moved the deadline"
    );
    let fired = tick(&mut e, T0 + 11 * MIN);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].evidence["last_view_at"], T0 + 6 * MIN);
    assert!(
        tick(&mut e, T0 + 60 * MIN).is_empty(),
        "the superseded deadline is void"
    );
}

#[test]
fn late_views_count_by_their_own_time() {
    let mut e = engine(BROWSE);
    apply(&mut e, event(EventType::View, "u1", "i1", T0 + 4 * MIN));
    apply(&mut e, event(EventType::View, "u1", "i1", T0 + 2 * MIN));
    apply(&mut e, event(EventType::View, "u1", "i1", T0));
    // A purchase from before the views, arriving late, does not end their wait.
    apply(&mut e, event(EventType::Purchase, "u1", "i1", T0 - MIN));
    let fired = tick(&mut e, T0 + 9 * MIN);
    assert_eq!(
        fired.len(),
        1,
        "three views within the window, whatever their order"
    );
    assert_eq!(fired[0].evidence["first_view_at"], T0);
}

#[test]
fn category_browse_abandonment_names_the_items_viewed() {
    let rules = BROWSE.replace("scope = \"item\"", "scope = \"category\"");
    let mut e = engine(&rules);
    for (minute, item) in [(0, "a"), (1, "b"), (2, "a")] {
        apply(
            &mut e,
            in_category(EventType::View, "u1", item, "shoes", T0 + minute * MIN),
        );
    }
    let fired = tick(&mut e, T0 + 8 * MIN);
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].items, ["a", "b"]);
}

#[test]
fn re_engagement_fires_on_return_with_fresh_recommendations() {
    let rules = r#"
[[rule]]
name = "back"
kind = "re_engagement"
inactive_ms = 86400000
items = 3
cooldown_ms = 1000
"#;
    let mut e = engine(rules);
    for (n, item) in ["a", "b", "c", "d"].iter().enumerate() {
        apply(&mut e, event(EventType::View, "other", item, T0 + n as i64));
    }
    assert!(
        apply(&mut e, event(EventType::View, "u1", "a", T0)).is_empty(),
        "new user"
    );
    assert!(apply(
        &mut e,
        event(EventType::View, "u1", "b", T0 + 23 * 60 * MIN)
    )
    .is_empty());
    assert!(
        apply(&mut e, event(EventType::View, "u1", "c", T0 + 10 * MIN)).is_empty(),
        "a late event is not a return"
    );
    let fired = apply(
        &mut e,
        event(EventType::View, "u1", "c", T0 + 47 * 60 * MIN),
    );
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].evidence["inactive_ms"], 24 * 60 * MIN);
    assert!(!fired[0].items.is_empty() && fired[0].items.len() <= 3);
}

#[test]
fn affinity_shift_fires_when_the_top_category_changes() {
    let rules = r#"
[[rule]]
name = "shift"
kind = "affinity_shift"
min_events = 4
cooldown_ms = 1000
"#;
    let mut e = engine(rules);
    let mut fired = Vec::new();
    for n in 0..3 {
        fired.extend(apply(
            &mut e,
            in_category(EventType::View, "u1", &format!("s{n}"), "shoes", T0 + n),
        ));
    }
    for n in 3..8 {
        fired.extend(apply(
            &mut e,
            in_category(EventType::Purchase, "u1", &format!("h{n}"), "hats", T0 + n),
        ));
    }
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].evidence["from_category"], "shoes");
    assert_eq!(fired[0].evidence["to_category"], "hats");
}

fn listing(item: &str, price: f64, in_stock: bool, updated_at_ms: i64) -> CatalogUpdate {
    CatalogUpdate::Upsert(CatalogItem {
        item_id: item.into(),
        category: "shoes".into(),
        price,
        in_stock,
        brand: None,
        tags: Vec::new(),
        updated_at_ms,
    })
}

const CATALOG_RULES: &str = r#"
[[rule]]
name = "drop"
kind = "price_drop"
min_drop_pct = 10.0
watch_ms = 3600000
cooldown_ms = 1000

[[rule]]
name = "restock"
kind = "back_in_stock"
watch_ms = 3600000
cooldown_ms = 1000
"#;

#[test]
fn price_drops_and_restocks_reach_recent_watchers_only() {
    let mut e = engine(CATALOG_RULES);
    e.apply_catalog(&listing("i1", 100.0, true, 1));
    apply(&mut e, event(EventType::View, "old", "i1", T0));
    apply(
        &mut e,
        event(EventType::AddToCart, "u1", "i1", T0 + 90 * MIN),
    );
    apply(&mut e, event(EventType::View, "u2", "other", T0 + 90 * MIN));

    assert!(
        list(&mut e, &listing("i1", 95.0, true, 2)).is_empty(),
        "a 5% drop is below the rule's 10%"
    );
    let fired = list(&mut e, &listing("i1", 80.0, true, 3));
    assert_eq!(
        fired.len(),
        1,
        "u1 carted it within the hour; 'old' viewed it too long ago"
    );
    assert_eq!(
        (fired[0].rule.as_str(), fired[0].user_id.as_str()),
        ("drop", "u1")
    );
    assert_eq!(fired[0].evidence["old_price"], 95.0);

    assert!(list(&mut e, &listing("i1", 80.0, false, 4)).is_empty());
    let fired = list(&mut e, &listing("i1", 80.0, true, 5));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].rule, "restock");
    assert!(
        list(&mut e, &listing("i1", 10.0, true, 4)).is_empty(),
        "an older version changes nothing"
    );
}

/// Item-owned scale-out: a process's workers defer their item side to the owners and share a
/// read model; the process follows the whole catalog into it (`apply_listing`), and each
/// worker fires the catalog triggers of its own users' views, once.
#[test]
fn with_deferred_item_work_each_worker_fires_for_its_own_watchers() {
    let config = EngineConfig::default();
    let rules = Arc::new(Rules::parse(CATALOG_RULES).unwrap());
    let mut workers = Engine::workers(&config, 2);
    for (worker, user) in workers.iter_mut().zip(["u0", "u1"]) {
        worker.defer_item_work(true);
        worker.set_trigger_rules(rules.clone());
        let viewed = worker.apply(&event(EventType::View, user, "i1", T0));
        assert!(
            viewed
                .effects
                .item_work
                .ops
                .iter()
                .all(|op| !matches!(op, streamrec::engine::ItemOp::Watch { .. })),
            "a view stays with the user's worker, not sent to the item's owner"
        );
    }
    let items = workers[0].shared_items();
    let change = |update: &CatalogUpdate| {
        let mut model = items.write().unwrap();
        streamrec::engine::apply_listing(&mut model, update, &config)
    };
    change(&listing("i1", 100.0, true, 1));
    let (item, dropped) = change(&listing("i1", 80.0, true, 2)).expect("a newer version");
    let fired: Vec<Vec<String>> = workers
        .iter_mut()
        .map(|w| w.listing_changed(item, &dropped, 2).fired)
        .map(|fired| fired.into_iter().map(|f| f.user_id).collect())
        .collect();
    assert_eq!(fired, [["u0"], ["u1"]]);
}

#[test]
fn user_attribute_filters_pick_the_users_a_rule_is_for() {
    let rules = CART.replace(
        "cooldown_ms = 3600000",
        "cooldown_ms = 3600000\nuser_attributes = { region = \"EU\" }",
    );
    let mut e = engine(&rules);
    for (user, region) in [("eu", "EU"), ("us", "US")] {
        e.apply_profile(&ProfileUpdate {
            user_id: user.into(),
            ts_ms: T0,
            attributes: vec![("region".into(), Some(region.into()))],
        });
        apply(&mut e, event(EventType::AddToCart, user, "i1", T0));
    }
    let fired = tick(&mut e, T0 + 10 * MIN);
    let users: Vec<&str> = fired.iter().map(|f| f.user_id.as_str()).collect();
    assert_eq!(users, ["eu"]);
}

#[test]
fn the_same_inputs_fire_the_same_trigger_ids_and_duplicates_fire_nothing() {
    let run = || {
        let mut e = engine(CART);
        apply(&mut e, event(EventType::AddToCart, "u1", "i1", T0));
        let mut duplicate = Event::new(EventType::AddToCart, "u1", "i1", T0);
        duplicate.event_id = None;
        assert!(apply(&mut e, duplicate).is_empty());
        tick(&mut e, T0 + 10 * MIN)
    };
    let (first, second) = (run(), run());
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].trigger_id, second[0].trigger_id);
    assert_eq!(first[0].trigger_id.len(), 32);
}

#[test]
fn pending_deadlines_survive_a_checkpoint() {
    let mut e = engine(CART);
    apply(&mut e, event(EventType::AddToCart, "u1", "i1", T0));
    let records = e.to_records();
    let mut restored = Engine::from_records(EngineConfig::default(), &records).unwrap();
    restored.set_trigger_rules(Arc::new(Rules::parse(CART).unwrap()));
    let fired = tick(&mut restored, T0 + 10 * MIN);
    assert_eq!(fired.len(), 1);
    assert_eq!(
        fired[0].trigger_id,
        tick(&mut e, T0 + 10 * MIN)[0].trigger_id
    );
}

#[test]
fn a_trigger_fired_by_a_stream_time_alone_is_in_the_next_checkpoint() {
    let mut e = engine(CART);
    apply(&mut e, event(EventType::AddToCart, "u1", "i1", T0));
    e.mark_checkpointed();
    // A partition restored from elsewhere moves the stream's time; no event is applied.
    let fired = e.advance_stream_time(0, T0 + 10 * MIN).fired;
    assert_eq!(fired.len(), 1);
    let changed: Vec<String> = e
        .to_changed_records()
        .users
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(changed, ["u1"], "the fired cooldown is state to write");
}
