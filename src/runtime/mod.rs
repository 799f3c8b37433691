//! The service's runtime apart from the Kafka adapter: `run`'s wiring point (`service`) and what
//! `run` and `replay` share around the engine (`checkpoint`).

pub mod checkpoint;
mod service;

pub use service::run;
