//! Impressions and dismissals: what a page showed the user, and what they said they do not
//! want. Both are per user and bounded, and neither teaches the item model: an impression is
//! not an interest, so co-occurrence, factors and popularity never see one.
//!
//! - An item shown `engine.feedback.demote_after` times since the user last touched it is
//!   demoted for them (its score × `demote_factor`) until `demote_for_ms` after it was last
//!   shown; touching it (any event) clears the count.
//! - A dismissed item — or, when the dismissal says so, every item of its category — is not
//!   recommended to the user for `dismiss_for_ms`.

use serde::{Deserialize, Serialize};

use crate::config::FeedbackConfig;
use crate::intern::{Name, Naming};

/// A user's impressions and dismissals, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackMemory {
    /// Items shown by impression events, at most `max_impressed_items` (the least recently
    /// shown leaves first).
    pub impressed: Vec<Impressed>,
    /// At most `max_dismissed` (the oldest leaves first).
    pub dismissed: Vec<Dismissed>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impressed {
    pub item: u32,
    /// Times shown since the user last touched the item.
    pub unanswered: u16,
    pub last_shown_ms: i64,
    /// The user touched it since it was last shown (a click, for the click-through rate).
    pub clicked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dismissed {
    Item { item: u32, at_ms: i64 },
    Category { category: u32, at_ms: i64 },
}

impl Dismissed {
    fn at_ms(&self) -> i64 {
        match *self {
            Dismissed::Item { at_ms, .. } | Dismissed::Category { at_ms, .. } => at_ms,
        }
    }
}

impl FeedbackMemory {
    pub fn is_empty(&self) -> bool {
        self.impressed.is_empty() && self.dismissed.is_empty()
    }

    /// `item` was shown at `ts_ms`; true when this showing demotes it.
    pub fn shown(&mut self, item: u32, ts_ms: i64, limits: &FeedbackConfig) -> bool {
        let unanswered = match self.impressed.iter().position(|i| i.item == item) {
            Some(at) => {
                let seen = &mut self.impressed[at];
                seen.unanswered = seen.unanswered.saturating_add(1);
                seen.last_shown_ms = ts_ms;
                seen.clicked = false;
                seen.unanswered
            }
            None => {
                self.impressed.push(Impressed {
                    item,
                    unanswered: 1,
                    last_shown_ms: ts_ms,
                    clicked: false,
                });
                1
            }
        };
        if self.impressed.len() > limits.max_impressed_items {
            let stalest = (self.impressed.iter().enumerate())
                .min_by_key(|(_, i)| i.last_shown_ms)
                .map(|(at, _)| at);
            if let Some(at) = stalest {
                self.impressed.swap_remove(at);
            }
        }
        unanswered == limits.demote_after
    }

    /// The user touched `item` at `ts_ms`: its count starts over. True when this is the first
    /// touch since it was shown, within `horizon_ms` of that: a click.
    pub fn touched(&mut self, item: u32, ts_ms: i64, horizon_ms: i64) -> bool {
        let Some(seen) = self.impressed.iter_mut().find(|i| i.item == item) else {
            return false;
        };
        seen.unanswered = 0;
        let click = !seen.clicked && ts_ms - seen.last_shown_ms <= horizon_ms;
        seen.clicked = true;
        click
    }

    pub fn dismiss(&mut self, dismissed: Dismissed, limits: &FeedbackConfig) {
        self.dismissed.retain(|d| !same_target(d, &dismissed));
        self.dismissed.push(dismissed);
        if self.dismissed.len() > limits.max_dismissed {
            self.dismissed.remove(0);
        }
    }

    /// Whether `item` (of `category`) must not be recommended at `now_ms`.
    pub fn blocks(
        &self,
        item: u32,
        category: Option<u32>,
        now_ms: i64,
        limits: &FeedbackConfig,
    ) -> bool {
        let live = |d: &&Dismissed| now_ms - d.at_ms() < limits.dismiss_for_ms;
        self.dismissed.iter().filter(live).any(|d| match *d {
            Dismissed::Item { item: i, .. } => i == item,
            Dismissed::Category { category: c, .. } => Some(c) == category,
        })
    }

    /// Whether `item` is demoted at `now_ms`: shown often enough without a touch, lately.
    pub fn demotes(&self, item: u32, now_ms: i64, limits: &FeedbackConfig) -> bool {
        self.demoted(now_ms, limits).any(|i| i == item)
    }

    /// The items demoted at `now_ms`.
    pub fn demoted<'a>(
        &'a self,
        now_ms: i64,
        limits: &'a FeedbackConfig,
    ) -> impl Iterator<Item = u32> + 'a {
        let ignored = move |i: &&Impressed| {
            i.unanswered >= limits.demote_after && now_ms - i.last_shown_ms < limits.demote_for_ms
        };
        self.impressed.iter().filter(ignored).map(|i| i.item)
    }

    /// The largest item and category indices held (a record naming more is refused on load).
    pub fn max_item(&self) -> Option<u32> {
        let shown = self.impressed.iter().map(|i| i.item);
        let dismissed = self.dismissed.iter().filter_map(|d| match *d {
            Dismissed::Item { item, .. } => Some(item),
            Dismissed::Category { .. } => None,
        });
        shown.chain(dismissed).max()
    }

    pub fn max_category(&self) -> Option<u32> {
        let categories = self.dismissed.iter().filter_map(|d| match *d {
            Dismissed::Category { category, .. } => Some(category),
            Dismissed::Item { .. } => None,
        });
        categories.max()
    }

    pub fn heap_bytes(&self) -> usize {
        self.impressed.capacity() * std::mem::size_of::<Impressed>()
            + self.dismissed.capacity() * std::mem::size_of::<Dismissed>()
    }
}

