//! Loading a history into a topic: what `run` will make of its event times, and moving it to
//! the present so that a years-old log is judged like a live stream.

use crate::clean::Cleaner;
use crate::config::CleanConfig;
use crate::event::Event;

/// Moves every event by the same amount so that the latest one happens at `end_ms`; gaps and
/// order are kept. Returns the shift in ms (0 for no events).
pub fn shift_to(events: &mut [Event], end_ms: i64) -> i64 {
    let Some(latest) = events.iter().map(|e| e.ts_ms).max() else {
        return 0;
    };
    let shift = end_ms.saturating_sub(latest);
    for event in events.iter_mut() {
        event.ts_ms = event.ts_ms.saturating_add(shift);
    }
    shift
}

/// Events `run` would reject as `bad_timestamp` when they are written at `written_ms`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TimePreview {
    pub rejected: usize,
    /// The first rejection's detail.
    pub example: Option<String>,
}

/// Applies the live time rules (`engine.clean.min_ts_ms`, and the future skew against the
/// time the messages are written) to events about to be produced.
pub fn preview_times(events: &[Event], clean: &CleanConfig, written_ms: i64) -> TimePreview {
    let cleaner = Cleaner::new(clean.clone());
    let mut preview = TimePreview::default();
    for event in events {
        if let Err(rejection) = cleaner.check_time(event.ts_ms, Some(written_ms)) {
            preview.rejected += 1;
            preview.example.get_or_insert(rejection.detail);
        }
    }
    preview
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;

    fn at(ts_ms: i64) -> Event {
        Event {
            event_id: None,
            kind: EventType::View,
            user_id: "u".into(),
            item_id: "i".into(),
            ts_ms,
            session_id: None,
            price: None,
            quantity: None,
            category: None,
        }
    }

    #[test]
    fn shifting_keeps_the_gaps_and_ends_at_the_given_time() {
        let mut events = vec![at(1_000), at(5_000), at(3_000)];
        assert_eq!(shift_to(&mut events, 100_000), 95_000);
        let times: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
        assert_eq!(times, [96_000, 100_000, 98_000]);
        assert_eq!(shift_to(&mut [], 1), 0);
    }

    #[test]
    fn the_preview_counts_what_run_would_reject() {
        let clean = CleanConfig {
            min_ts_ms: 2_000,
            max_future_skew_ms: 10,
            ..CleanConfig::default()
        };
        let events = [at(1_000), at(5_000), at(6_000), at(9_000)];
        let preview = preview_times(&events, &clean, 5_990);
        assert_eq!(
            preview.rejected, 2,
            "one before the floor, one too far ahead"
        );
        assert!(preview.example.unwrap().contains("min_ts_ms"));
    }
}
