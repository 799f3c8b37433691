//! What a replay covers and where it publishes: the operator's `--from`, `--to` and `--output`,
//! parsed and checked before any broker is contacted. The Kafka side is `kafka::replay`.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where each partition's replay starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    /// An explicit offset for every partition replayed.
    Offsets(Vec<StartOffset>),
    /// The first message whose Kafka timestamp is at or after this (epoch ms).
    Time(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartOffset {
    /// Needed only when the config names several input topics.
    pub topic: Option<String>,
    pub partition: i32,
    pub offset: i64,
}

/// Where each partition's replay ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    /// The end of the partition when the replay reaches it.
    Latest,
    /// Before the first message whose Kafka timestamp is after this (epoch ms).
    Time(i64),
}

/// Where a replay's outputs go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// Nothing is published: the replay only builds state.
    None,
    /// The live topic names with a suffix.
    Shadow,
    /// The live topics themselves (consumers will see the outputs).
    Live,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

fn parse_time(text: &str) -> Option<i64> {
    let instant = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).ok()
}

impl FromStr for StartAt {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<StartAt, PlanError> {
        if text == "earliest" {
            return Ok(StartAt::Earliest);
        }
        if let Some(ms) = parse_time(text) {
            return Ok(StartAt::Time(ms));
        }
        if looks_like_a_date(text) {
            return Err(PlanError(format!(
                "--from {text:?} is not a valid RFC 3339 time (2026-11-20T08:00:00Z)"
            )));
        }
        text.split(',')
            .map(parse_start_offset)
            .collect::<Result<Vec<_>, _>>()
            .map(StartAt::Offsets)
            .map_err(|detail| {
                PlanError(format!(
                    "--from {text:?}: {detail}; expected `earliest`, an RFC 3339 time \
                     (2026-11-20T08:00:00Z) or offsets per partition (0:1200,1:980 or topic/0:1200)"
                ))
            })
    }
}

/// `YYYY-…`: meant as a time, so an error should not talk about partitions.
fn looks_like_a_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 10 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

fn non_negative<N: FromStr + PartialOrd + Default>(text: &str) -> Option<N> {
    text.trim().parse().ok().filter(|n| *n >= N::default())
}

fn parse_start_offset(item: &str) -> Result<StartOffset, String> {
    let (topic, rest) = match item.rsplit_once('/') {
        Some((topic, rest)) if !topic.is_empty() => (Some(topic.to_owned()), rest),
        _ => (None, item),
    };
    let (partition, offset) = rest
        .split_once(':')
        .ok_or_else(|| format!("{item:?} is not partition:offset"))?;
    let partition = non_negative::<i32>(partition)
        .ok_or_else(|| format!("partition {partition:?} in {item:?} is not a number ≥ 0"))?;
    let offset = non_negative::<i64>(offset)
        .ok_or_else(|| format!("offset {offset:?} in {item:?} is not a number ≥ 0"))?;
    Ok(StartOffset {
        topic,
        partition,
        offset,
    })
}

impl FromStr for StopAt {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<StopAt, PlanError> {
        if text == "latest" {
            return Ok(StopAt::Latest);
        }
        parse_time(text).map(StopAt::Time).ok_or_else(|| {
            PlanError(format!(
                "--to {text:?}: expected `latest` or an RFC 3339 time (2026-11-20T08:00:00Z)"
            ))
        })
    }
}

impl StopAt {
    /// Whether a message with this Kafka timestamp lies beyond the replay's end.
    pub fn is_past(&self, timestamp_ms: Option<i64>) -> bool {
        match (self, timestamp_ms) {
            (StopAt::Time(end), Some(ts)) => ts > *end,
            _ => false,
        }
    }
}

impl StartAt {
    /// The explicit start offset of one partition; an error names a partition left out, or a
    /// topic that must be named because several are consumed.
    pub fn offset_of(
        offsets: &[StartOffset],
        topic: &str,
        partition: i32,
        several_topics: bool,
    ) -> Result<i64, PlanError> {
        if several_topics {
            if let Some(unnamed) = offsets.iter().find(|o| o.topic.is_none()) {
                return Err(PlanError(format!(
                    "--from {}:{}: the config consumes several topics; write topic/partition:offset",
                    unnamed.partition, unnamed.offset
                )));
            }
        }
        offsets
            .iter()
            .find(|o| o.partition == partition && o.topic.as_deref().is_none_or(|t| t == topic))
            .map(|o| o.offset)
            .ok_or_else(|| {
                PlanError(format!(
                    "--from gives no offset for {topic}/{partition}; list every partition"
                ))
            })
    }
}

impl fmt::Display for OutputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputMode::None => "none",
            OutputMode::Shadow => "shadow",
            OutputMode::Live => "live",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_points_parse() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!(
            "2026-11-20T08:00:00Z".parse(),
            Ok(StartAt::Time(1_795_161_600_000))
        );
        assert_eq!(
            "0:12, 1:0".parse(),
            Ok(StartAt::Offsets(vec![
                StartOffset {
                    topic: None,
                    partition: 0,
                    offset: 12
                },
                StartOffset {
                    topic: None,
                    partition: 1,
                    offset: 0
                },
            ]))
        );
        let named: StartAt = "shop.events/3:7".parse().unwrap();
        assert_eq!(
            named,
            StartAt::Offsets(vec![StartOffset {
                topic: Some("shop.events".into()),
                partition: 3,
                offset: 7
            }])
        );
    }

    #[test]
    fn bad_start_points_say_what_is_wrong() {
        for (text, says) in [
            ("yesterday", "is not partition:offset"),
            ("0:-5", "offset \"-5\""),
            ("x:5", "partition \"x\""),
        ] {
            let err = text.parse::<StartAt>().unwrap_err().0;
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains("expected `earliest`"), "{err}");
        }
        let err = "2026-13-01T00:00:00Z".parse::<StartAt>().unwrap_err().0;
        assert!(err.contains("not a valid RFC 3339 time"), "{err}");
        let err = "soon".parse::<StopAt>().unwrap_err().0;
        assert!(err.contains("expected `latest`"), "{err}");
    }

    #[test]
    fn explicit_offsets_must_cover_every_partition() {
        let StartAt::Offsets(offsets) = "0:5,t2/1:9".parse().unwrap() else {
            panic!()
        };
        assert_eq!(StartAt::offset_of(&offsets, "t", 0, false), Ok(5));
        assert_eq!(StartAt::offset_of(&offsets, "t2", 1, false), Ok(9));
        let missing = StartAt::offset_of(&offsets, "t", 1, false).unwrap_err().0;
        assert!(missing.contains("no offset for t/1"), "{missing}");
        let ambiguous = StartAt::offset_of(&offsets, "t", 0, true).unwrap_err().0;
        assert!(ambiguous.contains("several topics"), "{ambiguous}");
    }

    #[test]
    fn a_replay_ends_after_its_time() {
        let to = StopAt::Time(1000);
        assert!(!to.is_past(Some(1000)));
        assert!(to.is_past(Some(1001)));
        assert!(!to.is_past(None));
        assert!(!StopAt::Latest.is_past(Some(i64::MAX)));
    }
}
