//! Wall time at the edge: what coalescing and `generated_at` use, and the event-to-output
//! latency histogram. The engine itself only knows event time.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

pub fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Microseconds from an event's Kafka timestamp to its recommendation's acknowledgement,
/// 1 µs to 1 h at 3 significant figures (longer waits saturate at an hour).
pub type Latency = Arc<Mutex<Histogram<u64>>>;

pub fn new_latency() -> Latency {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
    ))
}
