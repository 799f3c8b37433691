//! What an owner checks of a work batch (`WorkBatch::check`) before it touches its model: a
//! batch comes from another process, so every index must point into the batch's own lists and
//! every number must be within what learning can make of valid events (see [`Range`]). A bad
//! batch is refused whole, with the op and the rule it broke.

use super::item_side::{ItemOp, ItemWork, Seen};
use crate::cooccurrence::PairOp;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("op {op}: {list} index {index} is past the batch's {len} {list}s")]
    Index {
        op: usize,
        list: &'static str,
        index: usize,
        len: usize,
    },
    #[error("op {op}: the step's vector at {at} runs past the batch's {len} floats (rank {rank})")]
    Vector {
        op: usize,
        at: usize,
        len: usize,
        rank: usize,
    },
    #[error("op {op}: {field} must be {range}")]
    OutOfRange {
        op: usize,
        field: &'static str,
        range: Range,
    },
    #[error("the users' vectors hold a value that is not {}", Range::Signed)]
    VectorOutOfRange,
    #[error("input mark {mark}: its ops_end {ops_end} must be past the previous mark's, and the last mark's the batch's {ops} ops")]
    Inputs {
        mark: usize,
        ops_end: u32,
        ops: usize,
    },
}

/// What a number of item-side state may be. The bounds are far past what learning from valid
/// events makes, and keep arithmetic on them finite (no time difference overflows, no score
/// becomes infinite).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// A vector value or an error: finite, within ±1e6.
    Signed,
    /// A weight, count or learning rate: finite, from 0 to 1e12.
    Weight,
    /// An event time: from 0 to 2^62 ms.
    Time,
    /// A forward-decayed popularity (see `popularity`): finite, from 0 to 1e200.
    Popularity,
}

pub const MAX_SIGNED: f32 = 1e6;
pub const MAX_WEIGHT: f32 = 1e12;
pub const MAX_TIME_MS: i64 = 1 << 62;

impl Range {
    pub fn holds(self, value: f64) -> bool {
        match self {
            Range::Signed => value.abs() <= f64::from(MAX_SIGNED),
            Range::Weight => (0.0..=f64::from(MAX_WEIGHT)).contains(&value),
            Range::Time => (0.0..=MAX_TIME_MS as f64).contains(&value),
            Range::Popularity => (0.0..=1e200).contains(&value),
        }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Range::Signed => "a finite number within ±1e6",
            Range::Weight => "a finite number from 0 to 1e12",
            Range::Time => "a time from 0 to 2^62 ms",
            Range::Popularity => "a finite number from 0 to 1e200",
        })
    }
}

/// How many names a batch's lists hold.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub items: usize,
    pub categories: usize,
    pub segments: usize,
}

/// Whether every op of the work can be applied, given the batch's lists and vectors of `rank`
/// floats.
pub fn check(sizes: Sizes, work: &ItemWork, rank: usize) -> Result<(), BatchError> {
    if !work.vectors.iter().all(|&v| Range::Signed.holds(v.into())) {
        return Err(BatchError::VectorOutOfRange);
    }
    check_inputs(work)?;
    for (op, item_op) in work.ops.iter().enumerate() {
        Lists { sizes, work, op }.check(item_op, rank)?;
    }
    Ok(())
}

/// Input marks, if any, cut the ops into non-empty runs that cover them all.
fn check_inputs(work: &ItemWork) -> Result<(), BatchError> {
    let ops = work.ops.len();
    let mut previous = 0;
    for (mark, input) in work.inputs.iter().enumerate() {
        let last = mark + 1 == work.inputs.len();
        let ends = input.ops_end as usize;
        if ends <= previous || ends > ops || (last && ends != ops) {
            let ops_end = input.ops_end;
            return Err(BatchError::Inputs { mark, ops_end, ops });
        }
        previous = ends;
    }
    Ok(())
}

/// One op against the batch's lists.
struct Lists<'a> {
    sizes: Sizes,
    work: &'a ItemWork,
    op: usize,
}

