//! The query API: recommendations at request time over HTTP/JSON, served by `run` from its
//! live state on a listener of its own (`query.listen`). A query is answered by the worker
//! that owns what it reads, between two of its inputs (`job`), routed by the user's partition
//! (`routes`, `partitioner`); `params` checks what a request asks, `server` serves it.

mod config;
pub mod job;
pub mod members;
mod metrics;
pub mod params;
pub mod partitioner;
pub mod routes;
pub mod server;

pub use config::QueryConfig;
pub use job::{answer, QueryJob};
pub use metrics::QueryMetrics;
pub use routes::{Queries, Routes};
