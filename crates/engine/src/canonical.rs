//! Canonical serialisation helpers: hashed tables are written in key order, so the same logical
//! state always encodes to the same bytes (the state digest and checkpoints rely on it).

use serde::{Serialize, Serializer};

/// Serialises a hashed table's entries as a map in ascending key order.
pub fn sorted_map<K, V, S>(
    entries: impl Iterator<Item = (K, V)>,
    serializer: S,
) -> Result<S::Ok, S::Error>
where
    K: Ord + Serialize,
    V: Serialize,
    S: Serializer,
{
    let mut entries: Vec<(K, V)> = entries.collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    serializer.collect_map(entries)
}
