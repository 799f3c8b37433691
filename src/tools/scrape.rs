//! What the process benchmark reads of a running `streamrec`: its `/metrics` over plain HTTP
//! and its CPU time from `/proc`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// Ticks of `/proc/<pid>/stat`'s times: USER_HZ, 100 on every Linux ABI.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The figures of one scrape.
#[derive(Debug, Default)]
pub struct Scraped {
    pub consumed: u64,
    pub assigned: u64,
    /// Outputs published to the topic asked for.
    pub published: u64,
    /// Item records the owners published (item-owned scale-out), views and lists.
    pub item_records: u64,
    /// Item partitions the owners hold.
    pub item_partitions: u64,
    /// Bytes of the item owners' checkpoints.
    pub item_checkpoint_bytes: u64,
    /// Payload bytes of the item records published.
    pub item_record_bytes: u64,
    /// Item work batches the workers sent, and their payload bytes.
    pub item_work_batches: u64,
    pub item_work_bytes: u64,
    /// The event-to-output histogram: (upper bound in seconds, cumulative count) per bucket.
    pub latency_buckets: Vec<(f64, u64)>,
}

/// A port nothing listens on now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// User and system CPU seconds of a process, all its threads.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = ProcStat::read(&pid.to_string())?;
    Ok((stat.field(UTIME)? + stat.field(STIME)?) / TICKS_PER_SECOND)
}

/// `/proc/<pid>/stat` fields by their number in proc(5), 1-based.
pub const MINFLT: usize = 10;
pub const UTIME: usize = 14;
pub const STIME: usize = 15;

/// A process's `/proc/<pid>/stat` line (`pid` may be `self`).
pub struct ProcStat(String);

impl ProcStat {
    pub fn read(pid: &str) -> anyhow::Result<ProcStat> {
        let path = format!("/proc/{pid}/stat");
        let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Ok(ProcStat(stat))
    }

    /// Field `number` (1-based, as proc(5) counts). The command name, field 2, may hold
    /// spaces inside its parentheses, so fields are counted from the state, field 3.
    pub fn field(&self, number: usize) -> anyhow::Result<f64> {
        let after_name = self.0.rsplit_once(')').map_or("", |(_, rest)| rest);
        let field = (after_name.split_whitespace().nth(number.saturating_sub(3)))
            .context("a short /proc stat line")?;
        Ok(field.parse::<f64>()?)
    }
}

/// `/metrics` of the admin listener at `address`; `None` while it does not answer.
pub fn scrape(address: &str, topic: &str) -> Option<Scraped> {
    let body = get(address, "/metrics").ok()?;
    let published = format!("streamrec_outputs_published_total{{topic=\"{topic}\"}}");
    let mut scraped = Scraped::default();
    for line in body.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if let Some(bucket) = latency_bucket(name, value) {
            scraped.latency_buckets.push(bucket);
            continue;
        }
        let value = value.parse::<f64>().unwrap_or(0.0) as u64;
        match name {
            "streamrec_events_consumed_total" => scraped.consumed = value,
            "streamrec_assigned_partitions" => scraped.assigned = value,
            "streamrec_item_partitions_owned" => scraped.item_partitions = value,
            "streamrec_item_checkpoint_bytes_total" => scraped.item_checkpoint_bytes = value,
            "streamrec_item_record_bytes_total" => scraped.item_record_bytes = value,
            "streamrec_item_work_sent_batches_total" => scraped.item_work_batches = value,
            "streamrec_item_work_sent_bytes_total" => scraped.item_work_bytes = value,
            _ if name == published => scraped.published = value,
            _ if name.starts_with("streamrec_item_records_published_total{") => {
                scraped.item_records += value
            }
            _ => {}
        }
    }
    Some(scraped)
}

/// A finite bucket of `streamrec_event_to_output_seconds`.
fn latency_bucket(name: &str, value: &str) -> Option<(f64, u64)> {
    let bound = name.strip_prefix("streamrec_event_to_output_seconds_bucket{le=\"")?;
    let bound = bound.strip_suffix("\"}")?.parse::<f64>().ok()?;
    let count = value.parse::<f64>().ok()?;
    bound.is_finite().then_some((bound, count as u64))
}

/// The `q` quantile of histograms with the same buckets, summed, in seconds: interpolated
/// linearly within its bucket as Prometheus's `histogram_quantile` does; `None` when empty or
/// past the last finite bucket.
pub fn quantile(histograms: &[Vec<(f64, u64)>], q: f64) -> Option<f64> {
    let first = histograms.first()?;
    let summed: Vec<(f64, u64)> = (0..first.len())
        .map(|b| {
            (
                first[b].0,
                histograms
                    .iter()
                    .filter_map(|h| h.get(b))
                    .map(|x| x.1)
                    .sum(),
            )
        })
        .collect();
    let total = summed.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = (0.0, 0);
    for &(bound, count) in &summed {
        if count as f64 >= rank {
            let share = (rank - below.1 as f64) / (count - below.1).max(1) as f64;
            return Some(below.0 + (bound - below.0) * share);
        }
        below = (bound, count);
    }
    None
}

fn get(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (_, body) = response.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_interpolates_within_the_summed_buckets() {
        let a = vec![(0.01, 10), (0.1, 90), (1.0, 100)];
        let b = vec![(0.01, 0), (0.1, 0), (1.0, 100)];
        // Summed: 10, 90, 200. The median (rank 100) is the 10th of the 110 in (0.1, 1.0].
        let median = quantile(&[a.clone(), b], 0.5).unwrap();
        assert!(
            (median - (0.1 + 0.9 * 10.0 / 110.0)).abs() < 1e-9,
            "{median}"
        );
        assert_eq!(quantile(&[a], 0.05), Some(0.005));
        assert_eq!(quantile(&[vec![(0.01, 0)]], 0.5), None);
    }

    #[test]
    fn this_process_has_used_cpu() {
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_seconds(std::process::id()).unwrap() > 0.0);
    }
}
