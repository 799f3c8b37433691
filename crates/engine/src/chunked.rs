//! Containers shared copy-on-write in fixed-size chunks, so a checkpoint's cut copies a few
//! hundred pointers instead of megabytes while learning goes on.
//!
//! A clone shares every chunk; a write copies the one chunk it lands in, and only while a clone
//! still holds that chunk. So the item model and the dedup window are cut in microseconds, and
//! after a cut each chunk is copied at most once, by the first write that reaches it. Both
//! serialise exactly as a `Vec` or `VecDeque` of their elements would, so stored bytes do not
//! depend on the chunking.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Elements per chunk: a power of two, so finding an element's chunk is a shift.
pub const CHUNK: usize = 1024;

/// One chunk: always `CHUNK` slots (past the vector's length they hold defaults), so indexing
/// inside it needs no bounds check.
type Chunk<T> = Arc<[T; CHUNK]>;

/// A vector in copy-on-write chunks of `CHUNK` elements.
#[derive(Clone, Debug)]
pub struct ChunkedVec<T> {
    chunks: Vec<Chunk<T>>,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> ChunkedVec<T> {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone + Default> ChunkedVec<T> {
    pub fn new() -> ChunkedVec<T> {
        ChunkedVec::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index < self.len {
            Some(&self.chunks[index / CHUNK][index % CHUNK])
        } else {
            None
        }
    }

    /// The element at `index`, its chunk copied first if a clone still holds it.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        let chunk = Arc::make_mut(&mut self.chunks[index / CHUNK]);
        Some(&mut chunk[index % CHUNK])
    }

    pub fn push(&mut self, value: T) {
        if self.len % CHUNK == 0 {
            self.chunks.push(empty_chunk());
        }
        let index = self.len;
        self.len += 1;
        self[index] = value;
    }

    /// Grows to `len` elements with `value`; never shrinks.
    pub fn grow(&mut self, len: usize, value: T) {
        while self.len < len {
            self.push(value.clone());
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        let all = self.chunks.iter().flat_map(|chunk| chunk.iter());
        all.take(self.len)
    }

    /// Every element, writable (every chunk a clone holds is copied).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        let len = self.len;
        let chunks = self.chunks.iter_mut();
        let all = chunks.flat_map(|chunk| Arc::make_mut(chunk).iter_mut());
        all.take(len)
    }

    /// Chunks this one shares with `other` (a clone): the ones neither has written since.
    pub fn shared_chunks(&self, other: &ChunkedVec<T>) -> usize {
        let pairs = self.chunks.iter().zip(&other.chunks);
        pairs.filter(|(a, b)| Arc::ptr_eq(a, b)).count()
    }
}

/// A chunk of defaults, built on the heap (a chunk can be tens of KB).
fn empty_chunk<T: Default>() -> Chunk<T> {
    let slots: Vec<T> = (0..CHUNK).map(|_| T::default()).collect();
    let slots: Box<[T; CHUNK]> = slots
        .into_boxed_slice()
        .try_into()
        .unwrap_or_else(|_| unreachable!("CHUNK slots"));
    Arc::from(slots)
}

impl<T> ChunkedVec<T> {
    /// Heap bytes of the elements' own slots (not what they point to).
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<T>()
            + self.chunks.capacity() * std::mem::size_of::<usize>()
    }
}

impl<T: Clone + Default> std::ops::Index<usize> for ChunkedVec<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        self.get(index)
            .unwrap_or_else(|| panic!("index {index} of {}", self.len))
    }
}

impl<T: Clone + Default> std::ops::IndexMut<usize> for ChunkedVec<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len;
        self.get_mut(index)
            .unwrap_or_else(|| panic!("index {index} of {len}"))
    }
}

impl<T: Clone + Default> FromIterator<T> for ChunkedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> ChunkedVec<T> {
        let mut vec = ChunkedVec::new();
        values.into_iter().for_each(|value| vec.push(value));
        vec
    }
}

impl<T: Serialize + Clone + Default> Serialize for ChunkedVec<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_seq(serializer, self.len, self.iter())
    }
}

/// A sequence of `len` values, as a `Vec` of them serialises.
fn serialize_seq<'a, S: Serializer, T: Serialize + 'a>(
    serializer: S,
    len: usize,
    values: impl Iterator<Item = &'a T>,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(len))?;
    for value in values {
        seq.serialize_element(value)?;
    }
    seq.end()
}

impl<'de, T: Deserialize<'de> + Clone + Default> Deserialize<'de> for ChunkedVec<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ChunkedVec<T>, D::Error> {
        let values = Vec::<T>::deserialize(deserializer)?;
        Ok(values.into_iter().collect())
    }
}

/// A queue in copy-on-write chunks: pushed at the back, popped at the front. A pop never
/// copies (the front chunk is read past, then dropped); a push copies only the last chunk.
#[derive(Clone, Debug)]
pub struct ChunkedDeque<T> {
    chunks: VecDeque<Arc<Vec<T>>>,
    /// Elements of the front chunk already popped.
    head: usize,
    len: usize,
}

