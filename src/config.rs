//! Configuration: serde structs with defaults for every key, loaded from TOML and validated with
//! errors that name the key and the rule.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::event::EventType;

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    pub kafka: KafkaConfig,
    pub pipeline: PipelineConfig,
    pub state: StateConfig,
    pub admin: AdminConfig,
    pub triggers: TriggersConfig,
}

/// Campaign triggers (see `config/triggers.toml`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggersConfig {
    /// The rules file; empty: no triggers.
    pub file: String,
}

impl TriggersConfig {
    /// The rules, checked (an invalid rule is an error naming the rule and the field).
    pub fn rules(&self) -> Result<crate::triggers::Rules, ConfigError> {
        if self.file.is_empty() {
            return Ok(crate::triggers::Rules::default());
        }
        crate::triggers::Rules::load(Path::new(&self.file)).map_err(ConfigError::Triggers)
    }
}

/// The admin HTTP listener of `run` (`/metrics`, `/healthz`, `/readyz`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port` to listen on, e.g. `127.0.0.1:9464`; empty: no listener.
    pub listen: String,
}

impl AdminConfig {
    /// The address to bind, if any.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.address().is_none() {
            return Err(invalid(
                "admin.listen",
                &format!(
                    "must be host:port with an IP address (127.0.0.1:9464), got {:?}",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// Where and how often `run` checkpoints its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The sled state dir; empty keeps state in memory only (a restart starts from scratch at
    /// the group's committed offsets).
    pub dir: String,
    /// Checkpoint at least this often (ms of wall time)...
    pub checkpoint_interval_ms: u64,
    /// ...or after this many input messages, whichever comes first.
    pub checkpoint_max_events: u64,
    /// Users kept in memory with a state dir; colder ones stay in the store until their next
    /// event. 0: no cap. A soft cap: users changed since the last checkpoint stay until it.
    pub max_users_in_memory: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: String::new(),
            checkpoint_interval_ms: 5_000,
            checkpoint_max_events: 100_000,
            max_users_in_memory: 0,
        }
    }
}

/// Where events come from and outputs go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub group_id: String,
    pub input_topics: Vec<String>,
    /// The compacted topic of `streamrec.item.v1` listings keyed by item id; empty: none.
    pub catalog_topic: String,
    pub recommendations_topic: String,
    pub similar_items_topic: String,
    pub dead_letter_topic: String,
    /// Where campaign triggers go (`streamrec.trigger.v1`, keyed by user).
    pub triggers_topic: String,
    /// Several instances: item-model updates go to this topic (keyed by item) and every instance
    /// applies the others'; empty: one instance, no replication.
    pub model_updates_topic: String,
    /// This instance's name among several (distinct per instance; required with
    /// `model_updates_topic`).
    pub instance_id: String,
    /// Compacted topic of user-side state keyed by user, partitioned like the inputs: each
    /// checkpoint writes its changed users there, and an instance given a partition restores
    /// that partition's users from it. Empty: none (needs `state.dir`).
    pub changelog_topic: String,
    pub session_timeout_ms: u64,
    /// How long `run` waits at start for a consumed topic (input or catalog) that does not exist
    /// before it stops naming it; `/readyz` names it meanwhile.
    pub missing_topic_timeout_ms: u64,
    /// Any librdkafka property (TLS, SASL, timeouts); these win over the settings above.
    pub librdkafka: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "streamrec".into(),
            input_topics: vec!["events".into()],
            catalog_topic: String::new(),
            recommendations_topic: "recommendations".into(),
            similar_items_topic: "similar-items".into(),
            dead_letter_topic: "dead-letter".into(),
            triggers_topic: "campaign-triggers".into(),
            model_updates_topic: String::new(),
            instance_id: String::new(),
            changelog_topic: String::new(),
            session_timeout_ms: 10_000,
            missing_topic_timeout_ms: 30_000,
            librdkafka: Default::default(),
        }
    }
}

/// How the pipeline turns engine state into outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Items per recommendation update.
    pub top_n: usize,
    /// Leave items the user recently touched out of recommendations.
    pub exclude_seen: bool,
    /// At most one update per user (and per item for similar-items) per interval; 0 = every event.
    pub min_update_interval_ms: u64,
    /// Neighbours per similar-items update.
    pub similar_items_n: usize,
    /// An item's neighbours are re-published when at least this share of them changed.
    pub similar_change_threshold: f32,
    /// Input messages processed but not yet fully acknowledged before consuming pauses.
    pub max_in_flight: usize,
    /// On SIGINT/SIGTERM, how long to wait for outputs to be acknowledged before giving up.
    pub drain_timeout_ms: u64,
    /// Worker tasks; partition p goes to worker p % workers. Users stay with their partition's
    /// worker; the item model is shared. 1 keeps the engine exactly deterministic.
    pub workers: usize,
    /// A rejected input larger than this goes to the dead letters as a prefix of this size (with
    /// headers saying so): the producer and the topic must accept every dead letter.
    pub dead_letter_max_bytes: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            top_n: 10,
            exclude_seen: false,
            min_update_interval_ms: 1000,
            similar_items_n: 10,
            similar_change_threshold: 0.2,
            max_in_flight: 50_000,
            drain_timeout_ms: 10_000,
            workers: 1,
            dead_letter_max_bytes: 256 * 1024,
        }
    }
}

