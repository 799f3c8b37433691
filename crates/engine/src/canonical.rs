//! Canonical serialisation helpers: hash maps are written in key order, so the same logical
//! state always encodes to the same bytes (the state digest and checkpoints rely on it).

use std::collections::HashMap;
use std::hash::BuildHasher;

use serde::{Serialize, Serializer};

/// Serialises a hash map as a map in ascending key order.
pub fn sorted_map<K, V, H, S>(map: &HashMap<K, V, H>, serializer: S) -> Result<S::Ok, S::Error>
where
    K: Ord + Serialize,
    V: Serialize,
    H: BuildHasher,
    S: Serializer,
{
    let mut entries: Vec<(&K, &V)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(entries)
}
