//! The engine's state types, below every module that reads them: the item model (shared by
//! workers), one user's state, and positions in an input. `engine` changes them; `ranking`
//! reads them.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::chunked::ChunkedVec;
use crate::config::EngineConfig;
use crate::cooccurrence::Cooccurrence;
use crate::event::ProfileUpdate;
use crate::factorization::{initial_vector, ItemFactors, SamplePool};
use crate::feedback::FeedbackMemory;
use crate::intern::Interner;
use crate::online::Shown;
use crate::popularity::Popularity;
use crate::profile::UserProfile;
use crate::segments::Segments;
use crate::triggers::{UserTriggers, Watchers};

/// Item-side state, shared by every worker. Its per-item vectors and rows are stored one
/// record per item (see `engine::records`), the rest as one record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ItemModel {
    pub ids: Interner,
    pub categories: Interner,
    /// Last category seen per item, `NO_CATEGORY` if none.
    pub category_of: ChunkedVec<u32>,
    pub factors: ItemFactors,
    pub cooccurrence: Cooccurrence,
    pub popularity: Popularity,
    pub pool: SamplePool,
    /// The shop's listings and item attributes (stock, price, category, brand, tags).
    pub catalog: Catalog,
    /// Trending items per segment of users (user attributes).
    pub segments: Segments,
    /// Who recently viewed or carted each item (only while a catalog trigger rule is set).
    pub watchers: Watchers,
    /// Next offset per `model-updates` partition: the other instances' updates this replica
    /// reflects, checkpointed with it so a restart continues exactly there.
    pub followed: std::collections::BTreeMap<i32, i64>,
    /// The latest event time seen: the engine's notion of "now".
    pub latest_ts_ms: i64,
    /// Items the store has a record of (every index below): the ones from here on are new, so
    /// the next checkpoint writes them. Not state: it follows the store.
    #[serde(skip)]
    pub(crate) items_stored: usize,
}

pub use crate::intern::NO_CATEGORY;

/// The stream of inputs applied without one (`apply`, `apply_profile`): files, evaluations.
pub const DEFAULT_STREAM: u64 = 0;

/// A place in an ordered input: `stream` names the sequence (the Kafka edge packs topic and
/// partition into it), `seq` counts along it. Opaque to the engine beyond ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub stream: u64,
    pub seq: i64,
}

/// One user's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserState {
    pub profile: UserProfile,
    pub factors: Box<[f32]>,
    /// What the user's profile updates said (age band, region, ...), sorted by key.
    pub attributes: Vec<(Box<str>, Box<str>)>,
    /// The user's segment in `ItemModel::segments`, from `attributes`.
    pub segment: Option<u32>,
    /// What the waiting trigger rules remember about the user.
    pub triggers: UserTriggers,
    /// Where the latest input applied to this user came from (set by the edge that knows):
    /// a replay after the user's state moved skips what the state already reflects.
    pub position: Option<Position>,
    /// The input stream (partition) of the user's latest input: its time is the user's time.
    pub stream: u64,
    /// Impressions and dismissals (see `feedback`); none until the first.
    pub feedback: Option<Box<FeedbackMemory>>,
    /// The shard's step count at this user's latest event (0: unchanged since loaded). Not
    /// state: it tells checkpoints what changed and eviction who is cold.
    #[serde(skip)]
    pub(crate) touched: u64,
    /// What the user was last shown (online metrics). Observed, not learned: stored after the
    /// learned state in the user's record, outside the state digest (see `engine::records`).
    #[serde(skip)]
    pub shown: Option<Box<Shown>>,
}

impl UserState {
    pub(crate) fn new(user_id: &str, ts_ms: i64, config: &EngineConfig) -> UserState {
        UserState {
            profile: UserProfile::new(ts_ms),
            factors: initial_vector(user_id, config.seed, &config.factorization),
            attributes: Vec::new(),
            segment: None,
            triggers: UserTriggers::default(),
            position: None,
            stream: DEFAULT_STREAM,
            feedback: None,
            touched: 0,
            shown: None,
        }
    }

