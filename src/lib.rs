//! streamrec: real-time recommendations from shop event streams.
//!
//! # Layout
//! The core is the sans-IO engine, its own crate ([`streamrec_engine`], re-exported here
//! module by module): cleaning, learning and ranking as a deterministic state machine. This
//! crate is the service around it:
//!
//! - `formats`: dataset and catalog readers, and loading a history (`produce`).
//! - [`pipeline`]: one input message → the outputs it causes, with `coalesce` (one update per
//!   key per interval) and `outputs` (payloads); [`offsets`] decides what may be committed;
//!   [`dead_letter`] makes every rejected input (and every refused output) publishable;
//!   `message` is what the core hands the edge to publish.
//! - [`store`]: engine state and the offsets it reflects in sled, one atomic batch a checkpoint
//!   (changed users only; users load on demand); `inspect` renders stored state for
//!   operators.
//! - `tools`: the demo and the benchmarks behind their commands.
//! - [`runtime`]: `run`'s wiring point ([`runtime::run`]: metrics, admin listener, state dir,
//!   then the Kafka loop) and the checkpoints `run` and `replay` share.
//! - [`kafka`]: the I/O edge — consumer, producer, the `run` loop, `replay`, the `produce`
//!   loader, the follower of other instances' item-model updates and the user-state changelog
//!   (written with checkpoints, read when a partition is assigned);
//!   `replay_plan` parses what a replay covers and `merge` orders partitions by time.
//! - [`fuzzing`]: entry points of the fuzz targets (`fuzz/`) for every decoder of others' bytes.
//! - [`admin`]: `run`'s HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//! - [`config`] and [`cli`]: settings and the command line; `config_layers` merges defaults,
//!   file, environment and flags; `main.rs` only calls [`cli::run`].
//!
//! Data flow: Kafka → `kafka::consume` → `pipeline::Processor` (`clean` → `Engine::apply`: `dedup` →
//! `profile`, `cooccurrence`, `factorization`, `popularity`; then `Engine::recommend` → `ranking`)
//! → outputs → Kafka, with offsets stored once outputs are acknowledged.

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub(crate) mod coalesce;
pub mod config;
pub(crate) mod config_layers;
pub mod dead_letter;
pub(crate) mod families;
pub(crate) mod formats;
pub mod fuzzing;
pub(crate) mod inspect;
pub(crate) mod item_metrics;
pub(crate) mod item_outbox;
pub(crate) mod items_config;
pub mod kafka;
pub(crate) mod merge;
pub(crate) mod message;
pub mod offsets;
pub(crate) mod online_metrics;
pub mod online_summary;
pub(crate) mod outputs;
pub mod pipeline;
pub mod query;
pub(crate) mod replay_plan;
pub mod runtime;
pub mod store;
pub(crate) mod tools;

pub use streamrec_engine::{
    canonical, catalog, clean, cooccurrence, decay, dedup, engine, eval, event, experiments,
    factorization, intern, neighbors, online, popularity, profile, ranking, rng, segments,
    similarity, synthetic, triggers,
};
pub use streamrec_engine::{Applied, Engine, Event, EventType};
