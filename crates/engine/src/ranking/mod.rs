//! Ranking: hybrid candidate generation → blended score → filters → top-N.
//!
//! Candidates come from the user's own recent items (history), neighbours of those items
//! (co-occurrence), items their viewers went on to buy (cross-occurrence) and trending items.
//! Matrix factorisation then re-scores every candidate; it never scans the catalog. Each source's
//! scores are scaled to [0, 1] by the best candidate of that source before blending, so the blend
//! weights are comparable whatever the source's raw scale.

use std::cell::RefCell;

use crate::config::{Blend, EngineConfig, FeedbackConfig, RankingConfig};
use crate::factorization::dot;
use crate::feedback::FeedbackMemory;
use crate::rank_key::{rank_key, score_of_key};
use crate::rebuy::RebuyTally;
use crate::state::{ItemModel, UserState, NO_CATEGORY};

mod content;

/// Where a recommended item came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    History = 0,
    Cooc = 1,
    Cross = 2,
    Mf = 3,
    Popular = 4,
    Content = 5,
    Segment = 6,
}

pub const SOURCE_COUNT: usize = 7;

/// Every source, in bit order.
pub const SOURCES: [Source; SOURCE_COUNT] = [
    Source::History,
    Source::Cooc,
    Source::Cross,
    Source::Mf,
    Source::Popular,
    Source::Content,
    Source::Segment,
];

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::History => "history",
            Source::Cooc => "cooc",
            Source::Cross => "cross",
            Source::Mf => "mf",
            Source::Popular => "popular",
            Source::Content => "content",
            Source::Segment => "segment",
        }
    }

    fn weight(self, blend: &Blend) -> f32 {
        match self {
            Source::History => blend.history,
            Source::Cooc => blend.cooc,
            Source::Cross => blend.cross,
            Source::Mf => blend.mf,
            Source::Popular => blend.popular,
            Source::Content => blend.content,
            Source::Segment => blend.segment,
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

    /// The set as bits: bit `Source as u8` for each source in it.
    pub fn bits(self) -> u8 {
        self.0
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

/// What must not be recommended, beyond items the user purchased (unless buyers re-buy in
/// their category: see `rebuy`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters<'a> {
    /// Also drop anything in the user's recent history.
    pub exclude_seen: bool,
    /// Also drop these engine item indices (repeats are harmless).
    pub exclude_items: Option<&'a [u32]>,
    /// Only items with this catalog attribute (`Catalog::category_attribute`); the attribute's
    /// popular items join the candidates, so a narrow filter still finds some.
    pub attribute: Option<u32>,
    /// Only items the catalog lists at a price in this range; an unlisted item has no price.
    pub price: Option<PriceRange>,
}

/// Inclusive price bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PriceRange {
    pub min: f64,
    pub max: f64,
}

impl PriceRange {
    fn holds(&self, price: f64) -> bool {
        self.min <= price && price <= self.max
    }
}

/// In a mark: an item the request excludes outright, turned away before it is scored.
const BLOCKED: u32 = u32::MAX;

/// The candidates of one request. `marks` is a dense item → slot index (8 bytes per catalog item
/// per thread, small next to the item's own state) because hashing was the hot spot of ranking.
/// A mark holds the number of the request that set it beside the slot, so a new request
/// invalidates every mark by counting on, without visiting them. A candidate's item and scores
/// are one 32-byte entry, so a new candidate is one push; `excluded` is sized once gathering
/// is done.
#[derive(Default)]
struct Candidates {
    marks: Vec<u64>,
    /// The request under way; a mark of another request is no mark (0: none yet).
    request: u32,
    entries: Vec<Candidate>,
    excluded: Vec<bool>,
}

#[derive(Clone, Copy)]
struct Candidate {
    item: u32,
    scores: [f32; SOURCE_COUNT],
}

impl Candidates {
    /// Starts a request: no item is a candidate or blocked.
    fn clear(&mut self) {
        self.entries.clear();
        self.excluded.clear();
        self.request = self.request.wrapping_add(1);
        if self.request == 0 {
            // Marks of a request 2^32 requests ago would read as current.
            self.marks.fill(0);
            self.request = 1;
        }
    }

    /// The item's mark in this request (a slot or `BLOCKED`), if it has one.
    #[inline]
    fn mark(&self, item: u32) -> Option<u32> {
        let mark = *self.marks.get(item as usize)?;
        (request_of(mark) == self.request).then_some(mark as u32)
    }

    /// The item's place in `marks`, which grows to hold it.
    #[inline]
    fn mark_mut(&mut self, item: u32) -> &mut u64 {
        let idx = item as usize;
        if idx >= self.marks.len() {
            self.marks.resize(idx + 1, 0);
        }
        &mut self.marks[idx]
    }

    #[inline]
    fn marked(&self, value: u32) -> u64 {
        (u64::from(self.request) << 32) | u64::from(value)
    }

    /// Keeps `item` out of this request's candidates. Only before gathering.
    fn block(&mut self, item: u32) {
        *self.mark_mut(item) = self.marked(BLOCKED);
    }

    fn is_blocked(&self, item: u32) -> bool {
        self.mark(item) == Some(BLOCKED)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn item(&self, slot: usize) -> u32 {
        self.entries[slot].item
    }

    /// The slot of a candidate item.
    fn slot_of(&self, item: u32) -> usize {
        self.marks[item as usize] as u32 as usize
    }

    /// The scores of a candidate item.
    fn scores_of(&self, item: u32) -> &[f32; SOURCE_COUNT] {
        &self.entries[self.slot_of(item)].scores
    }

    fn scores_of_mut(&mut self, item: u32) -> &mut [f32; SOURCE_COUNT] {
        let slot = self.slot_of(item);
        &mut self.entries[slot].scores
    }

    /// The item's slot, a new one if it is not a candidate yet; none if it is blocked.
    #[inline]
    fn slot(&mut self, item: u32) -> Option<usize> {
        let next = self.entries.len();
        let new = self.marked(next as u32);
        let request = self.request;
        let mark = self.mark_mut(item);
        if request_of(*mark) != request {
            *mark = new;
            self.entries.push(Candidate {
                item,
                scores: [0.0; SOURCE_COUNT],
            });
            return Some(next);
        }
        match *mark as u32 {
            BLOCKED => None,
            known => Some(known as usize),
        }
    }

    #[inline]
    fn add(&mut self, item: u32, source: Source, score: f32) {
        if let Some(slot) = self.slot(item) {
            self.entries[slot].scores[source as usize] += score;
        }
    }

    /// Sets the source's score to at least `score` (a second opinion of the same source).
    fn raise(&mut self, item: u32, source: Source, score: f32) {
        if let Some(slot) = self.slot(item) {
            let current = &mut self.entries[slot].scores[source as usize];
            *current = current.max(score);
        }
    }

    /// Ends gathering: from here on candidates are excluded, not added.
    fn gathered(&mut self) {
        self.excluded.resize(self.entries.len(), false);
    }

    /// The item's slot if it is a candidate of this request.
    fn candidate_slot(&self, item: u32) -> Option<usize> {
        let mark = self.mark(item).filter(|&mark| mark != BLOCKED)?;
        Some(mark as usize)
    }

    fn holds(&self, item: u32) -> bool {
        self.candidate_slot(item).is_some()
    }

    fn exclude(&mut self, item: u32) {
        if let Some(slot) = self.candidate_slot(item) {
            self.excluded[slot] = true;
        }
    }
}

/// The number of the request that set a mark.
#[inline]
fn request_of(mark: u64) -> u32 {
    (mark >> 32) as u32
}

thread_local! {
    // Reused between calls: candidate maps and the ranked list are the hot allocations of a
    // request.
    static SCRATCH: RefCell<(Candidates, Vec<Ranked>)> = RefCell::default();
}

/// Whom a ranking is for: the user (none for a stranger), their time (their input stream's,
/// against which their interests decay), and their worker's re-buy rates.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    pub user: Option<&'a UserState>,
    pub now_ms: i64,
    pub rebuys: &'a RebuyTally,
}

/// Top-`n` items for the asker.
pub fn recommend(
    items: &ItemModel,
    asker: Asker,
    config: &EngineConfig,
    ranking: &RankingConfig,
    n: usize,
    filters: &Filters,
) -> Vec<Scored> {
    let Asker { user, now_ms, .. } = asker;
    // A stranger gets what is trending, whatever the blend.
    let trending_only;
    let ranking = if user.is_some() {
        ranking
    } else {
        trending_only = RankingConfig {
            blend: Blend::TRENDING,
            ..ranking.clone()
        };
        &trending_only
    };
    let blend = &ranking.blend;
    SCRATCH.with(|scratch| {
        let (candidates, ranked) = &mut *scratch.borrow_mut();
        candidates.clear();
        block_excluded(candidates, asker, filters);
        gather(candidates, items, asker, config, ranking);
        if let Some(attribute) = filters.attribute {
            gather_with_attribute(candidates, items, attribute);
        }
        candidates.gathered();
        exclude_bought(candidates, items, asker, ranking);
        if let Some(user) = user {
            exclude_dismissed(candidates, items, (user, now_ms), &config.feedback);
        }
        exclude_unavailable(candidates, items);
        exclude_restricted(candidates, items, filters);
        let mut factors = source_factors(candidates, blend);
        blend_without_mf(candidates, &factors, ranked);
        if let Some(user) = user.filter(|_| blend.mf > 0.0) {
            let only_mf = ranked.iter().all(|r| r.score() == 0.0);
            if !only_mf {
                keep_best(ranked, ranking.mf_rescore);
            }
            factors[Source::Mf as usize] =
                add_mf(ranked, candidates, &user.factors, items, blend.mf);
        }
        if let Some(memory) = user.and_then(|u| u.feedback.as_deref()) {
            demote_ignored(ranked, candidates, memory, (now_ms, &config.feedback));
        }
        ranked.retain(|r| r.score() > 0.0 && r.score().is_finite());
        keep_best(ranked, n);
        ranked.sort_unstable_by_key(|r| r.0);
        ranked
            .iter()
            .map(|r| Scored {
                item: r.item(),
                score: r.score(),
                sources: sources_of(candidates.scores_of(r.item()), &factors),
            })
            .collect()
    })
}

/// A candidate during ranking: its item and its blended score so far, as its place in the
/// ranking (see `rank_key`), so selecting the best moves and compares 8-byte integers.
#[derive(Clone, Copy, Debug)]
struct Ranked(u64);

impl Ranked {
    fn new(item: u32, score: f32) -> Ranked {
        Ranked(rank_key(score, item))
    }

    fn item(self) -> u32 {
        self.0 as u32
    }

    fn score(self) -> f32 {
        score_of_key(self.0)
    }

    fn add_score(&mut self, more: f32) {
        *self = Ranked::new(self.item(), self.score() + more);
    }
}

// Out of line, as are `exclude_bought`, `source_factors` and `blend_without_mf`: inlined
// into `recommend`, ranking ran 3 – 4 % slower (`eval` on ml-latest-small).
#[inline(never)]
fn gather(
    candidates: &mut Candidates,
    items: &ItemModel,
    asker: Asker,
    config: &EngineConfig,
    ranking: &RankingConfig,
) {
    let Asker {
        user, now_ms: now, ..
    } = asker;
    let blend = &ranking.blend;
    let retrieve_neighbors = blend.cooc > 0.0 || blend.mf > 0.0;
    if let Some(user) = user {
        let profile = &user.profile;
        let half_life = config.profile.half_life_ms;
        let (mut seed_weight, mut history_weight) = (1.0f32, 1.0f32);
        if retrieve_neighbors {
            let seeds = profile.recent.iter().rev().take(ranking.seed_items);
            items.cooccurrence.touch_lists(seeds.map(|r| r.item));
        }
        for (rank, recent) in profile.recent.iter().rev().enumerate() {
            if rank >= ranking.seed_items && candidates.is_blocked(recent.item) {
                // Neither a candidate nor a seed: its interest is not needed.
                history_weight *= ranking.history_decay;
                continue;
            }
            let decayed = recent.interest.value_at(now, half_life);
            let interest = decayed * seed_weight;
            seed_weight *= ranking.seed_decay;
            if blend.history > 0.0 {
                let again = if profile.has_purchased(recent.item) {
                    comeback(items, asker.rebuys, recent.item, ranking)
                } else {
                    Some(1.0)
                };
                if let Some(again) = again {
                    candidates.add(
                        recent.item,
                        Source::History,
                        decayed * history_weight * again,
                    );
                }
            }
            history_weight *= ranking.history_decay;
            if rank >= ranking.seed_items {
                continue;
            }
            if retrieve_neighbors {
                items
                    .cooccurrence
                    .for_each_similar(recent.item, |neighbor, similarity| {
                        candidates.add(neighbor, Source::Cooc, interest * similarity);
                    });
            }
            if blend.cross > 0.0 {
                items
                    .cooccurrence
                    .for_each_bought_after(recent.item, |bought, similarity| {
                        candidates.add(bought, Source::Cross, interest * similarity);
                    });
            }
        }
    }
    if blend.popular > 0.0 || blend.mf > 0.0 {
        for (item, score) in items.popularity.trending_unordered() {
            candidates.add(item, Source::Popular, score);
        }
    }
    if let Some(user) = user {
        if blend.content > 0.0 {
            content::gather(candidates, items, (user, now), (config, ranking));
        }
        if let Some(segment) = user.segment.filter(|_| blend.segment > 0.0) {
            let size = config.content.segment_trending_size;
            for (item, score) in items.segments.trending(segment, size) {
                candidates.add(item, Source::Segment, score);
            }
        }
    }
}

/// The catalog's word: nothing out of stock or removed.
fn exclude_unavailable(candidates: &mut Candidates, items: &ItemModel) {
    for slot in 0..candidates.len() {
        if !items.catalog.recommendable(candidates.item(slot)) {
            candidates.excluded[slot] = true;
        }
    }
}

/// A filtered request's own candidates: the attribute's popular items, as popular ones.
fn gather_with_attribute(candidates: &mut Candidates, items: &ItemModel, attribute: u32) {
    let popular = items.catalog.popular_with(attribute);
    for (item, relative) in relative_popularity(items, popular) {
        candidates.raise(item, Source::Popular, relative);
    }
}

/// Each item with its trending score relative to the best of `list`.
fn relative_popularity<'a>(
    items: &'a ItemModel,
    list: &'a [u32],
) -> impl Iterator<Item = (u32, f32)> + 'a {
    let score = |item: u32| items.popularity.score(item);
    let best = list
        .iter()
        .map(|&item| score(item))
        .fold(f64::MIN_POSITIVE, f64::max);
    list.iter()
        .map(move |&item| (item, (score(item) / best) as f32))
}