    /// Whether every index the user holds exists in `items` and the factors have `rank` values.
    pub(crate) fn check_indices(&self, items: &ItemModel, rank: usize) -> Result<(), Mismatch> {
        if self.factors.len() != rank {
            return Err(Mismatch::Rank {
                factors: self.factors.len(),
                rank,
            });
        }
        let (item_count, category_count) = (items.ids.len(), items.categories.len());
        let shown = self.shown.as_ref().and_then(|s| s.max_item());
        let feedback = self.feedback.as_ref().and_then(|f| f.max_item());
        let held = self.profile.max_item().max(shown).max(feedback);
        if let Some(bad) = held.filter(|&i| i as usize >= item_count) {
            return Err(Mismatch::Item {
                index: bad as usize,
                count: item_count,
            });
        }
        let dismissed = self.feedback.as_ref().and_then(|f| f.max_category());
        if let Some(bad) =
            (self.profile.max_category().max(dismissed)).filter(|&c| c as usize >= category_count)
        {
            return Err(Mismatch::Category {
                index: bad as usize,
                count: category_count,
            });
        }
        if let Some(bad) = self.segment.filter(|&s| s as usize >= items.segments.len()) {
            return Err(Mismatch::Segment {
                index: bad as usize,
                count: items.segments.len(),
            });
        }
        if !self.triggers.indices_within(item_count, category_count) {
            return Err(Mismatch::Triggers);
        }
        Ok(())
    }

    /// Merges a profile update (a `None` value removes the key). Keys beyond
    /// `max_attributes` are ignored, so a user's attributes stay bounded.
    pub(crate) fn update_attributes(&mut self, update: &ProfileUpdate, max_attributes: usize) {
        for (key, value) in &update.attributes {
            let at = self.attributes.binary_search_by(|(k, _)| (**k).cmp(key));
            match (at, value) {
                (Ok(i), Some(value)) => self.attributes[i].1 = value.as_str().into(),
                (Ok(i), None) => {
                    self.attributes.remove(i);
                }
                (Err(i), Some(value)) if self.attributes.len() < max_attributes => {
                    self.attributes
                        .insert(i, (key.as_str().into(), value.as_str().into()));
                }
                (Err(_), _) => {}
            }
        }
    }
}

impl ItemModel {
    /// Takes the running settings in place of those a stored model was written with, so a
    /// changed setting applies after a restart.
    pub(crate) fn follow(&mut self, config: &EngineConfig) {
        self.cooccurrence.follow(&config.cooccurrence);
        self.popularity.follow(&config.popularity);
        self.pool.set_capacity(config.factorization.sample_pool);
        self.segments
            .follow_half_life(config.popularity.half_life_ms);
    }

    /// A copy for a checkpoint to encode while learning goes on: everything large is shared
    /// copy-on-write in chunks (see `chunked`), and the id lookups, which are not stored, are
    /// left out, so it takes microseconds whatever the model's size. It cannot intern ids.
    pub fn stored_copy(&self) -> ItemModel {
        ItemModel {
            ids: self.ids.stored_copy(),
            categories: self.categories.stored_copy(),
            category_of: self.category_of.clone(),
            factors: self.factors.clone(),
            cooccurrence: self.cooccurrence.clone(),
            popularity: self.popularity.clone(),
            pool: self.pool.clone(),
            catalog: self.catalog.stored_copy(),
            segments: self.segments.stored_copy(),
            watchers: self.watchers.clone(),
            followed: self.followed.clone(),
            latest_ts_ms: self.latest_ts_ms,
            items_stored: self.items_stored,
        }
    }

    pub fn new(config: &EngineConfig) -> ItemModel {
        ItemModel {
            ids: Interner::default(),
            categories: Interner::default(),
            category_of: ChunkedVec::new(),
            factors: ItemFactors::new(config.factorization.rank),
            cooccurrence: Cooccurrence::new(config.cooccurrence.clone()),
            popularity: Popularity::new(config.popularity.clone()),
            pool: SamplePool::new(config.factorization.sample_pool),
            catalog: Catalog::default(),
            segments: Segments::new(config.popularity.half_life_ms),
            watchers: Watchers::default(),
            followed: Default::default(),
            latest_ts_ms: i64::MIN,
            items_stored: 0,
        }
    }
}

/// The item model as several workers share it. Learning takes the write lock for the item-side
/// part of one event; ranking takes the read lock.
pub type SharedItems = Arc<RwLock<ItemModel>>;

/// How a stored user does not fit the item model it is loaded into (a damaged or mismatched
/// state dir).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Mismatch {
    #[error("{factors} factors, rank {rank}")]
    Rank { factors: usize, rank: usize },
    #[error("item {index} of {count}")]
    Item { index: usize, count: usize },
    #[error("category {index} of {count}")]
    Category { index: usize, count: usize },
    #[error("segment {index} of {count}")]
    Segment { index: usize, count: usize },
    #[error("trigger state names unknown items or categories")]
    Triggers,
}
