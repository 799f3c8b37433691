//! The service's runtime apart from the Kafka adapter: `run`'s wiring point (`service`),
//! what `run` and `replay` share around the engine (`checkpoint`), and the aligned checkpoint
//! rounds of `run`'s workers (`rounds`).

mod changelog;
pub mod checkpoint;
pub mod rounds;
mod service;

pub use service::run;
