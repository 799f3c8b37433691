//! Ranking: hybrid candidate generation → blended score → filters → top-N.
//!
//! Candidates come from the user's own recent items (history), neighbours of those items
//! (co-occurrence), items their viewers went on to buy (cross-occurrence) and trending items.
//! Matrix factorisation then re-scores every candidate; it never scans the catalog. Each source's
//! scores are scaled to [0, 1] by the best candidate of that source before blending, so the blend
//! weights are comparable whatever the source's raw scale.

use std::cell::RefCell;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::{Blend, EngineConfig};
use crate::engine::{ItemModel, UserState};
use crate::factorization::dot;

/// Where a recommended item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    History = 0,
    Cooc = 1,
    Cross = 2,
    Mf = 3,
    Popular = 4,
}

const SOURCES: [Source; 5] = [
    Source::History,
    Source::Cooc,
    Source::Cross,
    Source::Mf,
    Source::Popular,
];

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::History => "history",
            Source::Cooc => "cooc",
            Source::Cross => "cross",
            Source::Mf => "mf",
            Source::Popular => "popular",
        }
    }

    fn weight(self, blend: &Blend) -> f32 {
        match self {
            Source::History => blend.history,
            Source::Cooc => blend.cooc,
            Source::Cross => blend.cross,
            Source::Mf => blend.mf,
            Source::Popular => blend.popular,
        }
    }
}

/// A set of sources, as bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sources(u8);

impl Sources {
    pub fn contains(self, source: Source) -> bool {
        self.0 & (1 << source as u8) != 0
    }

    fn insert(&mut self, source: Source) {
        self.0 |= 1 << source as u8;
    }

    pub fn names(self) -> Vec<&'static str> {
        SOURCES
            .iter()
            .filter(|s| self.contains(**s))
            .map(|s| s.as_str())
            .collect()
    }
}

/// One recommended item (an engine item index; `Engine::item_id` gives its id).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub item: u32,
    pub score: f32,
    pub sources: Sources,
}

/// What must not be recommended, beyond items the user purchased (never recommended).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters<'a> {
    /// Also drop anything in the user's recent history.
    pub exclude_seen: bool,
    /// Also drop these engine item indices.
    pub exclude_items: Option<&'a FxHashSet<u32>>,
}

#[derive(Default)]
struct Candidates {
    index: FxHashMap<u32, u32>,
    items: Vec<u32>,
    scores: Vec<[f32; 5]>,
    excluded: Vec<bool>,
}

impl Candidates {
    fn clear(&mut self) {
        self.index.clear();
        self.items.clear();
        self.scores.clear();
        self.excluded.clear();
    }

    fn slot(&mut self, item: u32) -> usize {
        let next = self.items.len() as u32;
        let slot = *self.index.entry(item).or_insert(next);
        if slot == next {
            self.items.push(item);
            self.scores.push([0.0; 5]);
            self.excluded.push(false);
        }
        slot as usize
    }

    fn add(&mut self, item: u32, source: Source, score: f32) {
        let slot = self.slot(item);
        self.scores[slot][source as usize] += score;
    }

    fn exclude(&mut self, item: u32) {
        if let Some(&slot) = self.index.get(&item) {
            self.excluded[slot as usize] = true;
        }
    }
}

thread_local! {
    // Reused between calls: candidate maps are the hot allocation of a request.
    static SCRATCH: RefCell<Candidates> = RefCell::new(Candidates::default());
}

pub fn recommend(
    items: &ItemModel,
    user: Option<&UserState>,
    config: &EngineConfig,
    blend: &Blend,
    n: usize,
    filters: &Filters,
) -> Vec<Scored> {
    // A stranger gets what is trending, whatever the blend.
    let trending_only = Blend {
        history: 0.0,
        cooc: 0.0,
        cross: 0.0,
        mf: 0.0,
        popular: 1.0,
    };
    let blend = if user.is_some() { blend } else { &trending_only };
    SCRATCH.with(|scratch| {
        let mut candidates = scratch.borrow_mut();
        candidates.clear();
        gather(&mut candidates, items, user, config, blend);
        if let Some(user) = user.filter(|_| blend.mf > 0.0) {
            for slot in 0..candidates.items.len() {
                let item = candidates.items[slot];
                candidates.scores[slot][Source::Mf as usize] = dot(&user.factors, items.factors.get(item));
            }
        }
        apply_filters(&mut candidates, user, filters);
        top_n(&candidates, blend, n)
    })
}

fn gather(candidates: &mut Candidates, items: &ItemModel, user: Option<&UserState>, config: &EngineConfig, blend: &Blend) {
    let retrieve_neighbors = blend.cooc > 0.0 || blend.mf > 0.0;
    if let Some(user) = user {
        let profile = &user.profile;
        let half_life = config.profile.half_life_ms;
        let now = items.latest_ts_ms;
        for (rank, recent) in profile.recent.iter().rev().enumerate() {
            let interest = recent.interest.value_at(now, half_life);
            if blend.history > 0.0 && !profile.has_purchased(recent.item) {
                candidates.add(recent.item, Source::History, interest);
            }
            if rank >= config.ranking.seed_items {
                continue;
            }
            if retrieve_neighbors {
                for (neighbor, similarity) in items.cooccurrence.similar(recent.item) {
                    candidates.add(neighbor, Source::Cooc, interest * similarity);
                }
            }
            if blend.cross > 0.0 {
                for (bought, similarity) in items.cooccurrence.bought_after(recent.item) {
                    candidates.add(bought, Source::Cross, interest * similarity);
                }
            }
        }
    }
    if blend.popular > 0.0 || blend.mf > 0.0 {
        for (item, score) in items.popularity.trending(config.ranking.popular_candidates) {
            candidates.add(item, Source::Popular, score);
        }
    }
}

fn apply_filters(candidates: &mut Candidates, user: Option<&UserState>, filters: &Filters) {
    if let Some(user) = user {
        for item in user.profile.purchased() {
            candidates.exclude(item);
        }
        if filters.exclude_seen {
            for recent in &user.profile.recent {
                candidates.exclude(recent.item);
            }
        }
    }
    if let Some(excluded) = filters.exclude_items {
        for slot in 0..candidates.items.len() {
            if excluded.contains(&candidates.items[slot]) {
                candidates.excluded[slot] = true;
            }
        }
    }
}

fn top_n(candidates: &Candidates, blend: &Blend, n: usize) -> Vec<Scored> {
    let mut best = [0.0f32; 5];
    for scores in &candidates.scores {
        for (b, s) in best.iter_mut().zip(scores) {
            *b = b.max(*s);
        }
    }
    let mut ranked: Vec<Scored> = Vec::with_capacity(candidates.items.len());
    for (slot, &item) in candidates.items.iter().enumerate() {
        if candidates.excluded[slot] {
            continue;
        }
        let mut score = 0.0;
        let mut sources = Sources::default();
        for source in SOURCES {
            let raw = candidates.scores[slot][source as usize];
            let weight = source.weight(blend);
            if raw > 0.0 && best[source as usize] > 0.0 && weight > 0.0 {
                score += weight * raw / best[source as usize];
                sources.insert(source);
            }
        }
        if score > 0.0 {
            ranked.push(Scored { item, score, sources });
        }
    }
    let order = |a: &Scored, b: &Scored| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item));
    if ranked.len() > n && n > 0 {
        ranked.select_nth_unstable_by(n - 1, order);
        ranked.truncate(n);
    }
    ranked.truncate(n);
    ranked.sort_by(order);
    ranked
}
