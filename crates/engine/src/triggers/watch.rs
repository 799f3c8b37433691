//! Who recently viewed or carted each item, for the catalog rules (price drop, back in stock).
//! Item-side state: bounded per item, and kept only while such a rule is configured.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Firing, Rule, RuleKind, Subject};
use crate::catalog::ListingChange;

const WATCHERS_PER_ITEM: usize = 32;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Watchers {
    /// Per item: (user, last view or cart time), oldest first. Each item's list is shared
    /// copy-on-write, so a checkpoint's cut copies no user ids.
    by_item: BTreeMap<u32, Arc<ItemWatchers>>,
}

/// One item's watchers: (user, last view or cart time), oldest first.
type ItemWatchers = VecDeque<(Box<str>, i64)>;

impl Watchers {
    pub fn watch(&mut self, item: u32, user_id: &str, ts_ms: i64) {
        let watchers = Arc::make_mut(self.by_item.entry(item).or_default());
        if let Some(at) = watchers.iter().position(|(u, _)| &**u == user_id) {
            let (user, seen) = watchers.remove(at).expect("found");
            watchers.push_back((user, seen.max(ts_ms)));
        } else {
            watchers.push_back((user_id.into(), ts_ms));
            if watchers.len() > WATCHERS_PER_ITEM {
                watchers.pop_front();
            }
        }
    }

    /// The catalog rules' decisions on a listing change, for users who watched the item within
    /// the rule's time before `now_ms` (the engine's clock).
    pub fn on_change(
        &self,
        rules: &[Rule],
        item: u32,
        change: &ListingChange,
        updated_at_ms: i64,
        now_ms: i64,
    ) -> Vec<Firing> {
        let Some(watchers) = self.by_item.get(&item) else {
            return Vec::new();
        };
        let mut fired = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let (watch_ms, evidence) = match (rule.kind.clone(), change) {
                (
                    RuleKind::PriceDrop {
                        min_drop_pct,
                        watch_ms,
                    },
                    ListingChange {
                        price_drop: Some((old, new)),
                        ..
                    },
                ) => {
                    let drop_pct = (old - new) / old * 100.0;
                    if drop_pct < min_drop_pct {
                        continue;
                    }
                    let evidence =
                        json!({ "old_price": old, "new_price": new, "drop_pct": drop_pct });
                    (watch_ms, evidence)
                }
                (
                    RuleKind::BackInStock { watch_ms },
                    ListingChange {
                        back_in_stock: true,
                        ..
                    },
                ) => (watch_ms, json!({ "in_stock": true })),
                _ => continue,
            };
            for (user, seen) in watchers.iter() {
                if now_ms.saturating_sub(*seen) > watch_ms {
                    continue;
                }
                let mut evidence = evidence.clone();
                evidence["watched_at"] = json!(seen);
                fired.push(Firing {
                    rule: index as u16,
                    user_id: user.to_string(),
                    items: vec![item],
                    recommendations: 0,
                    at_ms: now_ms,
                    subject: Subject::Item(item),
                    anchor_ms: updated_at_ms,
                    evidence,
                });
            }
        }
        fired
    }

    pub fn heap_bytes(&self) -> usize {
        self.by_item
            .values()
            .map(|w| 48 + w.iter().map(|(u, _)| u.len() + 24).sum::<usize>())
            .sum()
    }
}
