//! streamrec: real-time recommendations from shop event streams.
//!
//! # Layout
//! The core is sans-IO: a deterministic state machine that learns from events and ranks items,
//! knowing nothing of Kafka, files or clocks (time arrives with each event). Edges feed it.
//!
//! - [`event`]: the event model v1 (types and aliases).
//! - [`clean`]: bytes → valid event, profile update or catalog listing, or a rejection with a
//!   stable reason code.
//! - [`dedup`]: exact duplicate detection in a window bounded by count and event time.
//! - [`profile`]: per-user history, purchases and category affinity, all bounded.
//! - [`cooccurrence`] on [`neighbors`] + [`similarity`]: item pair counts, cross-occurrence,
//!   bounded top-K neighbour lists.
//! - [`factorization`]: online SGD matrix factorisation with sampled negatives.
//! - [`popularity`]: decayed popularity and the trending list.
//! - [`catalog`]: listings (stock, price) and item attributes with per-attribute popular and new
//!   items; [`segments`]: trending per user segment. Both feed `ranking`'s content and segment
//!   candidates (cold start).
//! - [`ranking`]: candidates → blended score → filters → top-N.
//! - [`triggers`]: campaign trigger rules, evaluated in event time on the engine's state.
//! - [`engine`]: ties the above into `apply(event)` / `recommend(user, n)` (plus
//!   `apply_profile`, `apply_catalog` and the fired triggers), split into item-side (shared) and
//!   user-side (per worker) state; `engine::ModelUpdate` replicates the item side between
//!   instances and `engine::PortableUser` moves a user between them.
//! - [`synthetic`]: a seeded shopper stream for benchmarks and the demo.
//! - [`formats`] and [`eval`]: dataset and catalog readers and prequential evaluation with a
//!   cold-start slice (edges over the core).
//! - [`pipeline`]: one input message → the outputs it causes, with [`coalesce`] (one update per
//!   key per interval) and [`outputs`] (payloads); [`offsets`] decides what may be committed;
//!   [`dead_letter`] makes every rejected input (and every refused output) publishable;
//!   [`message`] is what the core hands the edge to publish.
//! - [`store`]: engine state and the offsets it reflects in sled, one atomic batch a checkpoint
//!   (changed users only; users load on demand); [`canonical`] keeps encodings stable,
//!   [`inspect`] renders stored state for operators, [`state_bench`] measures checkpoints and
//!   restarts, [`bench_instances`] measures several instances sharing the item model.
//! - [`kafka`]: the I/O edge — consumer, producer, the `run` loop, `replay`, the `produce`
//!   loader, the follower of other instances' item-model updates and the user-state changelog
//!   (written with checkpoints, read when a partition is assigned);
//!   [`replay`] parses what a replay covers and [`merge`] orders partitions by time.
//! - [`fuzzing`]: entry points of the fuzz targets (`fuzz/`) for every decoder of others' bytes.
//! - [`admin`]: `run`'s HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//! - [`config`] and [`cli`]: settings and the command line; [`config_layers`] merges defaults,
//!   file, environment and flags; `main.rs` only calls [`cli::run`].
//!
//! Data flow: Kafka → `kafka::run` → `pipeline::Processor` (`clean` → `Engine::apply`: `dedup` →
//! `profile`, `cooccurrence`, `factorization`, `popularity`; then `Engine::recommend` → `ranking`)
//! → outputs → Kafka, with offsets stored once outputs are acknowledged.

#![forbid(unsafe_code)]

pub mod admin;
pub mod bench;
pub mod bench_instances;
pub mod canonical;
pub mod catalog;
pub mod clean;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod config_layers;
pub mod cooccurrence;
pub mod dead_letter;
pub mod decay;
pub mod dedup;
pub mod demo;
pub mod engine;
pub mod eval;
pub mod event;
pub mod factorization;
pub mod formats;
pub mod fuzzing;
pub mod inspect;
pub mod intern;
pub mod kafka;
pub mod merge;
pub mod message;
pub mod neighbors;
pub mod offsets;
pub mod outputs;
pub mod pipeline;
pub mod popularity;
pub mod profile;
pub mod ranking;
pub mod replay;
pub mod rng;
pub mod segments;
pub mod similarity;
pub mod state_bench;
pub mod store;
pub mod synthetic;
pub mod triggers;

pub use engine::{Applied, Engine};
pub use event::{Event, EventType};
