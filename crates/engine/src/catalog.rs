//! The item catalog as the engine holds it: each item's listing (price, stock, removal) and
//! attributes (category, brand, tags), plus per-attribute item lists for content-based
//! candidates. Items out of stock or removed are never recommended.
//!
//! Updates are last-writer-wins by `updated_at`: a compacted topic may redeliver or reorder an
//! item's versions, and an older version never undoes a newer one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::chunked::ChunkedVec;
use crate::intern::Interner;

/// A catalog message, cleaned (see `clean::catalog`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CatalogUpdate {
    Upsert(CatalogItem),
    /// A tombstone: the item leaves the catalog.
    Remove {
        item_id: String,
    },
}

impl CatalogUpdate {
    pub fn item_id(&self) -> &str {
        match self {
            CatalogUpdate::Upsert(item) => &item.item_id,
            CatalogUpdate::Remove { item_id } => item_id,
        }
    }
}

/// One item as the shop lists it (`streamrec.item.v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogItem {
    pub item_id: String,
    pub category: String,
    pub price: f64,
    pub in_stock: bool,
    pub brand: Option<String>,
    pub tags: Vec<String>,
    pub updated_at_ms: i64,
}

impl CatalogItem {
    /// The `streamrec.item.v1` encoding, as the catalog topic carries it.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::json!({
            "schema": "streamrec.item.v1",
            "item_id": self.item_id,
            "category": self.category,
            "price": self.price,
            "in_stock": self.in_stock,
            "updated_at": self.updated_at_ms,
        });
        if let Some(brand) = &self.brand {
            value["brand"] = brand.as_str().into();
        }
        if !self.tags.is_empty() {
            value["tags"] = self.tags.clone().into();
        }
        value.to_string()
    }
}

/// The catalog's current word on one item.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub price: f64,
    pub in_stock: bool,
    pub removed: bool,
    pub updated_at_ms: i64,
}

/// What an applied update changed, for triggers and refreshes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ListingChange {
    /// (old price, new price) when the price went down.
    pub price_drop: Option<(f64, f64)>,
    /// Out of stock (or removed) before, in stock now.
    pub back_in_stock: bool,
    /// Recommendable before, not now.
    pub withdrawn: bool,
}

/// Item scores from outside (popularity) and the scale they are on.
#[derive(Clone, Copy)]
pub struct Scores<F> {
    pub score: F,
    pub epoch: i64,
}

/// Up to `cap` items with the highest external score. Scores only grow (forward-decayed
/// popularity), so a remembered floor stays a valid lower bound and most offers cost O(1).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TopItems {
    items: Vec<u32>,
    floor: f64,
    /// The score scale `floor` was read under (scores are rescaled now and then).
    epoch: i64,
}

impl TopItems {
    pub fn offer(&mut self, item: u32, cap: usize, scores: Scores<impl Fn(u32) -> f64>) {
        let score = scores.score;
        if self.epoch != scores.epoch {
            self.epoch = scores.epoch;
            self.floor = 0.0;
        }
        if self.items.contains(&item) {
            return;
        }
        if self.items.len() < cap {
            self.items.push(item);
            return;
        }
        if score(item) <= self.floor {
            return;
        }
        let (weakest, floor) = self
            .items
            .iter()
            .enumerate()
            .map(|(i, &t)| (i, score(t)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .expect("cap > 0");
        self.floor = floor;
        if score(item) > floor {
            self.items[weakest] = item;
        }
    }

    pub fn items(&self) -> &[u32] {
        &self.items
    }
}

/// Catalog state, indexed by engine item index.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Attribute names: `category:<c>`, `brand:<b>`, `tag:<t>`.
    pub attributes: Interner,
    listings: ChunkedVec<Option<Listing>>,
    /// Per item, its attributes: the catalog's, or the category events gave it.
    attributes_of: ChunkedVec<Box<[u32]>>,
    /// Per attribute, its most popular items and its newest listings.
    popular: ChunkedVec<TopItems>,
    newest: ChunkedVec<VecDeque<u32>>,
    /// Per engine category index, its attribute id (`NO_ATTRIBUTE` until first needed): events
    /// name categories on the hot path, and this spares a string per event.
    category_attributes: ChunkedVec<u32>,
}

const NO_ATTRIBUTE: u32 = u32::MAX;

impl Catalog {
    /// What a checkpoint stores, shared in chunks (see `Interner::stored_copy`).
    pub fn stored_copy(&self) -> Catalog {
        Catalog {
            attributes: self.attributes.stored_copy(),
            listings: self.listings.clone(),
            attributes_of: self.attributes_of.clone(),
            popular: self.popular.clone(),
            newest: self.newest.clone(),
            category_attributes: self.category_attributes.clone(),
        }
    }

