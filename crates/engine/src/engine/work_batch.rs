//! Item-side work as it travels to the items' owners: one batch per item partition, items,
//! categories and segments by name, since every instance interns in its own order. Each name
//! travels once per batch; the batch's ops point into its own lists.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::batch_check::{check, BatchError, Sizes};
use super::item_side::{ItemOp, ItemWork, Seen};
use super::records::{decode_within, encode, DecodeError, SMALL_RECORD_LIMIT};
use super::{intern_item, ItemModel};
use crate::config::EngineConfig;
use crate::cooccurrence::PairOp;

/// The work for one item partition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkBatch {
    pub items: Vec<String>,
    pub categories: Vec<String>,
    pub segments: Vec<String>,
    /// Ids are indices into this batch's lists.
    pub work: ItemWork,
}

/// An item's key: a 64-bit hash of its id, the same on every instance. Read-model records
/// name neighbours by key (see `item_view`).
pub fn item_key(item_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(item_id.as_bytes())
}

/// The item partition that owns an item: its key modulo the partitions.
pub fn item_partition(item_id: &str, partitions: u32) -> u32 {
    (item_key(item_id) % u64::from(partitions.max(1))) as u32
}

impl ItemWork {
    /// The work split by the partition of the item each piece changes, named as `read` (the
    /// model it was made against) names them; only partitions with work appear.
    pub fn batches(&self, read: &ItemModel, partitions: u32) -> Vec<(u32, WorkBatch)> {
        let rank = read.factors.rank();
        let mut builders: FxHashMap<u32, Builder> = FxHashMap::default();
        let mut inputs = self.inputs.iter().peekable();
        for (index, op) in self.ops.iter().enumerate() {
            while inputs
                .next_if(|mark| mark.ops_end as usize <= index)
                .is_some()
            {}
            let input = inputs.peek().map(|mark| mark.at);
            let partition = item_partition(read.ids.name(op.item()), partitions);
            let builder = builders.entry(partition).or_default();
            let op = match *op {
                ItemOp::Step {
                    item,
                    err,
                    learning_rate,
                    at,
                } => {
                    let vectors = &mut builder.batch.work.vectors;
                    let local = vectors.len();
                    vectors.extend_from_slice(&self.vectors[at..at + rank]);
                    ItemOp::Step {
                        item,
                        err,
                        learning_rate,
                        at: local,
                    }
                }
                ItemOp::Watch { item, user, ts_ms } => {
                    let users = &mut builder.batch.work.users;
                    users.push(self.users[user].clone());
                    ItemOp::Watch {
                        item,
                        user: users.len() - 1,
                        ts_ms,
                    }
                }
                op => op,
            };
            let op = map_ids(op, &mut Naming { builder, read });
            builder.batch.work.ops.push(op);
            if let Some(at) = input {
                builder.batch.work.mark_input_through(at);
            }
        }
        let mut batches: Vec<(u32, WorkBatch)> =
            builders.into_iter().map(|(p, b)| (p, b.batch)).collect();
        batches.sort_by_key(|(partition, _)| *partition);
        batches
    }
}

impl WorkBatch {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// A batch another instance sent: a length past `SMALL_RECORD_LIMIT` is an error, not an
    /// allocation. (What the batch says is checked when an owner applies it.)
    pub fn decode(bytes: &[u8]) -> Result<WorkBatch, DecodeError> {
        decode_within::<_, SMALL_RECORD_LIMIT>(bytes, "work batch")
    }

    /// Whether every op of the batch can be applied (vectors of `rank` floats).
    pub fn check(&self, rank: usize) -> Result<(), BatchError> {
        let sizes = Sizes {
            items: self.items.len(),
            categories: self.categories.len(),
            segments: self.segments.len(),
        };
        check(sizes, &self.work, rank)
    }

