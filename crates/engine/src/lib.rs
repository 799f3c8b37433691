//! streamrec's engine: a deterministic state machine that learns from shop events and ranks
//! items. Sans-IO: it knows nothing of Kafka, files or clocks — time arrives with each event —
//! and its dependency tree has no async runtime, broker client, store or HTTP (CI checks).
//!
//! - [`event`]: the event model v1 (types and aliases); [`config`]: the engine's settings.
//! - [`clean`]: bytes → valid event, profile update or catalog listing, or a rejection with a
//!   stable reason code.
//! - [`dedup`]: exact duplicate detection in a window bounded by count and event time.
//! - [`profile`]: per-user history, purchases and category affinity, all bounded.
//! - [`rebuy`]: how often buyers re-buy, per category: which bought items may come back.
//! - [`cooccurrence`] on [`neighbors`] + [`similarity`]: item pair counts, cross-occurrence,
//!   bounded top-K neighbour lists.
//! - [`factorization`]: online SGD matrix factorisation with sampled negatives.
//! - [`popularity`]: decayed popularity and the trending list.
//! - [`catalog`]: listings (stock, price) and item attributes with per-attribute popular and new
//!   items; [`segments`]: trending per user segment. Both feed `ranking`'s content and segment
//!   candidates (cold start).
//! - [`ranking`]: candidates → blended score → filters → top-N.
//! - [`triggers`]: campaign trigger rules, evaluated in event time on the engine's state.
//! - [`feedback`]: impressions and dismissals per user: demotion and blocking, never learned.
//! - [`online`]: online metrics — each event judged against what its user was last shown;
//!   [`experiments`]: A/B variants of the ranking, users assigned by a stable hash.
//! - [`engine`]: ties the above into `apply(event)` / `recommend(user, n)` (plus
//!   `apply_profile`, `apply_catalog` and the fired triggers), split into item-side (shared) and
//!   user-side (per worker) state; `engine::ModelUpdate` replicates the item side between
//!   instances and `engine::PortableUser` moves a user between them.
//! - [`eval`]: prequential (test-then-learn) evaluation with a cold-start slice;
//!   [`synthetic`]: a seeded shopper stream for tests, benchmarks and the demo.
//! - [`state`]: the state types (item model, user state), below `engine` and `ranking`.
//! - [`chunked`]: vectors and queues shared copy-on-write in chunks (cheap checkpoint cuts).
//! - [`canonical`], [`decay`], [`intern`], [`rng`]: stable encodings, half-life decay, id
//!   interning, the seeded generator.

#![forbid(unsafe_code)]

pub mod canonical;
pub mod catalog;
pub mod changed;
pub mod chunked;
pub mod clean;
pub mod config;
pub mod cooccurrence;
pub mod decay;
pub mod dedup;
pub mod engine;
pub mod eval;
pub mod event;
pub mod experiments;
pub mod factorization;
pub mod feedback;
pub mod intern;
pub mod neighbors;
pub mod online;
pub mod popularity;
pub mod profile;
mod rank_key;
pub mod ranking;
pub mod rebuy;
pub mod rng;
pub mod segments;
pub mod similarity;
pub mod state;
pub mod synthetic;
pub mod triggers;

pub use engine::{Applied, Effects, Engine, Listed, Outcome};
pub use event::{Event, EventType};