    fn grow(&mut self, item: u32) {
        let len = item as usize + 1;
        self.listings.grow(len, None);
        self.attributes_of.grow(len, Box::default());
    }

    fn attribute(&mut self, name: &str) -> u32 {
        let id = self.attributes.intern(name);
        self.popular.grow(id as usize + 1, TopItems::default());
        self.newest.grow(id as usize + 1, VecDeque::new());
        id
    }

    pub fn listing(&self, item: u32) -> Option<&Listing> {
        self.listings.get(item as usize)?.as_ref()
    }

    /// False for items the catalog lists as out of stock or removed; items it does not know
    /// are recommendable (the catalog is optional).
    pub fn recommendable(&self, item: u32) -> bool {
        self.listing(item)
            .is_none_or(|listing| listing.in_stock && !listing.removed)
    }

    pub fn attributes_of(&self, item: u32) -> &[u32] {
        self.attributes_of
            .get(item as usize)
            .map_or(&[], |attributes| attributes)
    }

    pub fn popular_with(&self, attribute: u32) -> &[u32] {
        self.popular
            .get(attribute as usize)
            .map_or(&[], |top| top.items())
    }

    pub fn newest_with(&self, attribute: u32) -> impl Iterator<Item = u32> + '_ {
        self.newest
            .get(attribute as usize)
            .into_iter()
            .flatten()
            .copied()
    }

    /// The attribute id of a category name, if any item has it.
    pub fn category_attribute(&self, category: &str) -> Option<u32> {
        self.attributes.get(&format!("category:{category}"))
    }

    /// An item with no catalog listing takes the category its events carry (`category`, the
    /// engine's index of `name`) as its attribute.
    pub fn observe_event_category(&mut self, item: u32, category: u32, name: &str) {
        self.grow(item);
        if self.listings[item as usize].is_some() {
            return;
        }
        let slot = category as usize;
        self.category_attributes.grow(slot + 1, NO_ATTRIBUTE);
        if self.category_attributes[slot] == NO_ATTRIBUTE {
            self.category_attributes[slot] = self.attribute(&format!("category:{name}"));
        }
        let attribute = self.category_attributes[slot];
        if *self.attributes_of[item as usize] != [attribute] {
            self.attributes_of[item as usize] = Box::new([attribute]);
        }
    }

    /// Offers an item to its attributes' popular lists after its popularity grew.
    pub fn observe_popularity(
        &mut self,
        item: u32,
        cap: usize,
        scores: Scores<impl Fn(u32) -> f64>,
    ) {
        let Some(attributes) = self.attributes_of.get(item as usize) else {
            return;
        };
        for &attribute in attributes.iter() {
            let scores = Scores {
                score: &scores.score,
                epoch: scores.epoch,
            };
            self.popular[attribute as usize].offer(item, cap, scores);
        }
    }

    /// Applies an upsert unless a newer version is already applied (then `None`).
    pub fn upsert(
        &mut self,
        item: u32,
        update: &CatalogItem,
        newest_cap: usize,
    ) -> Option<ListingChange> {
        self.grow(item);
        let before = self.listings[item as usize];
        if before.is_some_and(|b| b.updated_at_ms > update.updated_at_ms) {
            return None;
        }
        let was_recommendable = self.recommendable(item);
        let listing = Listing {
            price: update.price,
            in_stock: update.in_stock,
            removed: false,
            updated_at_ms: update.updated_at_ms,
        };
        self.listings[item as usize] = Some(listing);
        let attributes = self.attributes_for(update);
        let new_listing = before.is_none_or(|b| b.removed);
        for &attribute in &attributes {
            let newest = &mut self.newest[attribute as usize];
            if new_listing && !newest.contains(&item) {
                newest.push_back(item);
                if newest.len() > newest_cap {
                    newest.pop_front();
                }
            }
        }
        self.attributes_of[item as usize] = attributes.into_boxed_slice();
        let available_before = before.is_some_and(|b| b.in_stock && !b.removed);
        Some(ListingChange {
            price_drop: before
                .filter(|b| !b.removed && update.price < b.price)
                .map(|b| (b.price, update.price)),
            back_in_stock: before.is_some() && !available_before && update.in_stock,
            withdrawn: was_recommendable && !update.in_stock,
        })
    }

