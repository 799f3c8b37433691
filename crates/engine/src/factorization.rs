//! Online matrix factorisation for implicit feedback: ISGD (Vinagre, Jorge, Gama 2014) with
//! sampled negatives.
//!
//! Each event is one positive step towards `p_u·q_i = 1`, then `negatives` steps towards 0 on items
//! drawn from recent item occurrences (popularity-proportional), since positive-only SGD saturates
//! to "everything scores 1". Vectors start from a hash of the id and the seed, so an item gets the
//! same initial vector on every worker and every replay.
//!
//! The user's half of a step has its own, high learning rate: a user's vector then follows
//! their latest items, as recency-adjusted ISGD does (Vinagre et al. 2015), while item vectors,
//! updated by every user, move slowly (measured in docs/evaluation.md).

use std::sync::Arc;

use crate::changed::ChangedItems;
use crate::config::MfConfig;
use crate::rng::{hash64, SplitMix64};

/// A fresh factor vector for `id`, deterministic in (id, seed).
pub fn initial_vector(id: &str, seed: u64, config: &MfConfig) -> Box<[f32]> {
    let mut rng = SplitMix64::new(hash64(id, seed));
    let scale = config.init_scale / (config.rank as f32).sqrt();
    (0..config.rank)
        .map(|_| rng.centered_unit() * 2.0 * scale)
        .collect()
}

// Inline: MF re-scoring calls it a hundred times a request, and `eval` ran 1 – 3 % faster.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four accumulators let the compiler vectorise without reassociating a single sum.
    let mut acc = [0.0f32; 4];
    let chunks = a.len() / 4 * 4;
    for (x, y) in a[..chunks].chunks_exact(4).zip(b[..chunks].chunks_exact(4)) {
        for k in 0..4 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// One SGD step on `(p·q − target)²` with L2, the error clipped to [−1, 1] (see
/// `clipped_error`); returns the error.
pub fn sgd_step(
    p: &mut [f32],
    q: &mut [f32],
    target: f32,
    learning_rate: f32,
    regularization: f32,
) -> f32 {
    let err = clipped_error(target, dot(p, q));
    for (pk, qk) in p.iter_mut().zip(q.iter_mut()) {
        let p_old = *pk;
        *pk += learning_rate * (err * *qk - regularization * p_old);
        *qk += learning_rate * (err * p_old - regularization * *qk);
    }
    err
}

/// Item factors, `rank` floats per item index, in copy-on-write chunks of
/// `ITEMS_PER_CHUNK` vectors: a checkpoint's cut shares them, and a write copies the one chunk
/// it lands in while a cut holds it. The vectors are not serialised with the rest: each goes
/// in its item's record, written when it changes.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ItemFactors {
    rank: usize,
    /// Each `ITEMS_PER_CHUNK * rank` floats long (zeros past the last item).
    #[serde(skip)]
    chunks: Vec<Arc<[f32]>>,
    #[serde(skip)]
    len: usize,
    /// Vectors changed since the last `clear_changed`.
    #[serde(skip)]
    changed: ChangedItems,
}

/// Vectors per chunk of `ItemFactors` (32 KB at rank 32); a power of two, so finding an
/// item's chunk is a shift.
const ITEMS_PER_CHUNK: usize = 256;

impl ItemFactors {
    pub fn new(rank: usize) -> ItemFactors {
        ItemFactors {
            rank,
            chunks: Vec::new(),
            len: 0,
            changed: ChangedItems::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends the vector of a newly interned item; indices must arrive in order.
    pub fn push(&mut self, vector: &[f32]) {
        debug_assert_eq!(vector.len(), self.rank);
        if self.len % ITEMS_PER_CHUNK == 0 {
            let floats = ITEMS_PER_CHUNK * self.rank;
            self.chunks.push(vec![0.0; floats].into());
        }
        self.len += 1;
        let (chunk, start) = self.place(self.len as u32 - 1);
        Arc::make_mut(&mut self.chunks[chunk])[start..start + self.rank].copy_from_slice(vector);
    }

    pub fn get(&self, item: u32) -> &[f32] {
        let (chunk, start) = self.place(item);
        &self.chunks[chunk][start..start + self.rank]
    }

    pub fn get_mut(&mut self, item: u32) -> &mut [f32] {
        self.changed.insert(item);
        let (chunk, start) = self.place(item);
        &mut Arc::make_mut(&mut self.chunks[chunk])[start..start + self.rank]
    }

    /// The chunk of an item's vector and where in it the vector starts.
    fn place(&self, item: u32) -> (usize, usize) {
        let item = item as usize;
        assert!(item < self.len, "item {item} of {}", self.len);
        (item / ITEMS_PER_CHUNK, item % ITEMS_PER_CHUNK * self.rank)
    }

    /// Vectors changed since the last `clear_changed` (appended ones are new items, not listed).
    pub fn changed(&self) -> &ChangedItems {
        &self.changed
    }

    pub fn clear_changed(&mut self) {
        self.changed.clear();
    }

    pub fn heap_bytes(&self) -> usize {
        let floats: usize = self.chunks.iter().map(|chunk| chunk.len()).sum();
        floats * 4 + self.changed.heap_bytes()
    }
}

/// A ring of recent item occurrences: a uniform draw from it is a popularity-weighted draw.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SamplePool {
    items: Vec<u32>,
    next: usize,
    capacity: usize,
}

impl SamplePool {
    pub fn new(capacity: usize) -> SamplePool {
        SamplePool {
            items: Vec::with_capacity(capacity.min(1 << 16)),
            next: 0,
            capacity,
        }
    }

