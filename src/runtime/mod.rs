//! The service's runtime pieces that are not Kafka's: what `run` and `replay` share around the
//! engine.

pub mod checkpoint;