    fn attributes_for(&mut self, update: &CatalogItem) -> Vec<u32> {
        let mut names = vec![format!("category:{}", update.category)];
        names.extend(update.brand.iter().map(|b| format!("brand:{b}")));
        names.extend(update.tags.iter().map(|t| format!("tag:{t}")));
        let mut attributes: Vec<u32> = names.iter().map(|n| self.attribute(n)).collect();
        attributes.sort_unstable();
        attributes.dedup();
        attributes
    }

    /// A tombstone: the item is never recommended again (until a newer upsert lists it).
    pub fn remove(&mut self, item: u32) -> ListingChange {
        self.grow(item);
        let was_recommendable = self.recommendable(item);
        let listing = self.listings[item as usize].get_or_insert(Listing {
            price: 0.0,
            in_stock: false,
            removed: true,
            updated_at_ms: i64::MIN,
        });
        listing.removed = true;
        ListingChange {
            withdrawn: was_recommendable,
            ..ListingChange::default()
        }
    }

    pub fn heap_bytes(&self) -> usize {
        let lists: usize = self.attributes_of.iter().map(|a| a.len() * 4 + 16).sum();
        self.attributes.heap_bytes()
            + self.listings.heap_bytes()
            + lists
            + self
                .popular
                .iter()
                .map(|p| p.items.capacity() * 4 + 32)
                .sum::<usize>()
            + self
                .newest
                .iter()
                .map(|n| n.capacity() * 4 + 32)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(price: f64, in_stock: bool, updated_at_ms: i64) -> CatalogItem {
        CatalogItem {
            item_id: "i1".into(),
            category: "shoes".into(),
            price,
            in_stock,
            brand: Some("acme".into()),
            tags: vec!["running".into(), "running".into()],
            updated_at_ms,
        }
    }

    #[test]
    fn listings_are_last_writer_wins_by_updated_at() {
        let mut catalog = Catalog::default();
        assert!(catalog.recommendable(0), "unknown items are recommendable");
        catalog.upsert(0, &item(50.0, true, 10), 5).unwrap();
        assert_eq!(
            catalog.attributes_of(0).len(),
            3,
            "category, brand, one tag"
        );
        assert!(
            catalog.upsert(0, &item(10.0, false, 9), 5).is_none(),
            "older"
        );
        assert!(catalog.recommendable(0));
        let change = catalog.upsert(0, &item(40.0, false, 11), 5).unwrap();
        assert_eq!(change.price_drop, Some((50.0, 40.0)));
        assert!(change.withdrawn && !change.back_in_stock);
        assert!(!catalog.recommendable(0));
        let change = catalog.upsert(0, &item(45.0, true, 12), 5).unwrap();
        assert!(change.back_in_stock && change.price_drop.is_none());
        assert!(catalog.remove(0).withdrawn);
        assert!(!catalog.recommendable(0));
        assert!(catalog.upsert(0, &item(45.0, true, 13), 5).is_some());
        assert!(catalog.recommendable(0), "a newer upsert lists it again");
    }

    #[test]
    fn newest_lists_keep_the_latest_listings_per_attribute() {
        let mut catalog = Catalog::default();
        for i in 0..4 {
            catalog.upsert(i, &item(1.0, true, 1), 2).unwrap();
        }
        let shoes = catalog.category_attribute("shoes").unwrap();
        assert_eq!(catalog.newest_with(shoes).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn top_items_keep_the_highest_scores() {
        let scores = [5.0, 1.0, 7.0, 3.0, 9.0];
        let mut top = TopItems::default();
        for item in 0..5 {
            let score = |i: u32| scores[i as usize];
            top.offer(item, 3, Scores { score, epoch: 0 });
        }
        let mut kept = top.items().to_vec();
        kept.sort_unstable();
        assert_eq!(kept, [0, 2, 4]);
    }
}
