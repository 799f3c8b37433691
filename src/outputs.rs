//! Output payloads, as documented in `docs/schemas/`: recommendations and similar items as JSON.

use std::collections::BTreeMap;

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::ranking::Scored;
use crate::triggers::Fired;

pub const RECOMMENDATIONS_SCHEMA: &str = "streamrec.recommendations.v1";
pub const SIMILAR_ITEMS_SCHEMA: &str = "streamrec.similar-items.v1";
pub const TRIGGER_SCHEMA: &str = "streamrec.trigger.v1";

#[derive(Serialize)]
struct Trigger<'a> {
    schema: &'static str,
    trigger_id: &'a str,
    rule: &'a str,
    kind: &'static str,
    user_id: &'a str,
    items: &'a [String],
    fired_at: String,
    evidence: &'a serde_json::Value,
}

/// A fired campaign trigger; `fired_at` is the event time it fired at.
pub fn trigger_json(fired: &Fired) -> Vec<u8> {
    let payload = Trigger {
        schema: TRIGGER_SCHEMA,
        trigger_id: &fired.trigger_id,
        rule: &fired.rule,
        kind: fired.kind,
        user_id: &fired.user_id,
        items: &fired.items,
        fired_at: rfc3339(fired.fired_at_ms),
        evidence: &fired.evidence,
    };
    serde_json::to_vec(&payload).expect("plain structs serialise")
}

#[derive(Serialize)]
pub(crate) struct RecommendedItem {
    item_id: String,
    score: f32,
    sources: Vec<&'static str>,
}

#[derive(Serialize)]
struct Recommendations<'a> {
    schema: &'static str,
    user_id: &'a str,
    items: Vec<RecommendedItem>,
    generated_at: String,
    cause_event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Variants::is_empty")]
    variants: Variants<'a>,
}

/// Each experiment the user is in → their variant (none without experiments).
pub(crate) type Variants<'a> = BTreeMap<&'a str, &'a str>;

pub(crate) fn variants_of<'a>(engine: &'a Engine, user_id: &'a str) -> Variants<'a> {
    engine.variants_of(user_id).collect()
}

#[derive(Serialize)]
pub(crate) struct Neighbor {
    item_id: String,
    score: f32,
}

#[derive(Serialize)]
struct SimilarItems<'a> {
    schema: &'static str,
    item_id: &'a str,
    neighbors: Vec<Neighbor>,
    generated_at: String,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(epoch_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(epoch_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| epoch_ms.to_string())
}

/// A ranked list as published: each item's id, score and sources.
pub(crate) fn recommended_items(engine: &Engine, list: &[Scored]) -> Vec<RecommendedItem> {
    let ids = engine.item_ids(list.iter().map(|s| s.item));
    list.iter()
        .zip(ids)
        .map(|(s, item_id)| RecommendedItem {
            item_id,
            score: s.score,
            sources: s.sources.names(),
        })
        .collect()
}

/// Neighbours as published: each item's id and score.
pub(crate) fn neighbor_items(engine: &Engine, neighbors: &[(u32, f32)]) -> Vec<Neighbor> {
    let ids = engine.item_ids(neighbors.iter().map(|n| n.0));
    neighbors
        .iter()
        .zip(ids)
        .map(|(&(_, score), item_id)| Neighbor { item_id, score })
        .collect()
}

pub fn recommendations_json(
    engine: &Engine,
    user_id: &str,
    list: &[Scored],
    now_ms: i64,
    cause: Option<&str>,
) -> Vec<u8> {
    let payload = Recommendations {
        schema: RECOMMENDATIONS_SCHEMA,
        user_id,
        items: recommended_items(engine, list),
        generated_at: rfc3339(now_ms),
        cause_event_id: cause,
        variants: variants_of(engine, user_id),
    };
    serde_json::to_vec(&payload).expect("plain structs serialise")
}

pub fn similar_items_json(
    engine: &Engine,
    item_id: &str,
    neighbors: &[(u32, f32)],
    now_ms: i64,
) -> Vec<u8> {
    let payload = SimilarItems {
        schema: SIMILAR_ITEMS_SCHEMA,
        item_id,
        neighbors: neighbor_items(engine, neighbors),
        generated_at: rfc3339(now_ms),
    };
    serde_json::to_vec(&payload).expect("plain structs serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(1_714_564_800_123), "2024-05-01T12:00:00.123Z");
    }
}