/// A request's restrictions: the attribute and the price range.
fn exclude_restricted(candidates: &mut Candidates, items: &ItemModel, filters: &Filters) {
    if filters.attribute.is_none() && filters.price.is_none() {
        return;
    }
    let catalog = &items.catalog;
    for slot in 0..candidates.len() {
        let item = candidates.item(slot);
        let has_attribute = filters
            .attribute
            .is_none_or(|a| catalog.attributes_of(item).contains(&a));
        let priced = filters.price.is_none_or(|range| {
            catalog
                .listing(item)
                .is_some_and(|listing| range.holds(listing.price))
        });
        if !(has_attribute && priced) {
            candidates.excluded[slot] = true;
        }
    }
}

/// How much bought `item` may count again for this asker (see `RebuyTally::comeback`).
fn comeback(
    items: &ItemModel,
    rebuys: &RebuyTally,
    item: u32,
    ranking: &RankingConfig,
) -> Option<f32> {
    let category = items.category_of.get(item as usize).copied();
    rebuys.comeback(category.filter(|&c| c != NO_CATEGORY), ranking)
}

/// What the user bought, unless buyers re-buy in its category.
#[inline(never)]
fn exclude_bought(
    candidates: &mut Candidates,
    items: &ItemModel,
    asker: Asker,
    ranking: &RankingConfig,
) {
    if let Some(user) = asker.user {
        // Only candidates need the (category, rate) lookup.
        for item in user.profile.purchased() {
            if candidates.holds(item) && comeback(items, asker.rebuys, item, ranking).is_none() {
                candidates.exclude(item);
            }
        }
    }
}