    /// Takes a new capacity, keeping the most recent occurrences that fit.
    pub fn set_capacity(&mut self, capacity: usize) {
        if capacity == self.capacity {
            return;
        }
        let (newer, older) = self.items.split_at(self.next);
        let mut oldest_first = [older, newer].concat();
        oldest_first.drain(..oldest_first.len().saturating_sub(capacity));
        self.items = oldest_first;
        self.next = 0;
        self.capacity = capacity;
    }

    pub fn push(&mut self, item: u32) {
        if self.items.len() < self.capacity {
            self.items.push(item);
        } else {
            self.items[self.next] = item;
            self.next = (self.next + 1) % self.capacity;
        }
    }

    pub fn sample(&self, rng: &mut SplitMix64) -> Option<u32> {
        if self.items.is_empty() {
            None
        } else {
            Some(self.items[rng.below(self.items.len())])
        }
    }
}

/// What a user's SGD steps read of the item side and the work they send it. Learning alone,
/// the item side is the live model and applies each step at once; split by item owner, it is a
/// read model, and the steps become work for the items' owners.
pub trait FactorSide {
    fn vector(&self, item: u32) -> &[f32];
    /// A negative item, drawn from recently seen items.
    fn negative(&self, rng: &mut SplitMix64) -> Option<u32>;
    /// The item's half of an SGD step: `err` and the learning rate of the step, and the user's
    /// vector before it (see [`item_step`]).
    fn step(&mut self, item: u32, err: f32, learning_rate: f32, user_before: &[f32]);
}

/// Vectors this long are copied on the stack during a step.
const STACK_RANK: usize = 128;

/// One event's updates: a positive step on `item`, then negatives drawn by the item side.
/// The user's half of each step happens here, the item's half in `side.step`; together they
/// are exactly [`sgd_step`] when the user's and the item's learning rates are equal.
pub fn learn<S: FactorSide>(
    user: &mut [f32],
    item: u32,
    strength: f32,
    side: &mut S,
    rng: &mut SplitMix64,
    config: &MfConfig,
) {
    let lr = config.learning_rate * strength;
    let user_lr = config.user_learning_rate * strength;
    let mut stack = [0.0f32; STACK_RANK];
    let mut heap = Vec::new();
    let before = if user.len() <= STACK_RANK {
        &mut stack[..user.len()]
    } else {
        heap.resize(user.len(), 0.0);
        &mut heap[..]
    };
    let mut step = |side: &mut S, user: &mut [f32], target: u32, label: f32| {
        before.copy_from_slice(user);
        let err = user_step(user, side.vector(target), label, user_lr, config);
        side.step(target, err, lr, before);
    };
    step(side, user, item, 1.0);
    for _ in 0..config.negatives {
        match side.negative(rng) {
            Some(negative) if negative != item => step(side, user, negative, 0.0),
            _ => {}
        }
    }
}

/// The error a step follows: a score beyond the target's side (above 1, below 0) pulls no
/// harder than a score at the other target, or high learning rates make the vectors grow
/// without bound.
fn clipped_error(target: f32, score: f32) -> f32 {
    (target - score).clamp(-1.0, 1.0)
}

/// The user's half of [`sgd_step`]; returns the error.
fn user_step(user: &mut [f32], item: &[f32], target: f32, lr: f32, config: &MfConfig) -> f32 {
    let err = clipped_error(target, dot(user, item));
    for (pk, qk) in user.iter_mut().zip(item) {
        let p_old = *pk;
        *pk += lr * (err * *qk - config.regularization * p_old);
    }
    err
}

/// The item's half of [`sgd_step`], given the error and the user's vector before the step.
pub fn item_step(item: &mut [f32], user_before: &[f32], err: f32, lr: f32, regularization: f32) {
    for (qk, p_old) in item.iter_mut().zip(user_before) {
        *qk += lr * (err * p_old - regularization * *qk);
    }
}

#[cfg(test)]
mod tests {
    use rustc_hash::FxHashSet;

    use super::*;