/// A user's impressions and dismissals as another instance reads them: what a partition's new
/// owner needs so that a dismissed item stays out and a demoted one stays demoted. Items and
/// categories travel by name (each instance interns them in its own order).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortableFeedback {
    impressed: Vec<PortableImpressed>,
    /// Oldest first.
    dismissed: Vec<PortableDismissed>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PortableImpressed {
    item: String,
    unanswered: u16,
    last_shown_ms: i64,
    clicked: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PortableDismissed {
    Item { item: String, at_ms: i64 },
    Category { category: String, at_ms: i64 },
}

impl PortableFeedback {
    pub fn new<I, C>(memory: &FeedbackMemory, names: &Naming<I, C>) -> PortableFeedback
    where
        I: Fn(u32) -> String,
        C: Fn(u32) -> String,
    {
        let impressed = memory.impressed.iter().map(|i| PortableImpressed {
            item: (names.item)(i.item),
            unanswered: i.unanswered,
            last_shown_ms: i.last_shown_ms,
            clicked: i.clicked,
        });
        let dismissed = memory.dismissed.iter().map(|d| match *d {
            Dismissed::Item { item, at_ms } => PortableDismissed::Item {
                item: (names.item)(item),
                at_ms,
            },
            Dismissed::Category { category, at_ms } => PortableDismissed::Category {
                category: (names.category)(category),
                at_ms,
            },
        });
        PortableFeedback {
            impressed: impressed.collect(),
            dismissed: dismissed.collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.impressed.is_empty() && self.dismissed.is_empty()
    }

    /// This instance's memory of it, with names interned by `intern`. A record past the
    /// limits (a damaged or hostile one) keeps its latest entries, as the memory would have.
    pub fn localize(
        &self,
        limits: &FeedbackConfig,
        mut intern: impl FnMut(Name<'_>) -> u32,
    ) -> FeedbackMemory {
        let mut impressed: Vec<&PortableImpressed> = self.impressed.iter().collect();
        impressed.sort_by_key(|i| std::cmp::Reverse(i.last_shown_ms));
        impressed.truncate(limits.max_impressed_items);
        let impressed = impressed.into_iter().map(|i| Impressed {
            item: intern(Name::Item(&i.item)),
            unanswered: i.unanswered,
            last_shown_ms: i.last_shown_ms,
            clicked: i.clicked,
        });
        let impressed: Vec<Impressed> = impressed.collect();
        let latest = self.dismissed.len().saturating_sub(limits.max_dismissed);
        let dismissed = self.dismissed[latest..].iter().map(|d| match d {
            PortableDismissed::Item { item, at_ms } => Dismissed::Item {
                item: intern(Name::Item(item)),
                at_ms: *at_ms,
            },
            PortableDismissed::Category { category, at_ms } => Dismissed::Category {
                category: intern(Name::Category(category)),
                at_ms: *at_ms,
            },
        });
        FeedbackMemory {
            impressed,
            dismissed: dismissed.collect(),
        }
    }
}

fn same_target(a: &Dismissed, b: &Dismissed) -> bool {
    match (*a, *b) {
        (Dismissed::Item { item: x, .. }, Dismissed::Item { item: y, .. }) => x == y,
        (Dismissed::Category { category: x, .. }, Dismissed::Category { category: y, .. }) => {
            x == y
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FeedbackConfig = FeedbackConfig {
        max_impressed_items: 3,
        max_dismissed: 2,
        demote_after: 2,
        demote_for_ms: 1_000,
        demote_factor: 0.1,
        dismiss_for_ms: 5_000,
    };

    #[test]
    fn an_item_shown_often_without_a_touch_is_demoted_for_a_while() {
        let mut memory = FeedbackMemory::default();
        assert!(!memory.shown(7, 100, &LIMITS));
        assert!(!memory.demotes(7, 150, &LIMITS), "once is not enough");
        assert!(memory.shown(7, 200, &LIMITS), "the second showing demotes");
        assert!(memory.demotes(7, 250, &LIMITS));
        assert!(!memory.demotes(7, 1_200, &LIMITS), "the demotion ends");
        assert!(
            memory.touched(7, 300, 1_000),
            "a touch after an impression is a click"
        );
        assert!(!memory.demotes(7, 350, &LIMITS), "a touch clears the count");
        assert!(!memory.touched(7, 400, 1_000), "one click per impression");
    }

    #[test]
    fn impressions_and_dismissals_are_bounded_stalest_out() {
        let mut memory = FeedbackMemory::default();
        for (item, ts) in [(1, 10), (2, 20), (3, 30), (1, 40), (4, 50)] {
            memory.shown(item, ts, &LIMITS);
        }
        let mut held: Vec<u32> = memory.impressed.iter().map(|i| i.item).collect();
        held.sort_unstable();
        assert_eq!(held, [1, 3, 4], "2 was shown longest ago");
        for item in [5, 6, 7] {
            memory.dismiss(Dismissed::Item { item, at_ms: 0 }, &LIMITS);
        }
        assert_eq!(memory.dismissed.len(), 2);
        assert!(!memory.blocks(5, None, 1, &LIMITS), "the oldest left");
    }

    #[test]
    fn a_dismissed_category_blocks_its_items_until_the_horizon() {
        let mut memory = FeedbackMemory::default();
        memory.dismiss(
            Dismissed::Category {
                category: 3,
                at_ms: 1_000,
            },
            &LIMITS,
        );
        assert!(memory.blocks(9, Some(3), 2_000, &LIMITS));
        assert!(!memory.blocks(9, Some(4), 2_000, &LIMITS));
        assert!(!memory.blocks(9, None, 2_000, &LIMITS));
        assert!(
            !memory.blocks(9, Some(3), 6_000, &LIMITS),
            "the horizon passed"
        );
    }

    /// A record holding more than a user can (a damaged or hostile one) keeps the latest
    /// impressions and dismissals, as the memory itself would have.
    #[test]
    fn a_record_past_the_limits_keeps_the_latest() {
        let mut memory = FeedbackMemory::default();
        for n in 0..10u32 {
            memory.impressed.push(Impressed {
                item: n,
                unanswered: 1,
                last_shown_ms: i64::from(n),
                clicked: false,
            });
            let at_ms = i64::from(n);
            memory.dismissed.push(Dismissed::Item { item: n, at_ms });
        }
        let names = Naming {
            item: |i: u32| format!("i{i}"),
            category: |c: u32| format!("c{c}"),
        };
        let portable = PortableFeedback::new(&memory, &names);
        let intern = |name: Name<'_>| match name {
            Name::Item(id) | Name::Category(id) => id[1..].parse().unwrap(),
        };
        let local = portable.localize(&LIMITS, intern);
        let mut shown: Vec<u32> = local.impressed.iter().map(|i| i.item).collect();
        shown.sort();
        assert_eq!(shown, [7, 8, 9]);
        let dismissed = [
            Dismissed::Item { item: 8, at_ms: 8 },
            Dismissed::Item { item: 9, at_ms: 9 },
        ];
        assert_eq!(local.dismissed, dismissed);
    }
}