/// What the request excludes outright: its items, and the user's recent ones if asked. A
/// list, not a set: each item is one store into the candidates' dense index, no hashing.
fn block_excluded(candidates: &mut Candidates, asker: Asker, filters: &Filters) {
    for &item in filters.exclude_items.unwrap_or_default() {
        candidates.block(item);
    }
    if let Some(user) = asker.user.filter(|_| filters.exclude_seen) {
        for recent in &user.profile.recent {
            candidates.block(recent.item);
        }
    }
}

/// What the user dismissed (an item, or its category) within the horizon.
fn exclude_dismissed(
    candidates: &mut Candidates,
    items: &ItemModel,
    (user, now_ms): (&UserState, i64),
    limits: &FeedbackConfig,
) {
    let Some(memory) = user.feedback.as_deref().filter(|m| !m.dismissed.is_empty()) else {
        return;
    };
    for slot in 0..candidates.len() {
        let item = candidates.item(slot);
        let category = items.category_of.get(item as usize).copied();
        let category = category.filter(|&c| c != NO_CATEGORY);
        if memory.blocks(item, category, now_ms, limits) {
            candidates.excluded[slot] = true;
        }
    }
}

/// Items shown to the user again and again without a touch rank lower, for a while.
fn demote_ignored(
    ranked: &mut [Ranked],
    candidates: &Candidates,
    memory: &FeedbackMemory,
    (now_ms, limits): (i64, &FeedbackConfig),
) {
    let demoted: Vec<u32> = (memory.demoted(now_ms, limits))
        .filter(|&item| candidates.holds(item))
        .collect();
    if demoted.is_empty() {
        return;
    }
    for r in ranked.iter_mut().filter(|r| demoted.contains(&r.item())) {
        *r = Ranked::new(r.item(), r.score() * limits.demote_factor);
    }
}

