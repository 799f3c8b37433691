//! A message to publish, as the core hands it to the edge: where it goes, its bytes, and the
//! input messages whose offsets wait for its acknowledgement.

use crate::offsets::Waiter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Recommendations,
    SimilarItems,
    DeadLetter,
    Triggers,
    ModelUpdates,
    /// Item-side work for the owners of one item partition (the topic partition it goes to).
    ItemWork {
        partition: i32,
    },
}

/// A message to publish, and the input messages that wait for its acknowledgement.
#[derive(Clone, Debug)]
pub struct Output {
    pub destination: Destination,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    pub waiters: Vec<Waiter>,
    pub cause_ts_ms: Option<i64>,
}
