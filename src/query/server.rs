//! The query API's HTTP listener: three endpoints (see `docs/openapi.json`), each request
//! checked (parameters, body size, token), bounded in number (`max_in_flight`, beyond which
//! a 503 comes at once) and in time (`timeout_ms`), answered by the worker that owns what
//! it reads (`routes`), and counted in `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{oneshot, Semaphore};

use super::job::{error, error_with, Ask, QueryJob, Reply};
use super::metrics::{DegradedLabel, EndpointLabel, ResponseLabel};
use super::params::{session_ask, similar_ask, user_ask, BadRequest, Limits};
use super::routes::{Degraded, Route, Routes};
use crate::admin::Metrics;
use crate::config::Config;

/// The header an answer carries when it may be less than the user's own (see `Degraded`).
pub const DEGRADED_HEADER: &str = "streamrec-degraded";

/// Every route the API serves, as `docs/openapi.json` lists them.
pub const ROUTES: [(&str, &str); 3] = [
    ("get", "/v1/users/{user_id}/recommendations"),
    ("post", "/v1/recommendations"),
    ("get", "/v1/items/{item_id}/similar"),
];

struct Api {
    routes: Arc<Routes>,
    limits: Limits,
    max_body_bytes: usize,
    token: Option<String>,
    timeout: Duration,
    in_flight: Semaphore,
    metrics: Arc<Metrics>,
}

/// Binds `query.listen` and serves until the runtime stops; returns the bound address (the
/// port is the system's choice when the setting says 0).
pub async fn serve(
    config: &Config,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
) -> std::io::Result<Option<SocketAddr>> {
    let Some(listen) = config.query.address() else {
        return Ok(None);
    };
    let query = &config.query;
    let api = Arc::new(Api {
        routes,
        limits: Limits {
            default_n: config.pipeline.top_n.min(query.max_n),
            max_n: query.max_n,
            max_items: query.max_items,
            max_id_len: config.engine.clean.max_id_len,
            max_attributes: config.engine.clean.max_attributes,
            max_attribute_len: config.engine.clean.max_attribute_len,
        },
        max_body_bytes: query.max_body_bytes,
        token: Some(query.token.clone()).filter(|t| !t.is_empty()),
        timeout: Duration::from_millis(query.timeout_ms),
        in_flight: Semaphore::new(query.max_in_flight),
        metrics,
    });
    let app = Router::new()
        .route(ROUTES[0].1, get(user_recommendations))
        .route(ROUTES[1].1, post(session_recommendations))
        .route(ROUTES[2].1, get(similar_items))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("query.listen {listen}: {e}")))?;
    let bound = listener.local_addr()?;
    tracing::info!(listen = %bound, "query listener: /v1/users/{{id}}/recommendations /v1/recommendations /v1/items/{{id}}/similar");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!(error = %err, "query listener stopped");
        }
    });
    Ok(Some(bound))
}

async fn user_recommendations(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    api.clone()
        .handle("user", &headers, async move {
            let Path(user_id) = path.map_err(bad_path)?;
            let ask = user_ask(&user_id, query.as_deref(), &api.limits).map_err(bad_request)?;
            let mut route = api.routes.user(&ask.user_id);
            if let (Some(owner), Some(target)) = (&mut route.redirect, uri.path_and_query()) {
                owner.push_str(target.as_str());
            }
            Ok((route, Ask::User(ask)))
        })
        .await
}

async fn session_recommendations(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    api.clone()
        .handle("session", &headers, async move {
            if let Some(query) = query.filter(|q| !q.is_empty()) {
                let detail = format!(
                    "takes no query parameters (got {query:?}); send them in the JSON body"
                );
                return Err(error_with(400, "bad_parameter", Some("query"), &detail));
            }
            let limit = api.max_body_bytes;
            let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
                let detail = format!("the body is larger than query.max_body_bytes ({limit})");
                error(413, "body_too_large", &detail)
            })?;
            let ask = session_ask(&bytes, &api.limits).map_err(bad_request)?;
            Ok((api.routes.any(), Ask::Session(ask)))
        })
        .await
}

async fn similar_items(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    api.clone()
        .handle("similar", &headers, async move {
            let Path(item_id) = path.map_err(bad_path)?;
            let (item_id, n) =
                similar_ask(&item_id, query.as_deref(), &api.limits).map_err(bad_request)?;
            Ok((api.routes.any(), Ask::Similar { item_id, n }))
        })
        .await
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let detail = format!("no endpoint {method} {}; see docs/openapi.json", uri.path());
    respond(error(404, "not_found", &detail), None)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let detail = format!(
        "{} does not take {method}; see docs/openapi.json",
        uri.path()
    );
    respond(error(405, "method_not_allowed", &detail), None)
}

fn bad_request(err: BadRequest) -> Reply {
    error_with(400, "bad_parameter", Some(&err.parameter), &err.rule)
}

fn bad_path(err: PathRejection) -> Reply {
    error(400, "bad_path", &err.body_text())
}

