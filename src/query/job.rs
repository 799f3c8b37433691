//! A query as the worker that answers it sees it, and its answer: rendered on the worker, from
//! the state it owns, between two inputs (so an answer reflects every input the worker applied
//! before it, and no lock is taken on the event path).

use serde::Serialize;
use tokio::sync::oneshot;

use super::params::{SessionAsk, UserAsk, Wanted};
use crate::engine::{Answer, Engine, Request, Visitor};
use crate::outputs::{
    neighbor_items, recommended_items, rfc3339, variants_of, Neighbor, RecommendedItem, Variants,
};

#[derive(Clone, Debug, PartialEq)]
pub enum Ask {
    User(UserAsk),
    Session(SessionAsk),
    Similar { item_id: String, n: usize },
}

/// An HTTP status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A query on its way to a worker, with where its answer goes.
#[derive(Debug)]
pub struct QueryJob {
    pub ask: Ask,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Serialize)]
struct UserAnswer<'a> {
    user_id: &'a str,
    items: Vec<RecommendedItem>,
    known_user: bool,
    generated_at: String,
    #[serde(skip_serializing_if = "Variants::is_empty")]
    variants: Variants<'a>,
}

#[derive(Serialize)]
struct SessionAnswer {
    items: Vec<RecommendedItem>,
    unknown_items: usize,
    generated_at: String,
}

#[derive(Serialize)]
struct SimilarAnswer<'a> {
    item_id: &'a str,
    neighbors: Vec<Neighbor>,
    generated_at: String,
}

/// Answers `ask` from `engine`; `exclude_seen` is the pipeline's setting, so a plain user
/// query is the list the user's published update holds. A known user's answer is noted as
/// what they were shown (online metrics), as a published update is.
pub fn answer(engine: &mut Engine, ask: &Ask, exclude_seen: bool, now_ms: i64) -> Reply {
    let generated_at = rfc3339(now_ms);
    match ask {
        Ask::User(ask) => {
            let request = request(&ask.wanted, ask.context_item.as_slice(), exclude_seen);
            let found = engine.answer(Visitor::User(&ask.user_id), &request);
            // What the page shows the user now: their next events are judged against it.
            engine.show_at(&ask.user_id, &found.items, now_ms);
            ok(&UserAnswer {
                user_id: &ask.user_id,
                items: recommended_items(engine, &found.items),
                known_user: found.known_user,
                generated_at,
                variants: variants_of(engine, &ask.user_id),
            })
        }
        Ask::Session(ask) => {
            let request = request(&ask.wanted, &ask.items, exclude_seen);
            let visitor = Visitor::Anonymous {
                attributes: &ask.attributes,
            };
            let Answer {
                items,
                unknown_items,
                ..
            } = engine.answer(visitor, &request);
            ok(&SessionAnswer {
                items: recommended_items(engine, &items),
                unknown_items,
                generated_at,
            })
        }
        Ask::Similar { item_id, n } => match engine.item_index(item_id) {
            None => error(
                404,
                "unknown_item",
                &format!("item {item_id:?} is not in the item model"),
            ),
            Some(item) => ok(&SimilarAnswer {
                item_id,
                neighbors: neighbor_items(engine, &engine.similar_items(item, *n)),
                generated_at,
            }),
        },
    }
}

fn request<'a>(wanted: &'a Wanted, viewing: &'a [String], exclude_seen: bool) -> Request<'a> {
    Request {
        n: wanted.n,
        exclude_seen,
        category: wanted.category.as_deref(),
        price: wanted.price,
        exclude: &wanted.exclude,
        viewing,
    }
}

fn ok(body: &impl Serialize) -> Reply {
    Reply {
        status: 200,
        body: serde_json::to_vec(body).expect("plain structs serialise"),
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'a str>,
    detail: &'a str,
}

/// An error answer: a stable code, the parameter at fault if any, and what is wrong.
pub fn error(status: u16, code: &str, detail: &str) -> Reply {
    error_with(status, code, None, detail)
}

pub fn error_with(status: u16, code: &str, parameter: Option<&str>, detail: &str) -> Reply {
    let body = ErrorBody {
        error: code,
        parameter,
        detail,
    };
    Reply {
        status,
        body: serde_json::to_vec(&body).expect("plain structs serialise"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::event::{Event, EventType};
    use crate::experiments::{Experiment, Variant};
    use crate::outputs::recommendations_json;
    use crate::ranking::Filters;

    /// An experiment whose second variant ranks without the user's own history.
    fn engine_in_an_experiment() -> Engine {
        let mut off = Variant::new("off", 0.5);
        off.blend.history = Some(0.0);
        let config = EngineConfig {
            experiments: vec![Experiment {
                name: "history".into(),
                variants: vec![Variant::new("control", 0.5), off],
            }],
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config);
        for u in 0..20 {
            for (i, item) in ["a", "b", "c", "d"].iter().enumerate().skip(u % 3) {
                let event =
                    Event::new(EventType::View, &format!("u{u}"), item, (u * 10 + i) as i64);
                engine.apply(&event);
            }
        }
        engine
    }

    #[test]
    fn a_user_s_answer_names_their_variant_and_holds_their_published_items() {
        let mut engine = engine_in_an_experiment();
        let mut seen = std::collections::BTreeSet::new();
        for u in 0..20 {
            let user_id = format!("u{u}");
            let list = engine.recommend(&user_id, 10, &Filters::default());
            let published: serde_json::Value =
                serde_json::from_slice(&recommendations_json(&engine, &user_id, &list, 0, None))
                    .unwrap();
            let ask = Ask::User(UserAsk {
                user_id: user_id.clone(),
                wanted: Wanted {
                    n: 10,
                    category: None,
                    price: None,
                    exclude: Vec::new(),
                },
                context_item: None,
            });
            let reply = answer(&mut engine, &ask, false, 0);
            let answered: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(answered["items"], published["items"], "{user_id}");
            assert_eq!(answered["variants"], published["variants"], "{user_id}");
            let variant = answered["variants"]["history"].as_str().unwrap().to_owned();
            seen.insert(variant);
        }
        assert_eq!(seen.len(), 2, "both variants answered: {seen:?}");
    }
}