/// Per source, the weight divided by the best remaining candidate's score: multiplying a raw
/// score by it scales the source to [0, weight]. MF's factor is set once MF has run.
#[inline(never)]
fn source_factors(candidates: &Candidates, blend: &Blend) -> [f32; SOURCE_COUNT] {
    let mut best = [0.0f32; SOURCE_COUNT];
    for (entry, &excluded) in candidates.entries.iter().zip(&candidates.excluded) {
        if !excluded {
            let scores = &entry.scores;
            // Not `f32::max`, whose NaN rule keeps the loop from being vectorised; `best`
            // starts at 0 and never holds a NaN, so the result is the same.
            for (b, &s) in best.iter_mut().zip(scores) {
                *b = if s > *b { s } else { *b };
            }
        }
    }
    let mut factors = [0.0f32; SOURCE_COUNT];
    for source in SOURCES {
        let i = source as usize;
        // A best score below the normal range (interests decayed for months) would make the
        // factor overflow to infinity: such a source counts as empty.
        if best[i] >= f32::MIN_POSITIVE && source != Source::Mf {
            factors[i] = source.weight(blend) / best[i];
        }
    }
    factors
}

#[inline(never)]
fn blend_without_mf(
    candidates: &Candidates,
    factors: &[f32; SOURCE_COUNT],
    ranked: &mut Vec<Ranked>,
) {
    ranked.clear();
    let entries = candidates.entries.iter().zip(&candidates.excluded);
    for (entry, &excluded) in entries {
        if !excluded {
            let score = entry.scores.iter().zip(factors).map(|(s, f)| s * f).sum();
            ranked.push(Ranked::new(entry.item, score));
        }
    }
}

