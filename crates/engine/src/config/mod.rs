//! The engine's settings: serde structs with defaults for every key (the `[engine]` table of
//! the service's config file), validated with errors that name the key and the rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::EventType;

mod catalog_names;
pub mod experiments;
mod shop_names;

pub use catalog_names::{CatalogNames, CATALOG_FIELDS};
pub use shop_names::ShopNames;

/// Everything the sans-IO engine needs; nothing here knows about Kafka or files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Seeds factor initialisation and negative sampling.
    pub seed: u64,
    /// Items the model holds at most (0: no cap). Items are never forgotten, so an event naming
    /// a new item beyond it is refused (`item_limit`); catalog listings are not capped.
    pub max_items: u64,
    pub weights: TypeWeights,
    pub clean: CleanConfig,
    pub dedup: DedupConfig,
    pub profile: ProfileConfig,
    pub cooccurrence: CoocConfig,
    pub factorization: MfConfig,
    pub popularity: PopularityConfig,
    pub content: ContentConfig,
    pub ranking: RankingConfig,
    pub online: OnlineConfig,
    pub feedback: FeedbackConfig,
    /// A/B experiments on ranking (`[[engine.experiments]]`); see `experiments`.
    pub experiments: Vec<experiments::Experiment>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            seed: 42,
            max_items: 0,
            weights: TypeWeights::default(),
            clean: CleanConfig::default(),
            dedup: DedupConfig::default(),
            profile: ProfileConfig::default(),
            cooccurrence: CoocConfig::default(),
            factorization: MfConfig::default(),
            popularity: PopularityConfig::default(),
            content: ContentConfig::default(),
            ranking: RankingConfig::default(),
            online: OnlineConfig::default(),
            feedback: FeedbackConfig::default(),
            experiments: Vec::new(),
        }
    }
}

/// Impressions and dismissals (see `feedback`): how long they count and how many are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// Impressed items kept per user (the least recently shown leaves first).
    pub max_impressed_items: usize,
    /// Dismissals kept per user (the oldest leaves first).
    pub max_dismissed: usize,
    /// An item shown this many times since the user last touched it is demoted for them.
    pub demote_after: u16,
    /// For this long after it was last shown.
    pub demote_for_ms: i64,
    /// A demoted item's score is multiplied by this.
    pub demote_factor: f32,
    /// A dismissed item (or category) is not recommended to the user for this long.
    pub dismiss_for_ms: i64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            max_impressed_items: 200,
            max_dismissed: 100,
            demote_after: 3,
            demote_for_ms: 7 * 24 * 3_600_000,
            demote_factor: 0.1,
            dismiss_for_ms: 30 * 24 * 3_600_000,
        }
    }
}

/// Online metrics (see `online`): how long a list shown to a user counts as seen, and how
/// many of its items that they touched a later purchase can be attributed to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnlineConfig {
    /// An event is judged against the user's last list if it comes at most this long after
    /// the list was shown (the user's event it was made for, or a later query's time).
    pub horizon_ms: i64,
    /// Recommended items a user touched, kept per user for attributing purchases.
    pub max_engaged: usize,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            horizon_ms: 3_600_000,
            max_engaged: 16,
        }
    }
}

/// Content-based candidates (catalog attributes) and segment popularity (user attributes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentConfig {
    /// Most popular items kept per attribute (category, brand, tag).
    pub popular_per_attribute: usize,
    /// Most recently listed items kept per attribute: how items nobody has touched yet are found.
    pub newest_per_attribute: usize,
    /// The user's strongest attributes that gather candidates per request.
    pub taste_attributes: usize,
    /// Users with at most this many events also get each attribute's popular items; everyone
    /// gets its newest listings (from their 3 strongest attributes once past this).
    pub cold_user_events: u64,
    /// User attributes whose values form a shopper's segment (e.g. region and age band); empty
    /// turns segment popularity off.
    pub segment_attributes: Vec<String>,
    /// Segments tracked; users of further segments get no segment candidates.
    pub max_segments: usize,
    /// Trending items kept per segment.
    pub segment_trending_size: usize,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig {
            popular_per_attribute: 50,
            newest_per_attribute: 20,
            taste_attributes: 8,
            cold_user_events: 20,
            segment_attributes: vec!["region".into(), "age_band".into()],
            max_segments: 1000,
            segment_trending_size: 50,
        }
    }
}

