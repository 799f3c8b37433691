//! Human-readable views of stored state for operators (`streamrec state ...`).

use std::fmt::Write;

use crate::engine::{records_online, Engine, EngineRecords};
use crate::online::OnlineCounts;
use crate::ranking::Filters;
use crate::store::{Offsets, Stored};

/// Counts, sizes and stored offsets.
pub fn stats(stored: &Stored, engine: &Engine) -> String {
    let records = &stored.records;
    let user_bytes: usize = records.users.iter().map(|(id, b)| id.len() + b.len()).sum();
    let mut out = String::new();
    let memory = engine.memory();
    let _ = writeln!(
        out,
        "users: {} ({} bytes stored, ~{:.0} B each in memory)",
        records.users.len(),
        user_bytes,
        memory.bytes_per_user()
    );
    let item_bytes: usize = records.items.len()
        + records
            .item_records
            .iter()
            .map(|(_, b)| 4 + b.len())
            .sum::<usize>();
    let _ = writeln!(
        out,
        "items: {} ({} bytes stored, ~{:.0} B each in memory)",
        engine.item_count(),
        item_bytes,
        memory.bytes_per_item()
    );
    let shard_bytes: usize = records.shards.iter().map(Vec::len).sum();
    let _ = writeln!(
        out,
        "dedup windows, clocks and RNGs: {} workers, {} bytes",
        records.shards.len(),
        shard_bytes
    );
    let _ = writeln!(out, "digest: {}", stored.digest());
    out += &online_text(&stored.records);
    out + &offsets_text(&stored.offsets)
}

/// The online counters the state holds (summed over workers), and each variant's.
fn online_text(records: &EngineRecords) -> String {
    let tally = match records_online(records) {
        Ok(tally) => tally,
        Err(err) => return format!("online: unreadable ({err})\n"),
    };
    let mut out = format!("online: {}\n", counts_text(&tally.total));
    for v in &tally.variants {
        let _ = writeln!(
            out,
            "  {}/{}: {}",
            v.experiment,
            v.variant,
            counts_text(&v.counts)
        );
    }
    out
}

fn counts_text(c: &OnlineCounts) -> String {
    format!(
        "{} judged, {} on new items, {} hits (HR {:.4}), {} purchases, {} conversions, revenue {:.2} of {:.2}",
        c.judged, c.new_item_events, c.hits, c.hit_rate(), c.purchases, c.conversions,
        c.attributed_revenue, c.purchase_revenue
    )
}

fn offsets_text(offsets: &Offsets) -> String {
    if offsets.is_empty() {
        return "stored offsets: none (built from files)\n".to_owned();
    }
    let mut out = "stored offsets (next to read):\n".to_owned();
    for ((topic, partition), next) in offsets {
        let _ = writeln!(out, "  {topic}/{partition}: {next}");
    }
    out
}

/// A user's profile and current recommendations.
pub fn user(engine: &Engine, user_id: &str) -> Option<String> {
    let state = engine.user(user_id)?;
    let p = &state.profile;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "user {user_id}: {} events (view {}, favorite {}, add_to_cart {}, purchase {})",
        p.events(),
        p.counts[0],
        p.counts[1],
        p.counts[2],
        p.counts[3]
    );
    let _ = writeln!(
        out,
        "first seen {} ms, last seen {} ms",
        p.first_seen_ms, p.last_seen_ms
    );
    let recent: Vec<u32> = p.recent.iter().rev().map(|r| r.item).collect();
    let names = engine.item_ids(recent.iter().copied());
    let _ = writeln!(out, "recent items, newest first:");
    for (r, name) in p.recent.iter().rev().zip(names).take(20) {
        let _ = writeln!(
            out,
            "  {name} ({}, {} events)",
            r.strongest.as_str(),
            r.events
        );
    }
    let bought = engine.item_ids(p.purchased());
    let _ = writeln!(
        out,
        "purchased: {}",
        if bought.is_empty() {
            "none".into()
        } else {
            bought.join(", ")
        }
    );
    let list = engine.recommend(user_id, 10, &Filters::default());
    let names = engine.item_ids(list.iter().map(|s| s.item));
    let _ = writeln!(out, "recommendations now:");
    for (s, name) in list.iter().zip(names) {
        let _ = writeln!(
            out,
            "  {name} {:.3} from {}",
            s.score,
            s.sources.names().join("+")
        );
    }
    Some(out)
}

/// An item's popularity and neighbours.
pub fn item(engine: &Engine, item_id: &str) -> Option<String> {
    let index = engine.item_index(item_id)?;
    let neighbors = engine.similar_items(index, 20);
    let names = engine.item_ids(neighbors.iter().map(|n| n.0));
    let mut out = format!("item {item_id} (index {index})\nneighbours by co-occurrence:\n");
    for ((_, score), name) in neighbors.iter().zip(names) {
        let _ = writeln!(out, "  {name} {score:.4}");
    }
    Some(out)
}