/// Adds the MF score, scaled by the best positive one, to each ranked candidate; records raw
/// MF scores in `candidates` and returns MF's factor.
fn add_mf(
    ranked: &mut [Ranked],
    candidates: &mut Candidates,
    user_factors: &[f32],
    items: &ItemModel,
    weight: f32,
) -> f32 {
    let mf = Source::Mf as usize;
    let mut best = 0.0f32;
    for r in ranked.iter() {
        let score = dot(user_factors, items.factors.get(r.item()));
        candidates.scores_of_mut(r.item())[mf] = score;
        best = best.max(score);
    }
    if best < f32::MIN_POSITIVE {
        return 0.0;
    }
    let factor = weight / best;
    for r in ranked.iter_mut() {
        r.add_score(factor * candidates.scores_of(r.item())[mf].max(0.0));
    }
    factor
}

fn sources_of(scores: &[f32; SOURCE_COUNT], factors: &[f32; SOURCE_COUNT]) -> Sources {
    let mut sources = Sources::default();
    for source in SOURCES {
        if scores[source as usize] * factors[source as usize] > 0.0 {
            sources.insert(source);
        }
    }
    sources
}

/// Keeps the `n` best (in no particular order).
fn keep_best(ranked: &mut Vec<Ranked>, n: usize) {
    if n == 0 {
        ranked.clear();
    } else if ranked.len() > n {
        ranked.select_nth_unstable_by_key(n - 1, |r| r.0);
        ranked.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::{Candidates, Source};

    /// A request that blocked item 3 and made item 5 a candidate.
    fn marked_request() -> Candidates {
        let mut candidates = Candidates::default();
        candidates.clear();
        candidates.block(3);
        candidates.add(5, Source::Popular, 1.0);
        candidates
    }

    #[test]
    fn a_new_request_starts_with_no_marks() {
        let mut candidates = marked_request();
        assert!(candidates.is_blocked(3) && candidates.holds(5));
        candidates.clear();
        assert!(!candidates.is_blocked(3) && !candidates.holds(5));
        assert_eq!(candidates.len(), 0);
    }

    #[test]
    fn a_request_number_that_wraps_forgets_the_marks_of_its_namesake() {
        let mut candidates = marked_request();
        // 2^32 - 1 requests later the count wraps to the number that set those marks.
        candidates.request = u32::MAX;
        candidates.clear();
        assert!(!candidates.is_blocked(3) && !candidates.holds(5));
        candidates.add(3, Source::Popular, 2.0);
        assert_eq!(candidates.scores_of(3)[Source::Popular as usize], 2.0);
    }
}