impl<T> Default for ChunkedDeque<T> {
    fn default() -> ChunkedDeque<T> {
        ChunkedDeque {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }
}

impl<T: Clone> ChunkedDeque<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push_back(&mut self, value: T) {
        let full = self.chunks.back().is_none_or(|last| last.len() == CHUNK);
        if full {
            self.chunks.push_back(Arc::new(Vec::with_capacity(CHUNK)));
        }
        let last = self.chunks.back_mut().expect("a chunk with room");
        Arc::make_mut(last).push(value);
        self.len += 1;
    }

    pub fn front(&self) -> Option<&T> {
        self.chunks.front().map(|chunk| &chunk[self.head])
    }

    pub fn back(&self) -> Option<&T> {
        self.chunks.back().and_then(|chunk| chunk.last())
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let value = self.front()?.clone();
        self.head += 1;
        self.len -= 1;
        let front_len = self.chunks.front().map_or(0, |chunk| chunk.len());
        if self.head == front_len {
            self.chunks.pop_front();
            self.head = 0;
        }
        Some(value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter_last(self.len)
    }

    /// The last `n` values (all, if fewer), oldest first, skipping whole chunks to reach them:
    /// every chunk but the last is full.
    pub fn iter_last(&self, n: usize) -> impl Iterator<Item = &T> + '_ {
        let skip = self.head + self.len - n.min(self.len);
        let chunks = self.chunks.iter().skip(skip / CHUNK);
        chunks.flat_map(|chunk| chunk.iter()).skip(skip % CHUNK)
    }
}

impl<T: Clone> FromIterator<T> for ChunkedDeque<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> ChunkedDeque<T> {
        let mut deque = ChunkedDeque::default();
        values.into_iter().for_each(|value| deque.push_back(value));
        deque
    }
}

impl<T: Serialize + Clone> Serialize for ChunkedDeque<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_seq(serializer, self.len, self.iter())
    }
}

impl<'de, T: Deserialize<'de> + Clone> Deserialize<'de> for ChunkedDeque<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ChunkedDeque<T>, D::Error> {
        let values = VecDeque::<T>::deserialize(deserializer)?;
        Ok(values.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    #[test]
    fn a_clone_keeps_its_values_while_the_original_is_written() {
        let mut vec: ChunkedVec<u32> = (0..3000).collect();
        let held = vec.clone();
        assert_eq!(vec.shared_chunks(&held), 3);
        vec[5] = 99;
        vec.push(3000);
        assert_eq!(
            vec.shared_chunks(&held),
            1,
            "only the written chunks are copied"
        );
        assert_eq!((held[5], held.len()), (5, 3000));
        assert_eq!((vec[5], vec.len(), vec[3000]), (99, 3001, 3000));
        assert!(vec
            .iter()
            .copied()
            .eq((0..3001).map(|i| if i == 5 { 99 } else { i })));
    }

    #[test]
    fn a_deque_pops_without_disturbing_a_clone() {
        let mut deque: ChunkedDeque<u64> = (0..2500).collect();
        let held = deque.clone();
        for expected in 0..1500 {
            assert_eq!(deque.pop_front(), Some(expected));
        }
        deque.push_back(2500);
        assert_eq!(deque.len(), 1001);
        assert!(deque.iter().copied().eq(1500..2501));
        for n in [0, 1, 500, 548, 549, 1001, 5000] {
            let from = 2501 - n.min(1001) as u64;
            assert!(deque.iter_last(n).copied().eq(from..2501), "the last {n}");
        }
        assert!(held.iter().copied().eq(0..2500));
        assert_eq!(deque.front(), Some(&1500));
    }

    #[test]
    fn both_serialise_as_the_plain_collections_do() {
        let values: Vec<(u32, i64)> = (0..2100).map(|i| (i, -(i as i64))).collect();
        let vec: ChunkedVec<_> = values.iter().copied().collect();
        assert_eq!(bytes(&vec), bytes(&values));
        let mut deque: ChunkedDeque<_> = values.iter().copied().collect();
        let mut plain: VecDeque<_> = values.iter().copied().collect();
        for _ in 0..1030 {
            deque.pop_front();
            plain.pop_front();
        }
        assert_eq!(bytes(&deque), bytes(&plain));
        let config = bincode::config::standard();
        let (back, _): (ChunkedDeque<(u32, i64)>, _) =
            bincode::serde::decode_from_slice(&bytes(&plain), config).unwrap();
        assert!(back.iter().eq(plain.iter()));
        let (back, _): (ChunkedVec<(u32, i64)>, _) =
            bincode::serde::decode_from_slice(&bytes(&values), config).unwrap();
        assert!(back.iter().eq(values.iter()));
    }
}