impl Lists<'_> {
    fn check(&self, item_op: &ItemOp, rank: usize) -> Result<(), BatchError> {
        match *item_op {
            ItemOp::Category { item, category } => {
                self.item(item)?;
                self.index("category", category as usize, self.sizes.categories)
            }
            ItemOp::Pair(pair) => self.pair(pair),
            ItemOp::Step {
                item,
                err,
                learning_rate,
                at,
            } => {
                self.item(item)?;
                self.within("err", err.into(), Range::Signed)?;
                self.within("learning_rate", learning_rate.into(), Range::Weight)?;
                let len = self.work.vectors.len();
                if at.checked_add(rank).is_none_or(|end| end > len) {
                    let op = self.op;
                    return Err(BatchError::Vector { op, at, len, rank });
                }
                Ok(())
            }
            ItemOp::Seen(Seen {
                item,
                weight,
                segment,
                ts_ms,
            }) => {
                self.item(item)?;
                self.within("weight", weight.into(), Range::Weight)?;
                self.within("ts_ms", ts_ms as f64, Range::Time)?;
                let segments = self.sizes.segments;
                segment.map_or(Ok(()), |s| self.index("segment", s as usize, segments))
            }
            ItemOp::Watch { item, user, ts_ms } => {
                self.item(item)?;
                self.within("ts_ms", ts_ms as f64, Range::Time)?;
                self.index("user", user, self.work.users.len())
            }
        }
    }

    fn pair(&self, pair: PairOp) -> Result<(), BatchError> {
        match pair {
            PairOp::Purchased { item } => self.item(item),
            PairOp::Entered { item, weight } => {
                self.item(item)?;
                self.within("weight", weight.into(), Range::Weight)
            }
            PairOp::Pair {
                row: a,
                partner: b,
                weight,
            }
            | PairOp::Cross {
                viewed: a,
                bought: b,
                weight,
            } => {
                self.item(a)?;
                self.item(b)?;
                self.within("weight", weight.into(), Range::Weight)
            }
        }
    }

    fn item(&self, item: u32) -> Result<(), BatchError> {
        self.index("item", item as usize, self.sizes.items)
    }

    fn index(&self, list: &'static str, index: usize, len: usize) -> Result<(), BatchError> {
        if index < len {
            return Ok(());
        }
        let op = self.op;
        Err(BatchError::Index {
            op,
            list,
            index,
            len,
        })
    }

    fn within(&self, field: &'static str, value: f64, range: Range) -> Result<(), BatchError> {
        if range.holds(value) {
            return Ok(());
        }
        let op = self.op;
        Err(BatchError::OutOfRange { op, field, range })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: Sizes = Sizes {
        items: 2,
        categories: 0,
        segments: 0,
    };

    fn work(ops: Vec<ItemOp>, vectors: Vec<f32>) -> ItemWork {
        ItemWork {
            ops,
            vectors,
            ..ItemWork::default()
        }
    }

    fn pair(row: u32, partner: u32, weight: f32) -> ItemOp {
        ItemOp::Pair(PairOp::Pair {
            row,
            partner,
            weight,
        })
    }

    fn seen_at(ts_ms: i64) -> ItemOp {
        ItemOp::Seen(Seen {
            item: 0,
            weight: 1.0,
            ts_ms,
            segment: None,
        })
    }

    #[test]
    fn work_whose_ops_point_into_its_lists_passes() {
        let step = ItemOp::Step {
            item: 1,
            err: 0.5,
            learning_rate: 0.1,
            at: 2,
        };
        let work = work(vec![pair(0, 1, 1.0), step], vec![0.0; 4]);
        assert_eq!(check(SIZES, &work, 2), Ok(()));
    }

    #[test]
    fn each_broken_rule_is_named_with_its_op() {
        let watch = ItemOp::Watch {
            item: 0,
            user: 0,
            ts_ms: 1,
        };
        let step = ItemOp::Step {
            item: 0,
            err: 1.0,
            learning_rate: 0.1,
            at: 3,
        };
        let cases = [
            (
                work(vec![pair(0, 1, 1.0), pair(0, 2, 1.0)], vec![]),
                "op 1: item index 2 is past the batch's 2 items",
            ),
            (
                work(vec![watch], vec![]),
                "op 0: user index 0 is past the batch's 0 users",
            ),
            (
                work(vec![step], vec![0.0; 4]),
                "op 0: the step's vector at 3 runs past the batch's 4 floats (rank 2)",
            ),
            (
                work(vec![pair(0, 1, f32::NAN)], vec![]),
                "op 0: weight must be a finite number from 0 to 1e12",
            ),
            (
                work(vec![pair(0, 1, -1.0)], vec![]),
                "op 0: weight must be a finite number from 0 to 1e12",
            ),
            (
                work(vec![seen_at(-5)], vec![]),
                "op 0: ts_ms must be a time from 0 to 2^62 ms",
            ),
            (
                work(vec![], vec![f32::INFINITY]),
                "the users' vectors hold a value that is not a finite number within ±1e6",
            ),
            (
                work(vec![], vec![2e6]),
                "the users' vectors hold a value that is not a finite number within ±1e6",
            ),
        ];
        for (work, message) in cases {
            assert_eq!(check(SIZES, &work, 2).unwrap_err().to_string(), message);
        }
    }
}
