//! Stream time per input stream (partition): the latest event time applied from it. A user's
//! deadlines and interest decay are judged by the time of their own stream, never another's —
//! as Kafka Streams keeps stream time per task — so a backlog or a replay on one partition
//! cannot age another's users. Item-side decay (popularity, pair weights) keeps one clock for
//! the whole item model: items are shared by every partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamClocks {
    times: BTreeMap<u64, i64>,
}

impl StreamClocks {
    /// Moves `stream`'s time to `ts_ms` if later; returns the stream's time.
    pub fn advance(&mut self, stream: u64, ts_ms: i64) -> i64 {
        let time = self.times.entry(stream).or_insert(ts_ms);
        *time = (*time).max(ts_ms);
        *time
    }

    pub fn time(&self, stream: u64) -> Option<i64> {
        self.times.get(&stream).copied()
    }

    /// Every stream's time.
    pub fn times(&self) -> &BTreeMap<u64, i64> {
        &self.times
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stream_keeps_its_own_latest_time() {
        let mut clocks = StreamClocks::default();
        assert_eq!(clocks.advance(1, 100), 100);
        assert_eq!(clocks.advance(2, 10_000), 10_000);
        assert_eq!(
            clocks.advance(1, 50),
            100,
            "an out-of-order event does not go back"
        );
        assert_eq!(clocks.time(1), Some(100));
        assert_eq!(clocks.time(3), None);
    }
}