    /// The batch as work on `owner`'s ids, interning there the names it meets first; a batch
    /// that does not pass [`WorkBatch::check`] is refused and `owner` is left unchanged.
    pub fn into_work(
        self,
        owner: &mut ItemModel,
        config: &EngineConfig,
    ) -> Result<ItemWork, BatchError> {
        self.check(config.factorization.rank)?;
        let items: Vec<u32> = self
            .items
            .iter()
            .map(|name| intern_item(owner, name, config).0)
            .collect();
        let categories: Vec<u32> = self
            .categories
            .iter()
            .map(|name| owner.categories.intern(name))
            .collect();
        let max_segments = config.content.max_segments;
        let segments: Vec<Option<u32>> = self
            .segments
            .iter()
            .map(|name| owner.segments.intern(name, max_segments))
            .collect();
        let mut resolved = Resolved {
            items,
            categories,
            segments,
        };
        let mut work = self.work;
        for op in &mut work.ops {
            *op = map_ids(*op, &mut resolved);
        }
        Ok(work)
    }
}

/// A batch's lists in the making: each name once, in order of first use.
#[derive(Default)]
struct Builder {
    batch: WorkBatch,
    items: FxHashMap<u32, u32>,
    categories: FxHashMap<u32, u32>,
    segments: FxHashMap<u32, u32>,
}

/// How an op's ids change between two namings.
trait Ids {
    fn item(&mut self, id: u32) -> u32;
    fn category(&mut self, id: u32) -> u32;
    /// `None`: the segment is unknown there (past `max_segments`).
    fn segment(&mut self, id: u32) -> Option<u32>;
}

/// From a read model's ids to a batch's lists.
struct Naming<'a> {
    builder: &'a mut Builder,
    read: &'a ItemModel,
}

impl Ids for Naming<'_> {
    fn item(&mut self, id: u32) -> u32 {
        let name = self.read.ids.name(id);
        name_once(
            &mut self.builder.items,
            &mut self.builder.batch.items,
            id,
            name,
        )
    }

    fn category(&mut self, id: u32) -> u32 {
        let name = self.read.categories.name(id);
        let builder = &mut *self.builder;
        name_once(
            &mut builder.categories,
            &mut builder.batch.categories,
            id,
            name,
        )
    }

    fn segment(&mut self, id: u32) -> Option<u32> {
        let name = self.read.segments.name(id);
        let builder = &mut *self.builder;
        Some(name_once(
            &mut builder.segments,
            &mut builder.batch.segments,
            id,
            name,
        ))
    }
}

/// The batch's index of `id`, adding its name to the batch's list on first use.
fn name_once(index: &mut FxHashMap<u32, u32>, names: &mut Vec<String>, id: u32, name: &str) -> u32 {
    *index.entry(id).or_insert_with(|| {
        names.push(name.to_owned());
        names.len() as u32 - 1
    })
}

/// From a batch's lists to an owner's ids.
struct Resolved {
    items: Vec<u32>,
    categories: Vec<u32>,
    segments: Vec<Option<u32>>,
}

impl Ids for Resolved {
    fn item(&mut self, id: u32) -> u32 {
        self.items[id as usize]
    }

    fn category(&mut self, id: u32) -> u32 {
        self.categories[id as usize]
    }

    fn segment(&mut self, id: u32) -> Option<u32> {
        self.segments[id as usize]
    }
}

