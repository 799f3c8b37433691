//! Dead letters: a rejected input, or an output a destination refused, as a message for the
//! dead-letter topic. Whatever an input holds, its dead letter can be published: payloads over a
//! bound are cut to a prefix and the headers say so, so no input can stop the pipeline.

use crate::clean::Rejection;
use crate::message::{Destination, Output};
use crate::offsets::Waiter;

/// Header names of a dead letter (`docs/schemas/dead-letter.headers.json`).
pub const REASON: &str = "streamrec-reason";
/// For a rejected input: what was wrong, in words (the field, the rule, the value found).
pub const DETAIL: &str = "streamrec-detail";
pub const SOURCE_TOPIC: &str = "source-topic";
pub const SOURCE_PARTITION: &str = "source-partition";
pub const SOURCE_OFFSET: &str = "source-offset";
/// Present (value `true`) when the payload is a prefix of the original.
pub const TRUNCATED: &str = "streamrec-truncated";
/// The original payload's size in bytes, with `TRUNCATED`.
pub const ORIGINAL_SIZE: &str = "streamrec-original-size";
/// For a refused output: the topic that refused it.
pub const REFUSED_TOPIC: &str = "streamrec-refused-topic";

/// Every header a dead letter may carry (to rebuild one that came back from the producer).
pub const HEADERS: [&str; 8] = [
    REASON,
    DETAIL,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    TRUNCATED,
    ORIGINAL_SIZE,
    REFUSED_TOPIC,
];

/// The prefix kept of a dead letter refused by its topic even after the first cut: enough to
/// tell what the message was, small enough for any topic.
pub const REFUSED_PREFIX_BYTES: usize = 4096;

/// The most of a rejection's detail a dead letter carries: a detail may quote the input (an
/// unknown event type), and a header is no place for a copy of the payload.
pub const DETAIL_MAX_BYTES: usize = 512;

/// Where an input came from, by name.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    pub topic: &'a str,
    pub waiter: Waiter,
}

/// The dead letter of a rejected input: its bytes (a prefix of `max_bytes` when longer), keyed
/// `topic/partition/offset`, with the reason, its detail and the source coordinates.
pub fn rejected_input(
    source: Origin,
    payload: &[u8],
    rejection: &Rejection,
    max_bytes: usize,
) -> Output {
    let mut headers = source_headers(source, &rejection.reason.code());
    headers.insert(1, (DETAIL, bounded_detail(&rejection.detail)));
    let mut output = Output {
        destination: Destination::DeadLetter,
        key: coordinates(source),
        payload: Vec::new(),
        headers,
        waiters: vec![source.waiter],
        cause_ts_ms: None,
    };
    set_payload(&mut output, payload, max_bytes);
    output
}

/// The detail, cut at a character boundary to `DETAIL_MAX_BYTES` (ending in `…` when cut).
pub fn bounded_detail(detail: &str) -> String {
    if detail.len() <= DETAIL_MAX_BYTES {
        return detail.to_owned();
    }
    let ellipsis = '…';
    let mut end = DETAIL_MAX_BYTES - ellipsis.len_utf8();
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &detail[..end])
}

/// What a destination refused for what the message is (too large, invalid record).
#[derive(Clone)]
pub struct Refused {
    pub destination: Destination,
    /// The topic that refused it.
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    pub waiters: Vec<Waiter>,
    /// The refusal's stable code, e.g. `msg_size_too_large`.
    pub code: String,
}

/// Names the payload's size only: a refused payload may be megabytes.
impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refused")
            .field("destination", &self.destination)
            .field("topic", &self.topic)
            .field("key", &self.key)
            .field("payload_bytes", &self.payload.len())
            .field("code", &self.code)
            .finish_non_exhaustive()
    }
}