impl Config {
    fn validate_state(&self) -> Result<(), ConfigError> {
        positive(
            "state.checkpoint_interval_ms",
            self.state.checkpoint_interval_ms as i64,
        )?;
        positive(
            "state.checkpoint_max_events",
            self.state.checkpoint_max_events as i64,
        )?;
        if !self.kafka.changelog_topic.is_empty() && self.state.dir.is_empty() {
            return Err(invalid(
                "kafka.changelog_topic",
                "needs state.dir (checkpoints are what the changelog carries)",
            ));
        }
        if !self.state.dir.is_empty() && self.pipeline.workers != 1 {
            return Err(invalid(
                "state.dir",
                "needs pipeline.workers = 1 (checkpoints of several workers are not built yet)",
            ));
        }
        Ok(())
    }
}

impl KafkaConfig {
    /// The topics outputs go to: recommendations, similar items, dead letters, triggers.
    pub fn output_topics(&self) -> [&String; 4] {
        [
            &self.recommendations_topic,
            &self.similar_items_topic,
            &self.dead_letter_topic,
            &self.triggers_topic,
        ]
    }

    /// Every topic `run` touches: what it reads, its outputs, and model updates if set.
    pub fn all_topics(&self) -> Vec<String> {
        let mut topics = self.consumed_topics();
        topics.extend(self.output_topics().into_iter().cloned());
        for internal in [&self.model_updates_topic, &self.changelog_topic] {
            if !internal.is_empty() {
                topics.push(internal.clone());
            }
        }
        topics
    }

    /// Every topic `run` and `replay` read: the inputs, then the catalog if there is one.
    pub fn consumed_topics(&self) -> Vec<String> {
        let mut topics = self.input_topics.clone();
        if !self.catalog_topic.is_empty() {
            topics.push(self.catalog_topic.clone());
        }
        topics
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let non_empty = |key: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(invalid(key, "must not be empty"))
            } else {
                Ok(())
            }
        };
        non_empty("kafka.brokers", &self.brokers)?;
        non_empty("kafka.group_id", &self.group_id)?;
        if self.input_topics.is_empty() || self.input_topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "kafka.input_topics",
                "must name at least one topic, none empty",
            ));
        }
        non_empty("kafka.recommendations_topic", &self.recommendations_topic)?;
        non_empty("kafka.similar_items_topic", &self.similar_items_topic)?;
        non_empty("kafka.dead_letter_topic", &self.dead_letter_topic)?;
        non_empty("kafka.triggers_topic", &self.triggers_topic)?;
        let outputs = self.output_topics();
        if self.input_topics.iter().any(|t| outputs.contains(&t)) {
            return Err(invalid(
                "kafka.input_topics",
                "must not include an output topic",
            ));
        }
        if !self.model_updates_topic.is_empty() && self.instance_id.trim().is_empty() {
            return Err(invalid(
                "kafka.instance_id",
                "must name this instance when kafka.model_updates_topic is set",
            ));
        }
        if outputs.contains(&&self.catalog_topic) || self.input_topics.contains(&self.catalog_topic)
        {
            return Err(invalid(
                "kafka.catalog_topic",
                "must differ from the input and output topics",
            ));
        }
        positive("kafka.session_timeout_ms", self.session_timeout_ms as i64)?;
        positive(
            "kafka.missing_topic_timeout_ms",
            self.missing_topic_timeout_ms as i64,
        )
    }
}

impl PipelineConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("pipeline.top_n", self.top_n as i64)?;
        positive("pipeline.similar_items_n", self.similar_items_n as i64)?;
        if !(0.0..=1.0).contains(&self.similar_change_threshold) {
            return Err(invalid(
                "pipeline.similar_change_threshold",
                "must be in 0.0..=1.0",
            ));
        }
        positive("pipeline.max_in_flight", self.max_in_flight as i64)?;
        positive("pipeline.drain_timeout_ms", self.drain_timeout_ms as i64)?;
        if !(1..=256).contains(&self.workers) {
            return Err(invalid("pipeline.workers", "must be in 1..=256"));
        }
        if !(crate::dead_letter::REFUSED_PREFIX_BYTES..=100_000_000)
            .contains(&self.dead_letter_max_bytes)
        {
            return Err(invalid(
                "pipeline.dead_letter_max_bytes",
                "must be in 4096..=100000000 (and below the producer's message.max.bytes)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid value for `{key}`: {rule}")]
    Invalid { key: &'static str, rule: String },
    #[error("{origin}: {rule}")]
    Override { origin: String, rule: String },
    #[error(transparent)]
    Triggers(crate::triggers::RulesError),
}

impl Config {
    /// Reads and validates a TOML file; keys it leaves out keep their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text).map_err(|err| match err {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: "<text>".into(),
            message: err.message().to_owned(),
        })?;
        config.validated()
    }

    /// The config if every section's rules hold; else the first broken rule, naming its key.
    pub fn validated(self) -> Result<Config, ConfigError> {
        let config = self;
        config.engine.validate()?;
        config.kafka.validate()?;
        config.pipeline.validate()?;
        config.validate_state()?;
        config.admin.validate()?;
        config.triggers.rules()?;
        Ok(config)
    }
}