impl Api {
    /// Checks the token, takes a place among the requests in flight, reads the request
    /// (`read`: where it goes and what it asks, or the error answer), has its worker answer
    /// within the timeout, and counts the outcome.
    async fn handle(
        self: Arc<Self>,
        endpoint: &'static str,
        headers: &HeaderMap,
        read: impl std::future::Future<Output = Result<(Route, Ask), Reply>>,
    ) -> Response {
        let started = Instant::now();
        let (reply, degraded) = match self.authorized(headers) {
            Err(reply) => (reply, None),
            Ok(()) => match self.in_flight.try_acquire() {
                Err(_) => {
                    let detail = "too many requests in flight (query.max_in_flight); retry shortly";
                    (error(503, "overloaded", detail), None)
                }
                Ok(_permit) => match read.await {
                    Err(reply) => (reply, None),
                    Ok((
                        Route {
                            redirect: Some(location),
                            ..
                        },
                        _,
                    )) => {
                        self.count(endpoint, 307, None, started);
                        return redirect(&location);
                    }
                    Ok((route, ask)) => {
                        let degraded = route.degraded;
                        (self.ask(route, ask).await, degraded)
                    }
                },
            },
        };
        self.count(endpoint, reply.status, degraded, started);
        respond(reply, degraded)
    }

    fn authorized(&self, headers: &HeaderMap) -> Result<(), Reply> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(error(
                401,
                "unauthorized",
                "a valid bearer token is required (Authorization: Bearer …)",
            )),
        }
    }

    async fn ask(&self, route: Route, ask: Ask) -> Reply {
        let (reply, answered) = oneshot::channel();
        if self.routes.send(route, QueryJob { ask, reply }).is_err() {
            return error(
                503,
                "overloaded",
                "the worker's query queue is full; retry shortly",
            );
        }
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => error(503, "stopping", "the worker stopped before answering"),
            Err(_) => {
                let detail = format!(
                    "not answered within query.timeout_ms ({} ms)",
                    self.timeout.as_millis()
                );
                error(503, "timeout", &detail)
            }
        }
    }

    fn count(
        &self,
        endpoint: &'static str,
        status: u16,
        degraded: Option<Degraded>,
        started: Instant,
    ) {
        let metrics = &self.metrics.query;
        metrics
            .responses
            .get_or_create(&ResponseLabel { endpoint, status })
            .inc();
        let seconds = started.elapsed().as_secs_f64();
        metrics
            .seconds
            .get_or_create(&EndpointLabel { endpoint })
            .observe(seconds);
        if let Some(degraded) = degraded {
            let reason = degraded.as_str();
            metrics
                .degraded
                .get_or_create(&DegradedLabel { endpoint, reason })
                .inc();
        }
    }
}

fn respond(reply: Reply, degraded: Option<Degraded>) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response();
    if let Some(degraded) = degraded {
        let value = HeaderValue::from_static(degraded.as_str());
        response.headers_mut().insert(DEGRADED_HEADER, value);
    }
    response
}

/// Sends the caller to the instance that holds the user (307 keeps the method and the query).
fn redirect(location: &str) -> Response {
    let body = serde_json::json!({ "location": location }).to_string();
    let mut response = respond(
        Reply {
            status: 307,
            body: body.into_bytes(),
        },
        None,
    );
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::super::params::{session_ask, Limits, SIMILAR_PARAMETERS, USER_PARAMETERS};
    use super::ROUTES;

    fn document() -> serde_json::Value {
        serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap()
    }

    fn parameters(operation: &serde_json::Value, place: &str) -> Vec<String> {
        let all = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let here = all.iter().filter(|p| p["in"] == place);
        here.map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_and_parameters_served() {
        let doc = document();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
        let queries = [
            (ROUTES[0], &USER_PARAMETERS[..]),
            (ROUTES[2], &SIMILAR_PARAMETERS[..]),
        ];
        for ((method, path), accepted) in queries {
            let operation = &doc["paths"][path][method];
            assert_eq!(parameters(operation, "query"), accepted, "{path}");
            let in_path: Vec<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_owned)
                .collect();
            assert_eq!(parameters(operation, "path"), in_path, "{path}");
        }
    }

    #[test]
    fn every_documented_session_field_is_accepted() {
        let doc = document();
        let schema = &doc["components"]["schemas"]["SessionRequest"]["properties"];
        let example = |field: &str| -> serde_json::Value {
            match field {
                "items" | "exclude" => serde_json::json!(["a"]),
                "attributes" => serde_json::json!({"region": "eu"}),
                "n" => serde_json::json!(3),
                "category" => serde_json::json!("tech"),
                "min_price" | "max_price" => serde_json::json!(5.0),
                other => panic!("no example for documented field {other}"),
            }
        };
        let body: serde_json::Map<String, serde_json::Value> = schema
            .as_object()
            .unwrap()
            .keys()
            .map(|field| (field.clone(), example(field)))
            .collect();
        let limits = Limits {
            default_n: 10,
            max_n: 100,
            max_items: 50,
            max_id_len: 128,
            max_attributes: 8,
            max_attribute_len: 64,
        };
        let bytes = serde_json::to_vec(&body).unwrap();
        session_ask(&bytes, &limits).expect("every documented field is accepted");
    }
}
