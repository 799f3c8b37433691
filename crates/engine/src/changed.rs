//! Which item indices changed since the last checkpoint: a bitset the item-side mutators mark,
//! so a checkpoint writes the items that changed and not the whole model.

/// A growable set of item indices, one bit each.
#[derive(Clone, Debug, Default)]
pub struct ChangedItems {
    words: Vec<u64>,
}

impl ChangedItems {
    pub fn insert(&mut self, item: u32) {
        let word = item as usize / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (item % 64);
    }

    pub fn contains(&self, item: u32) -> bool {
        self.words
            .get(item as usize / 64)
            .is_some_and(|w| w & (1 << (item % 64)) != 0)
    }

    /// Adds every index of `other`.
    pub fn union_with(&mut self, other: &ChangedItems) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            *mine |= theirs;
        }
    }

    /// The indices in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut rest = bits;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros();
                    rest &= rest - 1;
                    (w * 64) as u32 + bit
                })
            })
        })
    }

    pub fn clear(&mut self) {
        self.words.clear();
    }

    pub fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_each_index_once_in_order_and_unions() {
        let mut a = ChangedItems::default();
        for i in [130, 3, 64, 3, 0, 63] {
            a.insert(i);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 3, 63, 64, 130]);
        assert!(a.contains(64) && !a.contains(65) && !a.contains(10_000));
        let mut b = ChangedItems::default();
        b.insert(1);
        b.union_with(&a);
        assert_eq!(b.iter().count(), 6);
        b.clear();
        assert_eq!(b.iter().count(), 0);
    }
}
