//! The read model of the item side: what an instance needs of items it does not own,
//! published by the items' owners (`ItemOwner`) as records and installed by every other
//! instance (`ItemKeys::install`). A reader ranks and learns its users' side against them; it
//! never learns the items' side.
//!
//! A record is the item's result, not its learning, in two parts that change at different
//! rates, each its own record (on a compacted topic, its own key):
//! - [`ItemView`]: category, vector, popularity and the pair scores' marginals, after every
//!   change;
//! - [`ItemLists`]: the neighbour lists (bounded by `cooccurrence.neighbors_per_item`) with pair
//!   counts, only when their members changed: a reader scores pairs from current marginals as
//!   the owner does, so counts that grew since cost little.
//!
//! Every instance interns in its own order, so a record names its item, and neighbours by key
//! (`item_key`, a 64-bit hash of the id): a reader resolves a key with one integer lookup,
//! where resolving names was two thirds of installing a record.

use serde::{Deserialize, Serialize};

use super::batch_check::Range;
use super::records::{decode_within, encode, DecodeError, SMALL_RECORD_LIMIT};
use super::work_batch::item_key;
use super::{ItemModel, NO_CATEGORY};
use crate::config::EngineConfig;
use crate::cooccurrence::Listed;

/// An item's state as its owner publishes it, after every change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemView {
    pub item: String,
    pub category: Option<String>,
    pub vector: Vec<f32>,
    /// Weighted entries into users' recent lists and first purchases (the pair scores'
    /// marginals).
    pub entries: f32,
    pub purchases: f32,
    /// Forward-decayed popularity relative to `landmark_ms` (see `popularity`).
    pub popularity: f64,
    pub landmark_ms: i64,
    /// Times the item was seen since its last record: a reader adds it to its negatives' pool
    /// as often, so negatives stay drawn in proportion to occurrences.
    pub seen: u32,
}

/// An item's neighbour lists as its owner publishes them, when their members changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemLists {
    pub item: String,
    /// Neighbours by co-occurrence and viewed-then-bought, `(item key, pair count)`, best
    /// first.
    pub similar: Vec<(u64, f32)>,
    pub bought_after: Vec<(u64, f32)>,
}

/// One owner's records since its last publication: a view of each changed item, and lists of
/// those whose lists' members changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub views: Vec<ItemView>,
    pub lists: Vec<ItemLists>,
}

impl Publication {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Records another instance published: a length past `SMALL_RECORD_LIMIT` is an error, not
    /// an allocation. (Each record is checked when a reader installs it.)
    pub fn decode(bytes: &[u8]) -> Result<Publication, DecodeError> {
        decode_within::<_, SMALL_RECORD_LIMIT>(bytes, "item records")
    }
}

/// The two kinds of record, as the first byte of a record's key.
const VIEW_KIND: u8 = b'v';
const LISTS_KIND: u8 = b'l';

/// A record's key on a compacted topic: its kind, then its item's key (big-endian), so that
/// compaction keeps each item's last view and last lists.
pub fn record_key(kind: u8, item: &str) -> [u8; 9] {
    let mut key = [kind; 9];
    key[1..].copy_from_slice(&item_key(item).to_be_bytes());
    key
}

impl Publication {
    /// Its records one by one as `(key, payload)`, for a compacted topic.
    pub fn keyed_records(&self) -> impl Iterator<Item = ([u8; 9], Vec<u8>)> + '_ {
        let views =
            (self.views.iter()).map(|view| (record_key(VIEW_KIND, &view.item), encode(view)));
        let lists =
            (self.lists.iter()).map(|lists| (record_key(LISTS_KIND, &lists.item), encode(lists)));
        views.chain(lists)
    }

    /// Adds a record read from a compacted topic: its key's first byte says its kind. A
    /// tombstone (no payload) or a record that does not decode is an error, and adds nothing.
    pub fn add_keyed(&mut self, key: &[u8], payload: &[u8]) -> Result<(), DecodeError> {
        match key.first() {
            Some(&VIEW_KIND) => self.views.push(decode_within::<_, SMALL_RECORD_LIMIT>(
                payload,
                "item view",
            )?),
            Some(&LISTS_KIND) => self.lists.push(decode_within::<_, SMALL_RECORD_LIMIT>(
                payload,
                "item lists",
            )?),
            _ => {
                return Err(DecodeError {
                    what: "item record key".into(),
                    detail: format!("starts with neither b'v' nor b'l': {key:?}"),
                })
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty() && self.lists.is_empty()
    }

    pub fn len(&self) -> usize {
        self.views.len() + self.lists.len()
    }
}

/// Why a reader refused a record: it came from another process, so it is checked before the
/// reader interns anything.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ViewError {
    #[error("record of item {item:?}: vector has {found} numbers, the rank is {rank}")]
    Rank {
        item: String,
        found: usize,
        rank: usize,
    },
    #[error("record of item {item:?}: {list} lists {found} neighbours, at most {limit} are kept")]
    TooManyNeighbours {
        item: String,
        list: &'static str,
        found: usize,
        limit: usize,
    },
    #[error("record of item {item:?}: {field} must be {range}")]
    OutOfRange {
        item: String,
        field: &'static str,
        range: Range,
    },
}

