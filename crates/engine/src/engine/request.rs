//! Recommendations asked for at request time: a user's (optionally with the items they are
//! viewing now, such as the page's item), or an anonymous visitor's from the items of their
//! session, with request-time filters. A request reads the state and changes nothing.

use super::Engine;
use crate::event::EventType;
use crate::experiments::Treatment;
use crate::profile::Observation;
use crate::ranking::{self, Asker, Filters, PriceRange, Scored};
use crate::segments::segment_name;
use crate::state::{ItemModel, UserState, NO_CATEGORY};

/// What a request asks beyond the configured ranking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    pub n: usize,
    pub exclude_seen: bool,
    /// Only items of this category; a category no item has gives an empty list.
    pub category: Option<&'a str>,
    pub price: Option<PriceRange>,
    /// Item ids never to recommend (what the page already shows).
    pub exclude: &'a [String],
    /// Items the visitor views now, oldest first: the freshest seeds, never recommended.
    pub viewing: &'a [String],
}

/// Who asks.
#[derive(Clone, Copy, Debug)]
pub enum Visitor<'a> {
    User(&'a str),
    /// No id yet; their attributes (age band, region …) name their segment.
    Anonymous {
        attributes: &'a [(String, String)],
    },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Answer {
    pub items: Vec<Scored>,
    /// The user has state here (false for a stranger and an anonymous visitor).
    pub known_user: bool,
    /// Viewed or excluded ids the item model does not know (they are ignored).
    pub unknown_items: usize,
}

impl Engine {
    /// Ranks for a request. A known user's request with no filters, exclusions or viewed items
    /// gives the list `recommend` gives, which is what the published update holds.
    pub fn answer(&self, visitor: Visitor, request: &Request) -> Answer {
        let items = self.read();
        let user = match visitor {
            Visitor::User(id) => self.shard.users.get(id).map(|u| &**u),
            Visitor::Anonymous { .. } => None,
        };
        let known = |ids: &[String]| -> Vec<u32> {
            ids.iter().filter_map(|id| items.ids.get(id)).collect()
        };
        let (viewing, exclude) = (known(request.viewing), known(request.exclude));
        let mut answer = Answer {
            items: Vec::new(),
            known_user: user.is_some(),
            unknown_items: request.viewing.len() + request.exclude.len()
                - viewing.len()
                - exclude.len(),
        };
        let attribute = match request.category {
            None => None,
            Some(name) => match items.catalog.category_attribute(name) {
                Some(attribute) => Some(attribute),
                None => return answer,
            },
        };
        let excluded: Vec<u32> = exclude.into_iter().chain(viewing.iter().copied()).collect();
        // A user is ranked as their variants say; an anonymous visitor as configured.
        let treatment = match visitor {
            Visitor::User(id) => self.treatment(id),
            Visitor::Anonymous { .. } => Treatment::base(&self.config.ranking),
        };
        let filters = treatment.filters(&Filters {
            exclude_seen: request.exclude_seen,
            exclude_items: (!excluded.is_empty()).then_some(&excluded),
            attribute,
            price: request.price,
        });
        let now_ms = user
            .and_then(|u| self.shard.clocks.time(u.stream))
            .unwrap_or(items.latest_ts_ms);
        let attributes = match visitor {
            Visitor::Anonymous { attributes } => attributes,
            Visitor::User(_) => &[],
        };
        let (config, ranking, n) = (&self.config, &treatment.ranking, request.n);
        let rebuys = &self.shard.rebuys;
        answer.items = if viewing.is_empty() && attributes.is_empty() {
            let asker = Asker {
                user,
                now_ms,
                rebuys,
            };
            ranking::recommend(&items, asker, config, ranking, n, &filters)
        } else {
            let visitor = self.visitor_state(&items, user, (&viewing, attributes), now_ms);
            let asker = Asker {
                user: Some(&visitor),
                now_ms,
                rebuys,
            };
            ranking::recommend(&items, asker, config, ranking, n, &filters)
        };
        answer
    }

    /// The user's state (or an empty one with no factors) as it would be after viewing
    /// `viewing` now, with the segment an anonymous visitor's attributes name.
    fn visitor_state(
        &self,
        items: &ItemModel,
        user: Option<&UserState>,
        (viewing, attributes): (&[u32], &[(String, String)]),
        now_ms: i64,
    ) -> UserState {
        let config = &self.config;
        let mut state = match user {
            Some(user) => user.clone(),
            None => UserState {
                // MF knows nothing of a visitor: zero factors score every item 0.
                factors: vec![0.0; config.factorization.rank].into(),
                ..UserState::new("", now_ms, config)
            },
        };
        for &item in viewing {
            let category = items.category_of.get(item as usize).copied();
            let observation = Observation {
                item,
                kind: EventType::View,
                ts_ms: now_ms,
                weight: config.weights.of(EventType::View),
                category: category.filter(|&c| c != NO_CATEGORY),
            };
            state.profile.record(observation, &config.profile);
        }
        if !attributes.is_empty() {
            let mut named: Vec<(Box<str>, Box<str>)> = attributes
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect();
            named.sort();
            state.segment =
                segment_name(&named, &config.content).and_then(|name| items.segments.find(&name));
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{CatalogItem, CatalogUpdate};
    use crate::config::EngineConfig;
    use crate::event::Event;
    use crate::synthetic::{ShopperConfig, Shoppers};

    fn ids(engine: &Engine, answer: &Answer) -> Vec<String> {
        let items = answer.items.iter().map(|s| s.item);
        engine.item_ids(items)
    }

    fn sorted_ids(engine: &Engine, answer: &Answer) -> Vec<String> {
        let mut ids = ids(engine, answer);
        ids.sort();
        ids
    }

    fn list(engine: &mut Engine, item: &str, category: &str, price: f64) {
        engine.apply_catalog(&CatalogUpdate::Upsert(CatalogItem {
            item_id: item.into(),
            category: category.into(),
            price,
            in_stock: true,
            brand: None,
            tags: Vec::new(),
            updated_at_ms: 1,
        }));
    }

    /// Three shoppers view a phone, its case and its charger, and a shoe; the catalog lists all.
    fn shop() -> Engine {
        shop_with(EngineConfig::default())
    }

    fn shop_with(config: EngineConfig) -> Engine {
        let mut engine = Engine::new(config);
        for (item, category, price) in [
            ("phone", "tech", 500.0),
            ("case", "tech", 20.0),
            ("charger", "tech", 30.0),
            ("shoe", "fashion", 80.0),
        ] {
            list(&mut engine, item, category, price);
        }
        let mut ts = 1_000_000;
        for user in ["a", "b", "c"] {
            for item in ["phone", "case", "charger", "shoe"] {
                ts += 1000;
                engine.apply(&Event::new(EventType::View, user, item, ts));
            }
        }
        engine.apply(&Event::new(EventType::View, "d", "phone", ts + 1000));
        engine
    }

    fn request(n: usize) -> Request<'static> {
        Request {
            n,
            ..Request::default()
        }
    }

    #[test]
    fn a_plain_request_is_the_published_list_and_changes_nothing() {
        let mut engine = Engine::new(EngineConfig::default());
        let shoppers = ShopperConfig {
            users: 50,
            items: 200,
            ..ShopperConfig::default()
        };
        for event in Shoppers::new(shoppers).take(3000) {
            engine.apply(&event);
        }
        let before = engine.digest();
        for user in (0..50).map(|u| format!("u{u}")) {
            for exclude_seen in [false, true] {
                let filters = Filters {
                    exclude_seen,
                    ..Filters::default()
                };
                let asked = Request {
                    exclude_seen,
                    ..request(10)
                };
                let answer = engine.answer(Visitor::User(&user), &asked);
                assert_eq!(answer.items, engine.recommend(&user, 10, &filters));
                assert_eq!(answer.known_user, engine.has_user(&user), "{user}");
            }
        }
        assert_eq!(engine.digest(), before);
    }

    #[test]
    fn category_and_price_filters_hold_and_an_unknown_category_gives_nothing() {
        let engine = shop();
        let tech = Request {
            category: Some("tech"),
            ..request(10)
        };
        let answer = engine.answer(Visitor::User("d"), &tech);
        assert_eq!(sorted_ids(&engine, &answer), ["case", "charger", "phone"]);
        let cheap = Request {
            price: Some(PriceRange {
                min: 10.0,
                max: 50.0,
            }),
            ..request(10)
        };
        let answer = engine.answer(Visitor::User("d"), &cheap);
        assert_eq!(sorted_ids(&engine, &answer), ["case", "charger"]);
        let nothing = Request {
            category: Some("garden"),
            ..request(10)
        };
        let answer = engine.answer(Visitor::User("d"), &nothing);
        assert!(answer.items.is_empty() && answer.known_user);
    }

    #[test]
    fn a_narrow_category_finds_its_popular_items_beyond_the_usual_candidates() {
        // Trending holds the 2 most viewed items (tech ones), so fashion is not among them.
        let mut config = EngineConfig::default();
        config.popularity.trending_size = 2;
        let mut engine = shop_with(config);
        list(&mut engine, "boot", "fashion", 90.0);
        engine.apply(&Event::new(EventType::View, "z", "boot", 2_000_000));
        for (ts, item) in [(2_001_000, "case"), (2_002_000, "phone")] {
            engine.apply(&Event::new(EventType::View, "y", item, ts));
        }
        let plain = engine.answer(Visitor::User("nobody"), &request(10));
        assert!(!sorted_ids(&engine, &plain).contains(&"shoe".to_string()));
        let fashion = Request {
            category: Some("fashion"),
            ..request(10)
        };
        let stranger = engine.answer(Visitor::User("nobody"), &fashion);
        assert!(!stranger.known_user);
        assert_eq!(sorted_ids(&engine, &stranger), ["boot", "shoe"]);
    }

    #[test]
    fn excluded_and_viewed_items_are_never_recommended_and_viewing_seeds_the_list() {
        let engine = shop();
        let exclude = ["charger".to_string(), "not-an-item".to_string()];
        let asked = Request {
            exclude: &exclude,
            ..request(10)
        };
        let answer = engine.answer(Visitor::User("d"), &asked);
        assert!(!ids(&engine, &answer).contains(&"charger".to_string()));
        assert_eq!(answer.unknown_items, 1);

        let viewing = ["shoe".to_string()];
        let on_page = Request {
            viewing: &viewing,
            ..request(10)
        };
        let answer = engine.answer(Visitor::User("d"), &on_page);
        let names = ids(&engine, &answer);
        assert!(!names.contains(&"shoe".to_string()), "{names:?}");
        let plain = engine.answer(Visitor::User("d"), &request(10));
        assert_ne!(answer.items, plain.items, "the page's item seeds the list");
    }

    #[test]
    fn what_one_request_excludes_is_back_in_the_next() {
        let engine = shop();
        let before = engine.answer(Visitor::User("d"), &request(10));
        let exclude: Vec<String> = ids(&engine, &before).into_iter().take(2).collect();
        assert_eq!(exclude.len(), 2, "the plain list has items to exclude");
        let asked = Request {
            exclude: &exclude,
            exclude_seen: true,
            ..request(10)
        };
        let answer = engine.answer(Visitor::User("d"), &asked);
        let names = ids(&engine, &answer);
        assert!(
            exclude.iter().all(|item| !names.contains(item)),
            "{names:?}"
        );
        let after = engine.answer(Visitor::User("d"), &request(10));
        assert_eq!(after.items, before.items, "an item excluded once stays out");
    }

    #[test]
    fn an_anonymous_session_gets_its_items_neighbours() {
        let engine = shop();
        let session = ["phone".to_string()];
        let asked = Request {
            viewing: &session,
            exclude_seen: true,
            ..request(3)
        };
        let visitor = Visitor::Anonymous { attributes: &[] };
        let answer = engine.answer(visitor, &asked);
        assert!(!answer.known_user);
        let names = ids(&engine, &answer);
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(!names.contains(&"phone".to_string()));
        let cooc = crate::ranking::Source::Cooc;
        assert!(answer.items[0].sources.contains(cooc), "{names:?}");
    }
}
