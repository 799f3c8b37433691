//! An item owner's state as records: the model's shared record and the records of the items
//! it owns (the others it names, partners in its rows, keep their initial vectors and no rows).

use super::records::{changed_items, decode_items_filling, DecodeError, EngineRecords, ItemCut};
use super::ItemModel;
use crate::changed::ChangedItems;
use crate::config::EngineConfig;

/// An item model as records: its shared record and some of its items' records, in index
/// order (an item owner's checkpoint, see `ItemOwner::cut`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelRecords {
    pub model: Vec<u8>,
    pub items: Vec<(u32, Vec<u8>)>,
}

impl ItemModel {
    /// The shared record and the records of the `kept` items on every page (`per_page`
    /// consecutive indices) with an item changed since the last cut (every page with
    /// `everything`); from here on the model counts as checkpointed. Whole pages let a store
    /// replace a page without reading it back.
    pub fn cut_pages(
        &mut self,
        per_page: u32,
        everything: bool,
        kept: &ChangedItems,
    ) -> ModelRecords {
        let count = self.ids.len() as u32;
        let mut pages: Vec<u32> = match everything {
            true => (0..count.div_ceil(per_page)).collect(),
            false => changed_items(self).iter().map(|i| i / per_page).collect(),
        };
        pages.dedup(); // changed items come in index order
        let changed = (pages.iter())
            .flat_map(|page| page * per_page..((page + 1) * per_page).min(count))
            .filter(|&item| kept.contains(item))
            .collect();
        let cut = ItemCut {
            model: self.stored_copy(),
            changed,
        };
        self.cooccurrence.clear_changed();
        self.factors.clear_changed();
        self.items_stored = self.ids.len();
        let (model, items) = cut.encode();
        ModelRecords { model, items }
    }

    /// The model that records from `cut_pages` add up to; an item without a record gets its
    /// initial vector and no rows (as it had: `cut_pages` keeps only the items that changed).
    pub fn from_model_records(
        config: &EngineConfig,
        records: ModelRecords,
    ) -> Result<ItemModel, DecodeError> {
        let records = EngineRecords {
            items: records.model,
            item_records: records.items,
            users: Vec::new(),
            shards: Vec::new(),
        };
        decode_items_filling(config, &records, true)
    }
}