/// Everything the sans-IO engine needs; nothing here knows about Kafka or files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Seeds factor initialisation and negative sampling.
    pub seed: u64,
    pub weights: TypeWeights,
    pub clean: CleanConfig,
    pub dedup: DedupConfig,
    pub profile: ProfileConfig,
    pub cooccurrence: CoocConfig,
    pub factorization: MfConfig,
    pub popularity: PopularityConfig,
    pub content: ContentConfig,
    pub ranking: RankingConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            seed: 42,
            weights: TypeWeights::default(),
            clean: CleanConfig::default(),
            dedup: DedupConfig::default(),
            profile: ProfileConfig::default(),
            cooccurrence: CoocConfig::default(),
            factorization: MfConfig::default(),
            popularity: PopularityConfig::default(),
            content: ContentConfig::default(),
            ranking: RankingConfig::default(),
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
    /// Purchased items kept per user (the never-recommend-again filter).
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfConfig {
    pub rank: usize,
    pub learning_rate: f32,
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
            learning_rate: 0.05,
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

impl Default for Blend {
    fn default() -> Self {
        Blend {
            history: 10.0,
            cooc: 1.0,
            cross: 0.5,
            mf: 0.3,
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
}

impl Default for RankingConfig {
    fn default() -> Self {
        RankingConfig {
            blend: Blend::default(),
            seed_items: 10,
            seed_decay: 0.8,
            history_decay: 0.95,
            mf_rescore: 100,
        }
    }
}

fn invalid(key: &'static str, rule: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        rule: rule.to_owned(),
    }
}

fn positive(key: &'static str, value: i64) -> Result<(), ConfigError> {
    if value > 0 {
        Ok(())
    } else {
        Err(invalid(key, &format!("must be > 0, got {value}")))
    }
}

fn finite_non_negative(key: &'static str, value: f32) -> Result<(), ConfigError> {
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
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        if !(0.0..=1.0).contains(&c.alpha) {
            return Err(invalid("engine.cooccurrence.alpha", "must be in 0.0..=1.0"));
        }
        let m = &self.factorization;
        if !(1..=512).contains(&m.rank) {
            return Err(invalid("engine.factorization.rank", "must be in 1..=512"));
        }
        finite_non_negative("engine.factorization.learning_rate", m.learning_rate)?;
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
        let b = &self.ranking.blend;
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
        positive("engine.ranking.seed_items", self.ranking.seed_items as i64)?;
        positive("engine.ranking.mf_rescore", self.ranking.mf_rescore as i64)?;
        for (key, value) in [
            ("engine.ranking.seed_decay", self.ranking.seed_decay),
            ("engine.ranking.history_decay", self.ranking.history_decay),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(invalid(key, "must be in (0.0, 1.0]"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_file_matches_defaults() {
        let text = include_str!("../config/streamrec.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[engine]\nbogus = 1", "unknown field `bogus`"),
            (
                "[engine.factorization]\nrank = 0",
                "engine.factorization.rank",
            ),
            ("[engine.weights]\nview = -1.0", "engine.weights.view"),
            ("[engine.dedup]\nwindow_ms = 0", "engine.dedup.window_ms"),
            (
                "[engine.cooccurrence]\ncounters_per_item = 4",
                "engine.cooccurrence.counters_per_item",
            ),
            (
                "[engine.ranking.blend]\nmf = nan",
                "engine.ranking.blend.mf",
            ),
            ("[kafka]\ninput_topics = []", "kafka.input_topics"),
            (
                "[kafka]\ninput_topics = [\"dead-letter\"]",
                "must not include an output topic",
            ),
            ("[kafka]\nbrokers = \" \"", "kafka.brokers"),
            ("[kafka]\nmodel_updates_topic = \"m\"", "kafka.instance_id"),
            ("[kafka]\nchangelog_topic = \"c\"", "kafka.changelog_topic"),
            (
                "[kafka]\ncatalog_topic = \"recommendations\"",
                "kafka.catalog_topic",
            ),
            (
                "[engine.content]\ntaste_attributes = 0",
                "engine.content.taste_attributes",
            ),
            (
                "[engine.clean]\nmax_attribute_len = 0",
                "engine.clean.max_attribute_len",
            ),
            ("[pipeline]\ntop_n = 0", "pipeline.top_n"),
            (
                "[pipeline]\nsimilar_change_threshold = 2.0",
                "pipeline.similar_change_threshold",
            ),
            ("[pipeline]\nbogus = 1", "unknown field `bogus`"),
            (
                "[state]\ndir = \"/tmp/s\"\n[pipeline]\nworkers = 2",
                "state.dir",
            ),
            (
                "[state]\ncheckpoint_interval_ms = 0",
                "state.checkpoint_interval_ms",
            ),
            ("[admin]\nlisten = \"localhost\"", "admin.listen"),
        ];
        for (text, expected) in cases {
            let message = Config::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
    }
}
