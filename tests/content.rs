//! Catalog, content-based candidates and segments on the engine directly.

use streamrec::catalog::{CatalogItem, CatalogUpdate};
use streamrec::config::EngineConfig;
use streamrec::engine::Engine;
use streamrec::event::{Event, EventType, ProfileUpdate};
use streamrec::ranking::{Filters, Source};

const T0: i64 = 1_700_000_000_000;

fn listed(item: &str, category: &str, brand: &str, in_stock: bool, at: i64) -> CatalogUpdate {
    CatalogUpdate::Upsert(CatalogItem {
        item_id: item.into(),
        category: category.into(),
        price: 10.0,
        in_stock,
        brand: Some(brand.into()),
        tags: vec![format!("{category}-season")],
        updated_at_ms: at,
    })
}

fn recommended(engine: &Engine, user: &str) -> Vec<(String, Vec<&'static str>)> {
    engine
        .recommend(user, 20, &Filters::default())
        .iter()
        .map(|s| (engine.item_id(s.item), s.sources.names()))
        .collect()
}

fn ids<'a>(list: &'a [(String, Vec<&'static str>)]) -> Vec<&'a str> {
    list.iter().map(|(id, _)| id.as_str()).collect()
}

/// Shoppers who view `a` then `b`: `b` becomes `a`'s neighbour.
fn co_viewed(engine: &mut Engine) {
    for n in 0..20 {
        let user = format!("s{n}");
        engine.apply(&Event::new(EventType::View, &user, "a", T0 + n * 10));
        engine.apply(&Event::new(EventType::View, &user, "b", T0 + n * 10 + 1));
    }
}

#[test]
fn items_out_of_stock_or_removed_are_never_recommended() {
    let mut engine = Engine::new(EngineConfig::default());
    co_viewed(&mut engine);
    engine.apply(&Event::new(EventType::View, "u1", "a", T0 + 1_000));
    assert!(ids(&recommended(&engine, "u1")).contains(&"b"));

    engine.apply_catalog(&listed("b", "shoes", "acme", false, 1));
    assert!(
        !ids(&recommended(&engine, "u1")).contains(&"b"),
        "out of stock"
    );
    assert!(engine
        .similar_items(engine.item_index("a").unwrap(), 10)
        .is_empty());
    engine.apply_catalog(&listed("b", "shoes", "acme", true, 2));
    assert!(
        ids(&recommended(&engine, "u1")).contains(&"b"),
        "back in stock"
    );
    engine.apply_catalog(&CatalogUpdate::Remove {
        item_id: "b".into(),
    });
    assert!(!ids(&recommended(&engine, "u1")).contains(&"b"), "removed");
}

#[test]
fn a_new_item_nobody_touched_is_recommended_to_users_whose_taste_it_matches() {
    let mut engine = Engine::new(EngineConfig::default());
    for (item, category, brand) in [
        ("s1", "shoes", "acme"),
        ("s2", "shoes", "acme"),
        ("h1", "hats", "zed"),
    ] {
        engine.apply_catalog(&listed(item, category, brand, true, 1));
    }
    for n in 0..10 {
        engine.apply(&Event::new(EventType::View, &format!("x{n}"), "h1", T0 + n));
    }
    engine.apply(&Event::new(EventType::Purchase, "u1", "s1", T0 + 100));
    engine.apply_catalog(&listed("s-new", "shoes", "acme", true, 2));

    let list = recommended(&engine, "u1");
    let new = list
        .iter()
        .find(|(id, _)| id == "s-new")
        .expect("the new shoe");
    assert!(new.1.contains(&Source::Content.as_str()), "{list:?}");
    let position = |id: &str| ids(&list).iter().position(|i| *i == id);
    assert!(
        position("s-new") < position("h1"),
        "taste before popularity: {list:?}"
    );
}

#[test]
fn a_user_known_only_by_attributes_gets_what_trends_in_their_segment() {
    segment_trending_reaches_a_newcomer(Engine::new(EngineConfig::default()));
}

/// Item-owned scale-out: the item side goes to the owners as work, and segment trending (a list
/// across items, which no owner holds) stays with the process that saw the events.
#[test]
fn with_deferred_item_work_segment_trending_stays_with_the_users_process() {
    let mut engine = Engine::new(EngineConfig::default());
    engine.defer_item_work(true);
    segment_trending_reaches_a_newcomer(engine);
}

fn segment_trending_reaches_a_newcomer(mut engine: Engine) {
    let profile = |user: &str, region: &str| ProfileUpdate {
        user_id: user.into(),
        ts_ms: T0,
        attributes: vec![
            ("age_band".into(), Some("25-34".into())),
            ("region".into(), Some(region.into())),
        ],
    };
    for n in 0..30 {
        let (user, region, item) = if n % 3 == 0 {
            (format!("eu{n}"), "EU", "eu-item")
        } else {
            (format!("us{n}"), "US", "us-item")
        };
        engine.apply_profile(&profile(&user, region));
        engine.apply(&Event::new(EventType::Purchase, &user, item, T0 + n));
    }
    engine.apply_profile(&profile("newcomer", "EU"));
    let list = recommended(&engine, "newcomer");
    assert_eq!(list[0].0, "eu-item", "{list:?}");
    assert!(list[0].1.contains(&Source::Segment.as_str()));
    assert!(
        engine.user("newcomer").unwrap().attributes.len() == 2,
        "attributes are stored in the profile"
    );
}

#[test]
fn the_catalog_category_stands_in_for_events_without_one() {
    let mut engine = Engine::new(EngineConfig::default());
    engine.apply_catalog(&listed("s1", "shoes", "acme", true, 1));
    engine.apply(&Event::new(EventType::View, "u1", "s1", T0));
    let user = engine.user("u1").unwrap();
    assert_eq!(user.profile.categories.len(), 1);
}
