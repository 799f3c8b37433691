//! String ids to dense indices, so hot state lives in vectors rather than string-keyed maps.

use rustc_hash::FxHashMap;

use crate::chunked::ChunkedVec;

/// The category index of an item or event with none.
pub const NO_CATEGORY: u32 = u32::MAX;

/// How one instance names its interned items and categories.
pub struct Naming<I, C> {
    pub item: I,
    pub category: C,
}

/// A name for an instance to intern.
#[derive(Clone, Copy, Debug)]
pub enum Name<'a> {
    Item(&'a str),
    Category(&'a str),
}

/// Names are kept in copy-on-write chunks: ids only grow, so a checkpoint's cut shares them
/// (see `stored_copy`) and a new id copies at most the last chunk.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(from = "Vec<Box<str>>")]
pub struct Interner {
    index: FxHashMap<Box<str>, u32>,
    names: ChunkedVec<Box<str>>,
}

/// Stored as the names in index order; the lookup map is rebuilt.
impl From<Vec<Box<str>>> for Interner {
    fn from(names: Vec<Box<str>>) -> Interner {
        let index = names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u32))
            .collect();
        Interner {
            index,
            names: names.into_iter().collect(),
        }
    }
}

/// Serialised as the names alone, without copying them first.
impl serde::Serialize for Interner {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.names.serialize(serializer)
    }
}

impl Interner {
    /// The names without the lookup map: what a checkpoint stores, shared rather than copied.
    /// Only for encoding: it cannot look names up.
    pub fn stored_copy(&self) -> Interner {
        Interner {
            index: FxHashMap::default(),
            names: self.names.clone(),
        }
    }

    /// The index of `name`, assigning the next one on first sight.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&idx) = self.index.get(name) {
            return idx;
        }
        // u32::MAX stays free: pair counter tables mark empty entries with it.
        let idx = u32::try_from(self.names.len())
            .ok()
            .filter(|&idx| idx != u32::MAX)
            .expect("fewer than 2^32 - 1 distinct ids");
        self.names.push(name.into());
        self.index.insert(name.into(), idx);
        idx
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    pub fn name(&self, idx: u32) -> &str {
        &self.names[idx as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Approximate heap bytes: each name is stored twice (key and reverse lookup).
    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.names.iter().map(|n| n.len()).sum();
        2 * text + self.names.len() * (16 + 16 + 4 + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_dense() {
        let mut interner = Interner::default();
        assert_eq!(interner.intern("a"), 0);
        assert_eq!(interner.intern("b"), 1);
        assert_eq!(interner.intern("a"), 0);
        assert_eq!(interner.get("b"), Some(1));
        assert_eq!(interner.get("c"), None);
        assert_eq!(interner.name(1), "b");
        assert_eq!(interner.len(), 2);
    }
}