/// The dead letter to publish instead of a refused message, holding the same input offsets; None
/// when the refused message already was such a replacement (nothing smaller is worth sending: the
/// dead-letter topic itself is unusable, which is an operator's problem, not the input's).
///
/// A refused dead letter keeps its reason and is cut to `REFUSED_PREFIX_BYTES`; any other refused
/// output becomes a dead letter with reason `output_refused:<code>` naming the refusing topic,
/// and the first input waiting for it (by its index in `inputs`) as the source.
pub fn refused_output(refused: Refused, inputs: &[String]) -> Option<Output> {
    let waiter = refused.waiters.first().copied().unwrap_or_default();
    let name = inputs.get(waiter.topic as usize).or(inputs.first());
    let source = Origin {
        topic: name.map_or("unknown", String::as_str),
        waiter,
    };
    if refused
        .headers
        .iter()
        .any(|(name, _)| *name == REFUSED_TOPIC)
    {
        return None;
    }
    let original = original_size(&refused.headers).unwrap_or(refused.payload.len());
    let (key, mut headers) = match refused.destination {
        Destination::DeadLetter => {
            let kept = refused
                .headers
                .into_iter()
                .filter(|(name, _)| *name != TRUNCATED && *name != ORIGINAL_SIZE);
            (refused.key, kept.collect())
        }
        _ => (
            refused.key,
            source_headers(source, &format!("output_refused:{}", refused.code)),
        ),
    };
    headers.push((REFUSED_TOPIC, refused.topic));
    let mut output = Output {
        destination: Destination::DeadLetter,
        key,
        payload: Vec::new(),
        headers,
        waiters: refused.waiters,
        cause_ts_ms: None,
    };
    let kept = refused.payload.len().min(REFUSED_PREFIX_BYTES);
    output.payload = refused.payload[..kept].to_vec();
    if kept < original {
        mark_truncated(&mut output, original);
    }
    Some(output)
}

fn coordinates(source: Origin) -> String {
    format!(
        "{}/{}/{}",
        source.topic, source.waiter.partition, source.waiter.offset
    )
}

fn source_headers(source: Origin, reason: &str) -> Vec<(&'static str, String)> {
    vec![
        (REASON, reason.to_owned()),
        (SOURCE_TOPIC, source.topic.to_owned()),
        (SOURCE_PARTITION, source.waiter.partition.to_string()),
        (SOURCE_OFFSET, source.waiter.offset.to_string()),
    ]
}

/// Sets the payload, cut to `max_bytes` (and marked) when longer.
fn set_payload(output: &mut Output, payload: &[u8], max_bytes: usize) {
    if payload.len() <= max_bytes {
        output.payload = payload.to_vec();
        return;
    }
    output.payload = payload[..max_bytes].to_vec();
    mark_truncated(output, payload.len());
}

fn mark_truncated(output: &mut Output, original: usize) {
    output.headers.push((TRUNCATED, "true".to_owned()));
    output.headers.push((ORIGINAL_SIZE, original.to_string()));
}

