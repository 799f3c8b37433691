//! A query as the worker that answers it sees it, and its answer: rendered on the worker, from
//! the state it owns, between two inputs (so an answer reflects every input the worker applied
//! before it, and no lock is taken on the event path).

use serde::Serialize;
use tokio::sync::oneshot;

use super::params::{SessionAsk, UserAsk, Wanted};
use crate::engine::{Answer, Engine, Request, Visitor};
use crate::outputs::{neighbor_items, recommended_items, rfc3339, Neighbor, RecommendedItem};

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