/// How much each event type says about a shopper's interest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TypeWeights {
    pub view: f32,
    pub favorite: f32,
    pub add_to_cart: f32,
    pub purchase: f32,
}

impl Default for TypeWeights {
    fn default() -> Self {
        TypeWeights {
            view: 1.0,
            favorite: 2.0,
            add_to_cart: 3.0,
            purchase: 4.0,
        }
    }
}

impl TypeWeights {
    pub fn of(&self, kind: EventType) -> f32 {
        match kind {
            EventType::View => self.view,
            EventType::Favorite => self.favorite,
            EventType::AddToCart => self.add_to_cart,
            EventType::Purchase => self.purchase,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanConfig {
    /// Larger payloads are rejected before parsing (`payload_too_large`).
    pub max_payload_bytes: usize,
    /// Ids longer than this many characters (after trimming) are rejected (`id_too_long:<field>`);
    /// characters, as the JSON Schemas' `maxLength` counts them.
    pub max_id_len: usize,
    /// Events before this epoch-ms instant are rejected; default 2000-01-01T00:00:00Z.
    pub min_ts_ms: i64,
    /// Events further ahead of their message's Kafka timestamp are rejected.
    pub max_future_skew_ms: i64,
    /// Profile attributes and catalog tags per message; more are rejected
    /// (`too_many_attributes:<field>`).
    pub max_attributes: usize,
    /// Characters per attribute value, brand or tag (`attribute_too_long:<field>`).
    pub max_attribute_len: usize,
    /// Items per impression event (`too_many_items:item_ids`).
    pub max_impression_items: usize,
    /// The shop's names for input fields, as `user_id = "userId"` (see `ShopNames`).
    pub field_names: BTreeMap<String, String>,
    /// The shop's event type names and the type each means, as `view_item = "view"`.
    pub event_types: BTreeMap<String, String>,
    /// The shop's names for catalog listing fields, as `item_id = "sku"` (see `CatalogNames`).
    pub catalog_field_names: BTreeMap<String, String>,
}

impl Default for CleanConfig {
    fn default() -> Self {
        CleanConfig {
            max_payload_bytes: 16 * 1024,
            max_id_len: 128,
            min_ts_ms: 946_684_800_000,
            max_future_skew_ms: 24 * 3600 * 1000,
            max_attributes: 32,
            max_attribute_len: 128,
            max_impression_items: 100,
            field_names: BTreeMap::new(),
            event_types: BTreeMap::new(),
            catalog_field_names: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// At most this many event keys are remembered.
    pub max_entries: usize,
    /// Keys older than this (event time, behind the latest event) are forgotten.
    pub window_ms: i64,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            max_entries: 1_000_000,
            window_ms: 3600 * 1000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    /// Distinct recent items kept per user.
    pub max_recent_items: usize,
    /// Purchased items kept per user (the filter of bought items, the re-buy count).
    pub max_purchased_items: usize,
    /// Categories kept per user in the affinity list.
    pub max_categories: usize,
    /// Half-life of category affinity and of the interest in a recent item.
    pub half_life_ms: i64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            max_recent_items: 50,
            max_purchased_items: 200,
            max_categories: 16,
            half_life_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    Cosine,
    Llr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoocConfig {
    /// An event pairs its item with the user's last M distinct items.
    pub window_items: usize,
    /// Pair weight halves for every this many ms between the two interactions.
    pub pair_half_life_ms: i64,
    /// Neighbours kept per item (top-K by similarity, maintained incrementally).
    pub neighbors_per_item: usize,
    /// Pair counters kept per item; the weakest are pruned past twice this.
    pub counters_per_item: usize,
    pub similarity: Similarity,
    /// Asymmetric cosine `c_ab / (n_a^alpha · n_b^(1−alpha))`: 0.5 is plain cosine; higher
    /// favours neighbours that are popular in their own right.
    pub alpha: f32,
    /// A pair counts this much in the row of the item that came later (1 = undirected): what
    /// a user does next depends on what they just did, more than the other way round.
    pub backward_weight: f32,
    /// A pair counts this much less for each item between the two in the user's window
    /// (1 = all equal).
    pub position_decay: f32,
}

impl Default for CoocConfig {
    fn default() -> Self {
        CoocConfig {
            window_items: 7,
            pair_half_life_ms: 24 * 3600 * 1000,
            neighbors_per_item: 50,
            counters_per_item: 256,
            similarity: Similarity::Cosine,
            alpha: 0.8,
            backward_weight: 0.6,
            position_decay: 0.85,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfConfig {
    pub rank: usize,
    pub learning_rate: f32,
    /// The rate of the user's half of each step: high, so a user's vector follows what they
    /// do now (recency) rather than the average of their past.
    pub user_learning_rate: f32,
    pub regularization: f32,
    /// Sampled negatives (target 0) per positive update.
    pub negatives: usize,
    /// Recent item occurrences negatives are drawn from (popularity-proportional sampling).
    pub sample_pool: usize,
    pub init_scale: f32,
}

impl Default for MfConfig {
    fn default() -> Self {
        MfConfig {
            rank: 32,
            learning_rate: 0.1,
            user_learning_rate: 1.0,
            regularization: 0.01,
            negatives: 2,
            sample_pool: 10_000,
            init_scale: 0.1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopularityConfig {
    /// Half-life of the trending score.
    pub half_life_ms: i64,
    /// Items kept in the trending list; all of them are candidates for every request.
    pub trending_size: usize,
}

impl Default for PopularityConfig {
    fn default() -> Self {
        PopularityConfig {
            half_life_ms: 7 * 24 * 3600 * 1000,
            trending_size: 50,
        }
    }
}

/// Weights of each candidate source in the blended score; 0 switches a source off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Blend {
    pub history: f32,
    pub cooc: f32,
    pub cross: f32,
    pub mf: f32,
    pub popular: f32,
    /// Items sharing the catalog attributes the user leans to (categories, brands, tags).
    pub content: f32,
    /// Items trending in the user's segment (user attributes).
    pub segment: f32,
}

impl Blend {
    /// Only what is trending: a stranger's ranking.
    pub const TRENDING: Blend = Blend {
        history: 0.0,
        cooc: 0.0,
        cross: 0.0,
        mf: 0.0,
        popular: 1.0,
        content: 0.0,
        segment: 0.0,
    };

    /// Every weight, in the order of `experiments::BlendOverride::fields`.
    pub fn weights_mut(&mut self) -> [&mut f32; 7] {
        [
            &mut self.history,
            &mut self.cooc,
            &mut self.cross,
            &mut self.mf,
            &mut self.popular,
            &mut self.content,
            &mut self.segment,
        ]
    }
}

impl Default for Blend {
    fn default() -> Self {
        Blend {
            history: 10.0,
            cooc: 1.0,
            cross: 0.5,
            mf: 0.5,
            popular: 0.2,
            content: 0.3,
            segment: 0.3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankingConfig {
    pub blend: Blend,
    /// Recent items whose neighbours become candidates.
    pub seed_items: usize,
    /// Each older recent item counts this much less than the next newer one when its
    /// neighbours are gathered (1.0 = all equal).
    pub seed_decay: f32,
    /// The same, for ranking the user's own recent items (the history source).
    pub history_decay: f32,
    /// Candidates with the best blended score that matrix factorisation re-scores.
    pub mf_rescore: usize,
    /// A bought item may come back, its history score times its category's learned re-buy
    /// rate (see `rebuy`) times this; 0 = a bought item never comes back.
    pub repurchase_weight: f32,
    /// Bought items of a category re-bought less often than this never come back.
    pub repurchase_min_rate: f32,
    /// A category's re-buy rate counts the shop's as this many purchases of its own.
    pub repurchase_prior: f32,
}

impl Default for RankingConfig {
    fn default() -> Self {
        RankingConfig {
            blend: Blend::default(),
            seed_items: 10,
            seed_decay: 0.8,
            history_decay: 0.95,
            mf_rescore: 100,
            repurchase_weight: 1.0,
            repurchase_min_rate: 0.01,
            repurchase_prior: 20.0,
        }
    }
}

/// A setting that breaks one of the engine's rules: which key, which rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {rule}")]
pub struct InvalidSetting {
    pub key: &'static str,
    pub rule: String,
}

pub fn invalid(key: &'static str, rule: &str) -> InvalidSetting {
    InvalidSetting {
        key,
        rule: rule.to_owned(),
    }
}

pub fn positive(key: &'static str, value: i64) -> Result<(), InvalidSetting> {
    if value > 0 {
        Ok(())
    } else {
        Err(invalid(key, &format!("must be > 0, got {value}")))
    }
}

pub fn finite_non_negative(key: &'static str, value: f32) -> Result<(), InvalidSetting> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            key,
            &format!("must be finite and >= 0, got {value}"),
        ))
    }
}

impl EngineConfig {
    /// Checks every rule the engine relies on; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let w = &self.weights;
        for (key, value) in [
            ("engine.weights.view", w.view),
            ("engine.weights.favorite", w.favorite),
            ("engine.weights.add_to_cart", w.add_to_cart),
            ("engine.weights.purchase", w.purchase),
        ] {
            finite_non_negative(key, value)?;
        }
        positive(
            "engine.clean.max_payload_bytes",
            self.clean.max_payload_bytes as i64,
        )?;
        positive("engine.clean.max_id_len", self.clean.max_id_len as i64)?;
        positive(
            "engine.clean.max_future_skew_ms",
            self.clean.max_future_skew_ms,
        )?;
        positive("engine.dedup.max_entries", self.dedup.max_entries as i64)?;
        positive("engine.dedup.window_ms", self.dedup.window_ms)?;
        let p = &self.profile;
        positive("engine.profile.max_recent_items", p.max_recent_items as i64)?;
        positive(
            "engine.profile.max_purchased_items",
            p.max_purchased_items as i64,
        )?;
        positive("engine.profile.max_categories", p.max_categories as i64)?;
        positive("engine.profile.half_life_ms", p.half_life_ms)?;
        let c = &self.cooccurrence;
        positive("engine.cooccurrence.window_items", c.window_items as i64)?;
        positive("engine.cooccurrence.pair_half_life_ms", c.pair_half_life_ms)?;
        positive(
            "engine.cooccurrence.neighbors_per_item",
            c.neighbors_per_item as i64,
        )?;
        if c.counters_per_item < c.neighbors_per_item {
            return Err(invalid(
                "engine.cooccurrence.counters_per_item",
                "must be >= engine.cooccurrence.neighbors_per_item",
            ));
        }
        for (key, value) in [
            ("engine.cooccurrence.alpha", c.alpha),
            ("engine.cooccurrence.backward_weight", c.backward_weight),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(key, "must be in 0.0..=1.0"));
            }
        }
        if !(c.position_decay > 0.0 && c.position_decay <= 1.0) {
            return Err(invalid(
                "engine.cooccurrence.position_decay",
                "must be in (0.0, 1.0]",
            ));
        }
        let m = &self.factorization;
        if !(1..=512).contains(&m.rank) {
            return Err(invalid("engine.factorization.rank", "must be in 1..=512"));
        }
        finite_non_negative("engine.factorization.learning_rate", m.learning_rate)?;
        finite_non_negative(
            "engine.factorization.user_learning_rate",
            m.user_learning_rate,
        )?;
        finite_non_negative("engine.factorization.regularization", m.regularization)?;
        finite_non_negative("engine.factorization.init_scale", m.init_scale)?;
        positive("engine.factorization.sample_pool", m.sample_pool as i64)?;
        positive(
            "engine.popularity.half_life_ms",
            self.popularity.half_life_ms,
        )?;
        positive(
            "engine.popularity.trending_size",
            self.popularity.trending_size as i64,
        )?;
        self.ranking.validate()?;
        experiments::validate(&self.experiments, &self.ranking)?;
        positive(
            "engine.clean.max_attribute_len",
            self.clean.max_attribute_len as i64,
        )?;
        let content = &self.content;
        for (key, value) in [
            (
                "engine.content.popular_per_attribute",
                content.popular_per_attribute,
            ),
            (
                "engine.content.newest_per_attribute",
                content.newest_per_attribute,
            ),
            ("engine.content.taste_attributes", content.taste_attributes),
            ("engine.content.max_segments", content.max_segments),
            (
                "engine.content.segment_trending_size",
                content.segment_trending_size,
            ),
        ] {
            positive(key, value as i64)?;
        }
        positive("engine.online.horizon_ms", self.online.horizon_ms)?;
        let f = &self.feedback;
        positive(
            "engine.feedback.max_impressed_items",
            f.max_impressed_items as i64,
        )?;
        positive("engine.feedback.max_dismissed", f.max_dismissed as i64)?;
        positive("engine.feedback.demote_after", i64::from(f.demote_after))?;
        positive("engine.feedback.demote_for_ms", f.demote_for_ms)?;
        positive("engine.feedback.dismiss_for_ms", f.dismiss_for_ms)?;
        if !(f.demote_factor >= 0.0 && f.demote_factor <= 1.0) {
            return Err(invalid(
                "engine.feedback.demote_factor",
                "must be in [0.0, 1.0]",
            ));
        }
        positive(
            "engine.clean.max_impression_items",
            self.clean.max_impression_items as i64,
        )?;
        positive("engine.online.max_engaged", self.online.max_engaged as i64)?;
        ShopNames::of(&self.clean)?;
        CatalogNames::of(&self.clean)?;
        Ok(())
    }
}

impl RankingConfig {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let b = &self.blend;
        for (key, value) in [
            ("engine.ranking.blend.history", b.history),
            ("engine.ranking.blend.cooc", b.cooc),
            ("engine.ranking.blend.cross", b.cross),
            ("engine.ranking.blend.mf", b.mf),
            ("engine.ranking.blend.popular", b.popular),
            ("engine.ranking.blend.content", b.content),
            ("engine.ranking.blend.segment", b.segment),
        ] {
            finite_non_negative(key, value)?;
        }
        positive("engine.ranking.seed_items", self.seed_items as i64)?;
        positive("engine.ranking.mf_rescore", self.mf_rescore as i64)?;
        for (key, value, max) in [
            (
                "engine.ranking.repurchase_weight",
                self.repurchase_weight,
                10.0,
            ),
            (
                "engine.ranking.repurchase_min_rate",
                self.repurchase_min_rate,
                1.0,
            ),
            (
                "engine.ranking.repurchase_prior",
                self.repurchase_prior,
                1e6,
            ),
        ] {
            if !(0.0..=max).contains(&value) {
                return Err(invalid(key, &format!("must be in 0.0..={max:?}")));
            }
        }
        for (key, value) in [
            ("engine.ranking.seed_decay", self.seed_decay),
            ("engine.ranking.history_decay", self.history_decay),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(invalid(key, "must be in (0.0, 1.0]"));
            }
        }
        Ok(())
    }
}