fn original_size(headers: &[(&'static str, String)]) -> Option<usize> {
    let (_, value) = headers.iter().find(|(name, _)| *name == ORIGINAL_SIZE)?;
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clean::Reason;

    fn source(offset: i64) -> Origin<'static> {
        Origin {
            topic: "events",
            waiter: Waiter::at(offset),
        }
    }

    fn inputs() -> Vec<String> {
        vec!["events".to_owned()]
    }

    fn rejection(reason: Reason, detail: &str) -> Rejection {
        Rejection {
            reason,
            detail: detail.to_owned(),
        }
    }

    fn too_large() -> Rejection {
        rejection(Reason::PayloadTooLarge, "1200000 bytes, limit 16384")
    }

    fn header<'a>(output: &'a Output, name: &str) -> Option<&'a str> {
        output
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_small_input_is_kept_whole_and_unmarked() {
        let why = rejection(
            Reason::NotJson,
            "EOF while parsing an object at line 1 column 5",
        );
        let dead = rejected_input(source(7), b"{oops", &why, 100);
        assert_eq!(dead.payload, b"{oops");
        assert_eq!(dead.key, "events/0/7");
        assert_eq!(header(&dead, REASON), Some("not_json"));
        assert_eq!(header(&dead, DETAIL), Some(why.detail.as_str()));
        assert_eq!(header(&dead, SOURCE_OFFSET), Some("7"));
        assert_eq!(header(&dead, TRUNCATED), None);
    }

    #[test]
    fn a_large_input_is_cut_to_the_bound_and_says_so() {
        let big = vec![b'x'; 1_200_000];
        let dead = rejected_input(source(3), &big, &too_large(), 65_536);
        assert_eq!(dead.payload.len(), 65_536);
        assert_eq!(header(&dead, TRUNCATED), Some("true"));
        assert_eq!(header(&dead, ORIGINAL_SIZE), Some("1200000"));
    }

    #[test]
    fn a_long_detail_is_cut_at_a_character_boundary() {
        let quoted = format!("unknown event type {:?}", "é".repeat(1000));
        let dead = rejected_input(source(1), b"{}", &rejection(Reason::BadType, &quoted), 100);
        let detail = header(&dead, DETAIL).unwrap();
        assert!(detail.len() <= DETAIL_MAX_BYTES, "{} bytes", detail.len());
        assert!(
            detail.len() > DETAIL_MAX_BYTES - 4,
            "{} bytes",
            detail.len()
        );
        assert!(detail.starts_with("unknown event type \"éé"));
        assert!(detail.ends_with("é…"));
    }

    fn refused(destination: Destination, output: &Output) -> Refused {
        Refused {
            destination,
            topic: "dead".into(),
            key: output.key.clone(),
            payload: output.payload.clone(),
            headers: output.headers.clone(),
            waiters: output.waiters.clone(),
            code: "msg_size_too_large".into(),
        }
    }

    #[test]
    fn a_refused_dead_letter_is_cut_further_keeping_its_reason_and_original_size() {
        let big = vec![b'x'; 1_200_000];
        let dead = rejected_input(source(3), &big, &too_large(), 65_536);
        let again = refused_output(refused(Destination::DeadLetter, &dead), &inputs()).unwrap();
        assert_eq!(again.payload.len(), REFUSED_PREFIX_BYTES);
        assert_eq!(header(&again, REASON), Some("payload_too_large"));
        assert_eq!(header(&again, ORIGINAL_SIZE), Some("1200000"));
        assert_eq!(header(&again, REFUSED_TOPIC), Some("dead"));
        assert_eq!(again.waiters, dead.waiters);
        let count = |name| again.headers.iter().filter(|(n, _)| *n == name).count();
        assert_eq!((count(TRUNCATED), count(ORIGINAL_SIZE)), (1, 1));
        assert!(
            refused_output(refused(Destination::DeadLetter, &again), &inputs()).is_none(),
            "a replacement refused again is the topic's fault"
        );
    }

    #[test]
    fn a_refused_output_becomes_a_dead_letter_of_the_refusal() {
        let recommendation = Output {
            destination: Destination::Recommendations,
            key: "u1".into(),
            payload: vec![b'{'; 10_000],
            headers: Vec::new(),
            waiters: vec![Waiter::at(5), Waiter::at(6)],
            cause_ts_ms: Some(1),
        };
        let mut refusal = refused(Destination::Recommendations, &recommendation);
        refusal.topic = "recs".into();
        let dead = refused_output(refusal, &inputs()).unwrap();
        assert_eq!(dead.destination, Destination::DeadLetter);
        assert_eq!(dead.key, "u1");
        assert_eq!(
            header(&dead, REASON),
            Some("output_refused:msg_size_too_large")
        );
        assert_eq!(header(&dead, REFUSED_TOPIC), Some("recs"));
        assert_eq!(header(&dead, ORIGINAL_SIZE), Some("10000"));
        assert_eq!(dead.payload.len(), REFUSED_PREFIX_BYTES);
        assert_eq!(dead.waiters, recommendation.waiters);
    }
}