    /// An item side of vectors alone, applying each step at once.
    struct LiveFactors<'a> {
        factors: &'a mut ItemFactors,
        pool: &'a SamplePool,
        regularization: f32,
    }

    impl FactorSide for LiveFactors<'_> {
        fn vector(&self, item: u32) -> &[f32] {
            self.factors.get(item)
        }

        fn negative(&self, rng: &mut SplitMix64) -> Option<u32> {
            self.pool.sample(rng)
        }

        fn step(&mut self, item: u32, err: f32, lr: f32, user_before: &[f32]) {
            item_step(
                self.factors.get_mut(item),
                user_before,
                err,
                lr,
                self.regularization,
            );
        }
    }

    fn config() -> MfConfig {
        MfConfig {
            rank: 8,
            negatives: 1,
            ..MfConfig::default()
        }
    }

    #[test]
    fn initial_vectors_are_deterministic_and_small() {
        let c = config();
        assert_eq!(
            initial_vector("item-1", 1, &c),
            initial_vector("item-1", 1, &c)
        );
        assert_ne!(
            initial_vector("item-1", 1, &c),
            initial_vector("item-1", 2, &c)
        );
        assert!(initial_vector("x", 1, &c)
            .iter()
            .all(|v| v.abs() <= c.init_scale));
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..11).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..11).map(|i| 1.0 - i as f32 * 0.1).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-4);
    }

    #[test]
    fn the_user_and_item_halves_of_a_step_are_the_whole_step() {
        let c = config();
        let (user, item) = (initial_vector("u", 1, &c), initial_vector("i", 1, &c));
        let (mut whole_user, mut whole_item) = (user.to_vec(), item.to_vec());
        let err = sgd_step(
            &mut whole_user,
            &mut whole_item,
            1.0,
            0.05,
            c.regularization,
        );
        let (mut half_user, mut half_item) = (user.to_vec(), item.to_vec());
        let half_err = user_step(&mut half_user, &item, 1.0, 0.05, &c);
        item_step(&mut half_item, &user, half_err, 0.05, c.regularization);
        assert_eq!(
            (err, whole_user, whole_item),
            (half_err, half_user, half_item)
        );
    }

    #[test]
    fn positive_steps_raise_the_score_and_negatives_lower_it() {
        let c = config();
        let mut user = initial_vector("u", 1, &c).to_vec();
        let mut factors = ItemFactors::new(c.rank);
        factors.push(&initial_vector("liked", 1, &c));
        factors.push(&initial_vector("other", 1, &c));
        let mut pool = SamplePool::new(4);
        pool.push(1);
        let mut rng = SplitMix64::new(3);
        for _ in 0..200 {
            let mut side = LiveFactors {
                factors: &mut factors,
                pool: &pool,
                regularization: c.regularization,
            };
            learn(&mut user, 0, 1.0, &mut side, &mut rng, &c);
        }
        let liked = dot(&user, factors.get(0));
        let other = dot(&user, factors.get(1));
        assert!(liked > 0.5, "liked {liked}");
        assert!(other < liked - 0.3, "other {other} vs liked {liked}");
    }

    /// A step's error is at most 1, however far the score overshoots: at high learning rates
    /// an unbounded error grows the vectors without limit (scores of 0 everywhere, seen on
    /// ml-latest-small at a user rate of 2.5).
    #[test]
    fn an_overshooting_score_moves_the_vectors_a_bounded_step() {
        let c = MfConfig {
            rank: 2,
            regularization: 0.0,
            ..MfConfig::default()
        };
        let mut user = vec![10.0, 10.0];
        let item = [1.0, 1.0];
        let err = user_step(&mut user, &item, 0.0, 1.0, &c);
        assert_eq!(err, -1.0, "score 20 against target 0");
        assert_eq!(user, [9.0, 9.0]);
    }

    #[test]
    fn a_smaller_sample_pool_keeps_the_newest_and_overwrites_the_oldest_first() {
        let mut pool = SamplePool::new(3);
        for item in 1..=5 {
            pool.push(item);
        }
        pool.set_capacity(2);
        pool.push(6);
        let mut rng = SplitMix64::new(1);
        let drawn: FxHashSet<u32> = (0..50).filter_map(|_| pool.sample(&mut rng)).collect();
        assert_eq!(drawn, [5, 6].into_iter().collect());
    }

    #[test]
    fn sample_pool_overwrites_the_oldest() {
        let mut pool = SamplePool::new(2);
        for item in [1, 2, 3] {
            pool.push(item);
        }
        let mut rng = SplitMix64::new(1);
        let drawn: Vec<u32> = (0..50).filter_map(|_| pool.sample(&mut rng)).collect();
        assert!(drawn.iter().all(|&i| i == 2 || i == 3));
        assert!(drawn.contains(&2) && drawn.contains(&3));
    }
}
