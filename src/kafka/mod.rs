//! The Kafka edge: client settings, the live consume → process → publish loop (`consume`, wired
//! by `runtime::run`), replays, and the loader that puts datasets into a topic. All decisions
//! about messages live in `pipeline`.

mod carried_keys;
mod catalog_follower;
mod changelog;
mod checkpoint_round;
mod client;
mod context;
mod error;
mod follow;
mod health;
mod item_checkpoints;
mod item_owners;
mod item_records;
mod latency;
mod leave;
mod log_end;
mod members;
mod model_updates;
#[cfg(test)]
mod oidc_tests;
mod online_publisher;
mod owned_partitions;
mod position;
mod produce;
mod publisher;
mod replay;
mod replay_reader;
mod restore;
mod run;
mod sink;
mod worker;

pub use carried_keys::{parse_key as parse_dedup_record_key, CarriedKeys};
pub use changelog::PartitionPosition;
pub use client::{consumer_config, producer_config, replay_consumer_config};
pub use error::{ReplayError, Retry, RunError};
pub use health::Health;
pub use latency::{new_latency, wall_clock_ms, Latency};
pub use leave::shut_down_within_bound;
pub use produce::{produce, produce_messages, Loader, ProduceReport};
pub use replay::{replay, ReplayOptions, ReplayReport};
pub use run::{consume, Observers, Prepared, RunReport};