/// The op with its item, category and segment ids mapped.
fn map_ids(op: ItemOp, ids: &mut impl Ids) -> ItemOp {
    match op {
        ItemOp::Category { item, category } => ItemOp::Category {
            item: ids.item(item),
            category: ids.category(category),
        },
        ItemOp::Pair(pair) => ItemOp::Pair(match pair {
            PairOp::Entered { item, weight } => PairOp::Entered {
                item: ids.item(item),
                weight,
            },
            PairOp::Pair {
                row,
                partner,
                weight,
            } => PairOp::Pair {
                row: ids.item(row),
                partner: ids.item(partner),
                weight,
            },
            PairOp::Purchased { item } => PairOp::Purchased {
                item: ids.item(item),
            },
            PairOp::Cross {
                viewed,
                bought,
                weight,
            } => PairOp::Cross {
                viewed: ids.item(viewed),
                bought: ids.item(bought),
                weight,
            },
        }),
        ItemOp::Step {
            item,
            err,
            learning_rate,
            at,
        } => ItemOp::Step {
            item: ids.item(item),
            err,
            learning_rate,
            at,
        },
        ItemOp::Seen(seen) => ItemOp::Seen(Seen {
            item: ids.item(seen.item),
            segment: seen.segment.and_then(|s| ids.segment(s)),
            ..seen
        }),
        ItemOp::Watch { item, user, ts_ms } => ItemOp::Watch {
            item: ids.item(item),
            user,
            ts_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::event::{Event, EventType};

    /// A deferring engine's work for 300 events, and the read model it was made against.
    fn work() -> (ItemWork, ItemModel, EngineConfig) {
        let config = EngineConfig::default();
        let mut engine = Engine::new(config.clone());
        engine.defer_item_work(true);
        let mut work = ItemWork::default();
        for n in 0..300i64 {
            let kind = [EventType::View, EventType::Purchase][(n % 3 == 0) as usize];
            let mut event = Event::new(kind, &format!("u{}", n % 7), &format!("i{}", n % 11), n);
            event.category = Some(format!("c{}", n % 3));
            work.append(engine.apply(&event).effects.item_work);
        }
        let read = engine.shared_items().read().unwrap().clone();
        (work, read, config)
    }

    /// An item by name: its vector and its pair counts by partner name.
    type Named = (String, Vec<f32>, Vec<(String, f32)>);

    fn by_name(model: &ItemModel) -> Vec<Named> {
        let mut items: Vec<_> = (0..model.ids.len() as u32)
            .map(|a| {
                let pairs = (0..model.ids.len() as u32)
                    .map(|b| {
                        (
                            model.ids.name(b).to_owned(),
                            model.cooccurrence.pair_count(a, b),
                        )
                    })
                    .filter(|(_, count)| *count != 0.0)
                    .collect::<std::collections::BTreeMap<_, _>>();
                let vector = model.factors.get(a).to_vec();
                (
                    model.ids.name(a).to_owned(),
                    vector,
                    pairs.into_iter().collect(),
                )
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        items
    }

    /// Split three ways, encoded, and applied by an owner that interns in another order, the
    /// work leaves the owner's items as applying it directly does.
    #[test]
    fn batches_by_partition_carry_the_work_to_an_owner_that_interns_differently() {
        let (work, read, config) = work();
        let mut direct = ItemModel::new(&config);
        crate::engine::intern_like(&mut direct, &read, &config);
        work.apply_to(&mut direct, &config);

        let mut owner = ItemModel::new(&config);
        intern_item(&mut owner, "i7", &config);
        let batches = work.batches(&read, 3);
        assert!(batches.len() > 1, "the items spread over partitions");
        for (partition, batch) in batches {
            assert!(batch
                .items
                .iter()
                .any(|name| item_partition(name, 3) == partition));
            let bytes = bincode::serde::encode_to_vec(&batch, bincode::config::standard()).unwrap();
            let (batch, _): (WorkBatch, _) =
                bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            let work = batch.into_work(&mut owner, &config).unwrap();
            work.apply_to(&mut owner, &config);
        }
        assert_eq!(by_name(&owner), by_name(&direct));
    }

    /// A batch from another process cannot crash its owner or change its model.
    #[test]
    fn an_owner_refuses_a_bad_batch_whole_and_unchanged() {
        let config = EngineConfig::default();
        let mut owner = ItemModel::new(&config);
        let pair = |row, partner| {
            ItemOp::Pair(PairOp::Pair {
                row,
                partner,
                weight: 1.0,
            })
        };
        let bad = WorkBatch {
            items: vec!["a".into(), "b".into()],
            work: ItemWork {
                ops: vec![pair(0, 1), pair(7, 0)],
                ..ItemWork::default()
            },
            ..WorkBatch::default()
        };
        let refused = bad.into_work(&mut owner, &config).unwrap_err();
        assert!(matches!(
            refused,
            BatchError::Index {
                op: 1,
                index: 7,
                ..
            }
        ));
        assert_eq!(owner.ids.len(), 0, "nothing interned");
    }
}
