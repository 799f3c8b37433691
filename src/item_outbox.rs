//! The user side's item-side work on its way to the items' owners (item-owned scale-out): work
//! collects here until it is due (`items.work_interval_ms`) or large (`items.max_batch_ops`),
//! then leaves as one `WorkBatch` per item partition with work. Each input whose work waits
//! holds one acknowledgement; when the work leaves in `k` batches, every one of them names the
//! input, so it holds `k - 1` more: its offset is committed only once all are acknowledged.

use crate::engine::{ItemModel, ItemWork, Position};
use crate::message::{Destination, Output};
use crate::offsets::Waiter;

/// Users' vectors (most of a batch's bytes at a high rank) waiting at most: with the ops
/// bound, a batch stays well below Kafka's default `message.max.bytes` (1 MB).
const MAX_VECTOR_BYTES: usize = 512 << 10;

pub struct ItemOutbox {
    work: ItemWork,
    /// One per input with work waiting, in the order they came.
    waiters: Vec<Waiter>,
    /// When the oldest waiting work came.
    since_ms: Option<i64>,
    interval_ms: i64,
    max_ops: usize,
    /// Partitions of the work topic: the item partitions.
    partitions: u32,
}

/// Work that left: the batches, and how many acknowledgements each of their inputs holds
/// beyond the one it held while its work waited.
#[derive(Debug, Default)]
pub struct Sent {
    pub outputs: Vec<Output>,
    pub more_holds: Vec<(Waiter, u32)>,
}

impl ItemOutbox {
    pub fn new(interval_ms: u64, max_ops: usize, partitions: u32) -> ItemOutbox {
        ItemOutbox {
            work: ItemWork::default(),
            waiters: Vec::new(),
            since_ms: None,
            interval_ms: interval_ms as i64,
            max_ops,
            partitions: partitions.max(1),
        }
    }

    /// Adds the work of the input at `at`; true when the input now waits for it (it had
    /// work). The batches say which input each op came from, so that an owner applies it once
    /// however often it is sent (a crash re-reads inputs whose work was delivered).
    pub fn add(&mut self, work: ItemWork, (waiter, at): (Waiter, Position), now_ms: i64) -> bool {
        if work.ops.is_empty() {
            return false;
        }
        self.work.append(work);
        self.work.mark_input(at);
        self.waiters.push(waiter);
        self.since_ms.get_or_insert(now_ms);
        true
    }

    /// Whether the work should leave now: it waited its interval, or it is large.
    pub fn due(&self, now_ms: i64) -> bool {
        self.full()
            || self
                .since_ms
                .is_some_and(|since| now_ms - since >= self.interval_ms)
    }

    pub fn full(&self) -> bool {
        let vector_bytes = self.work.vectors.len() * std::mem::size_of::<f32>();
        self.work.ops.len() >= self.max_ops || vector_bytes >= MAX_VECTOR_BYTES
    }

    /// The waiting work as batches named as `read` (the read model it was made against) names
    /// its items.
    pub fn take(&mut self, read: &ItemModel) -> Sent {
        self.since_ms = None;
        let waiters = std::mem::take(&mut self.waiters);
        if waiters.is_empty() {
            return Sent::default();
        }
        let batches = self.work.batches(read, self.partitions);
        self.work.clear();
        let more = batches.len().saturating_sub(1) as u32;
        let more_holds = match more {
            0 => Vec::new(),
            more => waiters.iter().map(|&waiter| (waiter, more)).collect(),
        };
        let outputs = batches
            .into_iter()
            .map(|(partition, batch)| Output {
                destination: Destination::ItemWork {
                    partition: partition as i32,
                },
                key: String::new(),
                payload: batch.encode(),
                headers: Vec::new(),
                waiters: waiters.clone(),
                cause_ts_ms: None,
            })
            .collect();
        Sent {
            outputs,
            more_holds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EngineConfig;
    use crate::engine::{Engine, WorkBatch};
    use crate::event::{Event, EventType};
    use crate::offsets::OffsetTracker;

    fn waiter(offset: i64) -> Waiter {
        Waiter {
            topic: 0,
            partition: 0,
            offset,
        }
    }

    fn input(offset: i64) -> (Waiter, Position) {
        let at = Position {
            stream: 0,
            seq: offset,
        };
        (waiter(offset), at)
    }

    /// A deferring engine's work for a user viewing `items` in turn, one input each.
    fn work_of(items: &[&str]) -> (Engine, Vec<ItemWork>) {
        let mut engine = Engine::new(EngineConfig::default());
        engine.defer_item_work(true);
        let work = (items.iter().enumerate())
            .map(|(n, item)| {
                let event = Event::new(EventType::View, "u", item, n as i64);
                engine.apply(&event).effects.item_work
            })
            .collect();
        (engine, work)
    }

    #[test]
    fn work_leaves_per_partition_and_each_input_holds_one_acknowledgement_per_batch() {
        let (engine, work) = work_of(&["a", "b", "c", "d", "e", "f"]);
        let mut outbox = ItemOutbox::new(100, 1_000_000, 8);
        let mut tracker = OffsetTracker::default();
        for (offset, work) in work.into_iter().enumerate() {
            let held = outbox.add(work, input(offset as i64), 0);
            assert!(held, "a view is work for its item");
            tracker.add(waiter(offset as i64), 1);
        }
        assert!(!outbox.due(99), "neither old nor large yet");
        assert!(outbox.due(100));
        let sent = outbox.take(&engine.shared_items().read().unwrap());
        let batches = sent.outputs.len();
        assert!(batches > 1, "six items over eight partitions");
        for (waiter, more) in sent.more_holds {
            assert_eq!(more as usize, batches - 1);
            tracker.hold(waiter, more);
        }
        for output in &sent.outputs[..batches - 1] {
            assert!(matches!(output.destination, Destination::ItemWork { .. }));
            WorkBatch::decode(&output.payload).expect("a batch decodes");
            output.waiters.iter().for_each(|&w| tracker.resolve(w));
        }
        assert!(
            tracker.take_advanced().is_empty(),
            "one batch unacknowledged"
        );
        sent.outputs[batches - 1]
            .waiters
            .iter()
            .for_each(|&w| tracker.resolve(w));
        assert_eq!(tracker.take_advanced().last().map(|a| a.1), Some(5));
        assert!(!outbox.due(1_000), "nothing waits");
    }

    #[test]
    fn large_work_is_due_at_once() {
        let (_, work) = work_of(&["a", "b", "c", "d", "e", "f", "g", "h"]);
        let mut outbox = ItemOutbox::new(60_000, 16, 4);
        let mut ops = 0;
        for (offset, work) in work.into_iter().enumerate() {
            ops += work.ops.len();
            outbox.add(work, input(offset as i64), 0);
            assert_eq!(outbox.full(), ops >= 16, "{ops} pieces of work");
        }
        assert!(outbox.due(0), "past 16 pieces of work: {ops}");
    }
}