impl ItemView {
    /// The owner's record of `item`.
    pub fn of(owner: &ItemModel, item: u32, seen: u32) -> ItemView {
        let category = owner.category_of[item as usize];
        let (entries, purchases) = owner.cooccurrence.marginals(item);
        let (popularity, landmark) = owner.popularity.published(item);
        ItemView {
            item: owner.ids.name(item).to_owned(),
            category: (category != NO_CATEGORY).then(|| owner.categories.name(category).to_owned()),
            vector: owner.factors.get(item).to_vec(),
            entries,
            purchases,
            popularity,
            landmark_ms: landmark.unwrap_or(0),
            seen,
        }
    }

    /// Whether a reader can install the record.
    pub fn check(&self, config: &EngineConfig) -> Result<(), ViewError> {
        let rank = config.factorization.rank;
        if self.vector.len() != rank {
            return Err(ViewError::Rank {
                item: self.item.clone(),
                found: self.vector.len(),
                rank,
            });
        }
        let numbers = [
            (
                "vector",
                Range::Signed,
                first_out(Range::Signed, self.vector.iter().copied()),
            ),
            ("entries", Range::Weight, self.entries.into()),
            ("purchases", Range::Weight, self.purchases.into()),
            ("popularity", Range::Popularity, self.popularity),
            ("landmark_ms", Range::Time, self.landmark_ms as f64),
        ];
        out_of_range(&self.item, numbers)
    }
}

impl ItemLists {
    /// The owner's lists of `item`.
    pub fn of(owner: &ItemModel, item: u32) -> ItemLists {
        let (similar, bought_after) = owner.cooccurrence.lists(item);
        ItemLists::keyed(owner, item, similar, bought_after)
    }

    /// The record of lists the owner already read (`Cooccurrence::lists`).
    pub fn keyed(owner: &ItemModel, item: u32, similar: Listed, bought_after: Listed) -> ItemLists {
        let keyed = |list: Listed| {
            let key = |(item, count)| (item_key(owner.ids.name(item)), count);
            list.into_iter().map(key).collect()
        };
        ItemLists {
            item: owner.ids.name(item).to_owned(),
            similar: keyed(similar),
            bought_after: keyed(bought_after),
        }
    }

    /// Whether a reader can install the record.
    pub fn check(&self, config: &EngineConfig) -> Result<(), ViewError> {
        let limit = config.cooccurrence.neighbors_per_item;
        let lists = [
            ("similar", &self.similar),
            ("bought_after", &self.bought_after),
        ];
        if let Some((list, neighbours)) = lists.into_iter().find(|(_, l)| l.len() > limit) {
            return Err(ViewError::TooManyNeighbours {
                item: self.item.clone(),
                list,
                found: neighbours.len(),
                limit,
            });
        }
        let counts = (self.similar.iter()).chain(&self.bought_after).map(|n| n.1);
        let count = first_out(Range::Weight, counts);
        out_of_range(&self.item, [("a neighbour's count", Range::Weight, count)])
    }
}

/// The first field whose value breaks its range, as an error.
fn out_of_range<const N: usize>(
    item: &str,
    fields: [(&'static str, Range, f64); N],
) -> Result<(), ViewError> {
    match fields
        .into_iter()
        .find(|&(_, range, value)| !range.holds(value))
    {
        Some((field, range, _)) => Err(ViewError::OutOfRange {
            item: item.to_owned(),
            field,
            range,
        }),
        None => Ok(()),
    }
}

/// A list's first value out of `range`, or 0 (within every range) if none is.
fn first_out(range: Range, values: impl Iterator<Item = f32>) -> f64 {
    let mut values = values.map(f64::from);
    values.find(|&v| !range.holds(v)).unwrap_or(0.0)
}
