//! Configuration: serde structs with defaults for every key, loaded from TOML and validated with
//! errors that name the key and the rule.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::items_config::ItemsConfig;
pub use crate::query::QueryConfig;
use streamrec_engine::config as engine_rules;
pub use streamrec_engine::config::{
    Blend, CleanConfig, ContentConfig, CoocConfig, DedupConfig, EngineConfig, InvalidSetting,
    MfConfig, PopularityConfig, ProfileConfig, RankingConfig, Similarity, TypeWeights,
};

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
    pub items: ItemsConfig,
    pub query: QueryConfig,
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
        let text = std::fs::read_to_string(&self.file).map_err(|source| ConfigError::Read {
            path: self.file.clone(),
            source,
        })?;
        crate::triggers::Rules::parse(&text).map_err(|err| match err {
            crate::triggers::RulesError::Parse { message, .. } => ConfigError::Parse {
                path: self.file.clone(),
                message,
            },
            other => ConfigError::Triggers(other),
        })
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

/// The most dedup keys one changelog record carries (see `kafka.changelog_dedup_keys`).
pub const MAX_CHANGELOG_DEDUP_KEYS: usize = 40_000;
/// The most records of dedup keys a partition keeps (see `kafka.changelog_dedup_slots`): a
/// restore reads them all.
pub const MAX_CHANGELOG_DEDUP_SLOTS: u32 = 100;

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
    /// With a changelog: each checkpoint writes, after an advanced partition's position, the
    /// dedup keys it took since its previous such record, at most this many (the latest; at
    /// most 40000: 24 bytes a key; 0: none), so that its next owner drops the same duplicates.
    pub changelog_dedup_keys: usize,
    /// How many such records a partition keeps (in slots taken in turn, at most 100): the keys
    /// of its last this many checkpoints go to its next owner.
    pub changelog_dedup_slots: u32,
    /// Where each instance publishes its online metrics (`streamrec.online-metrics.v1`, keyed
    /// by `instance_id`, which it then requires); empty: none.
    pub online_metrics_topic: String,
    pub session_timeout_ms: u64,
    /// How long `run` waits at start for a consumed topic (input or catalog) that does not exist
    /// before it stops naming it; `/readyz` names it meanwhile.
    pub missing_topic_timeout_ms: u64,
    /// Schema Registry ids of the output topics' schemas; none by default (plain JSON).
    pub schema_ids: OutputSchemaIds,
    /// Any librdkafka property (TLS, SASL, timeouts); these win over the settings above.
    pub librdkafka: std::collections::BTreeMap<String, String>,
}

/// The ids a shop's Confluent Schema Registry gave the output schemas (`docs/schemas`,
/// registered as JSON Schema). A topic with an id gets every message in Confluent's wire
/// format (a zero byte, the id in 4 bytes big-endian, then the JSON), which deserializers
/// such as `KafkaJsonSchemaDeserializer` and Kafka Connect's `JsonSchemaConverter` expect.
/// 0: plain JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSchemaIds {
    pub recommendations: u32,
    pub similar_items: u32,
    pub triggers: u32,
    pub online_metrics: u32,
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
            changelog_dedup_keys: 5_000,
            changelog_dedup_slots: 24,
            online_metrics_topic: String::new(),
            session_timeout_ms: 10_000,
            missing_topic_timeout_ms: 30_000,
            schema_ids: OutputSchemaIds::default(),
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
    /// Input messages processed but not yet fully acknowledged before consuming pauses. With
    /// coalescing an input stays open until its user's coalesced update is acknowledged, so this
    /// caps a worker at `max_in_flight / min_update_interval` events/s.
    pub max_in_flight: usize,
    /// On SIGINT/SIGTERM, how long the drain may take: publishing what is owed, waiting for its
    /// acknowledgements, the item owners' catch-up and the final flush share this one budget.
    pub drain_timeout_ms: u64,
    /// After SIGINT/SIGTERM, `run` exits (75) by this time whatever it still waits for
    /// (a commit or a group leave a broker never answers): keep it below the orchestrator's
    /// grace period, so the exit is logged rather than a SIGKILL.
    pub shutdown_limit_ms: u64,
    /// Worker tasks; partition p goes to worker p % workers. Users stay with their partition's
    /// worker; the item model is shared. 1 keeps the engine exactly deterministic.
    pub workers: usize,
    /// A rejected input larger than this goes to the dead letters as a prefix of this size (with
    /// headers saying so): the producer and the topic must accept every dead letter.
    pub dead_letter_max_bytes: usize,
    /// How often (ms of wall time) each instance publishes its online metrics on
    /// `kafka.online_metrics_topic` (and once more at shutdown).
    pub online_summary_interval_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            top_n: 10,
            exclude_seen: false,
            min_update_interval_ms: 1000,
            similar_items_n: 10,
            similar_change_threshold: 0.2,
            max_in_flight: 500_000,
            drain_timeout_ms: 10_000,
            shutdown_limit_ms: 30_000,
            workers: 1,
            dead_letter_max_bytes: 256 * 1024,
            online_summary_interval_ms: 60_000,
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
        if self.kafka.changelog_dedup_keys > MAX_CHANGELOG_DEDUP_KEYS {
            let rule = format!(
                "must be at most {MAX_CHANGELOG_DEDUP_KEYS} (24 bytes a key, inside Kafka's default 1 MB message)"
            );
            return Err(invalid("kafka.changelog_dedup_keys", &rule));
        }
        let slots = self.kafka.changelog_dedup_slots;
        if !(1..=MAX_CHANGELOG_DEDUP_SLOTS).contains(&slots) {
            let rule =
                format!("must be 1 to {MAX_CHANGELOG_DEDUP_SLOTS} (a restore reads them all)");
            return Err(invalid("kafka.changelog_dedup_slots", &rule));
        }
        Ok(())
    }
}

impl Config {
    /// Item-owned scale-out replaces model-updates replication.
    fn validate_items(&self) -> Result<(), ConfigError> {
        if !self.items.owned() {
            return Ok(());
        }
        if !self.kafka.model_updates_topic.is_empty() {
            return Err(invalid(
                "items.work_topic",
                "replaces kafka.model_updates_topic: set one of them",
            ));
        }
        let topics = self.kafka.all_topics();
        for (key, topic) in [
            ("items.work_topic", &self.items.work_topic),
            ("items.records_topic", &self.items.records_topic),
            ("items.changelog_topic", &self.items.changelog_topic),
        ] {
            if !topic.is_empty() && topics.contains(topic) {
                return Err(invalid(key, "must differ from every kafka topic"));
            }
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
        for internal in [
            &self.model_updates_topic,
            &self.changelog_topic,
            &self.online_metrics_topic,
        ] {
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
        for (key, topic) in [
            ("kafka.model_updates_topic", &self.model_updates_topic),
            ("kafka.online_metrics_topic", &self.online_metrics_topic),
        ] {
            if !topic.is_empty() && self.instance_id.trim().is_empty() {
                let rule = format!("must name this instance when {key} is set");
                return Err(invalid("kafka.instance_id", &rule));
            }
        }
        let consumed = self.consumed_topics();
        if consumed.contains(&self.online_metrics_topic)
            || outputs.contains(&&self.online_metrics_topic)
        {
            return Err(invalid(
                "kafka.online_metrics_topic",
                "must differ from the consumed and output topics",
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
        positive(
            "pipeline.online_summary_interval_ms",
            self.online_summary_interval_ms as i64,
        )?;
        positive("pipeline.drain_timeout_ms", self.drain_timeout_ms as i64)?;
        if self.shutdown_limit_ms <= self.drain_timeout_ms {
            return Err(invalid(
                "pipeline.shutdown_limit_ms",
                "must be above pipeline.drain_timeout_ms (the drain is one part of the shutdown)",
            ));
        }
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

impl From<InvalidSetting> for ConfigError {
    fn from(setting: InvalidSetting) -> ConfigError {
        ConfigError::Invalid {
            key: setting.key,
            rule: setting.rule,
        }
    }
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
        config.items.validate()?;
        config.validate_items()?;
        config.query.validate()?;
        config.validate_listeners()?;
        Ok(config)
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let (admin, query) = (self.admin.address(), self.query.address());
        if admin.is_some() && admin == query {
            let rule = "must differ from admin.listen: the query API has its own listener";
            return Err(invalid("query.listen", rule));
        }
        if !self.query.members_topic.is_empty() && self.kafka.instance_id.trim().is_empty() {
            let rule = "must name this instance with query.members_topic";
            return Err(invalid("kafka.instance_id", rule));
        }
        Ok(())
    }
}

pub(crate) fn invalid(key: &'static str, rule: &str) -> ConfigError {
    engine_rules::invalid(key, rule).into()
}

fn positive(key: &'static str, value: i64) -> Result<(), ConfigError> {
    Ok(engine_rules::positive(key, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_file_is_valid_and_has_every_kind() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/triggers.toml");
        let triggers = TriggersConfig {
            file: file.display().to_string(),
        };
        let rules = triggers.rules().unwrap();
        let kinds: Vec<&str> = rules.rules.iter().map(|r| r.kind.name()).collect();
        for kind in crate::triggers::kind_names() {
            assert!(
                kinds.contains(&kind),
                "config/triggers.toml has no {kind} rule"
            );
        }
    }

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
            (
                "[engine.ranking]\nrepurchase_min_rate = 1.5",
                "engine.ranking.repurchase_min_rate`: must be in 0.0..=1.0",
            ),
            (
                "[engine.ranking]\nrepurchase_weight = -1.0",
                "engine.ranking.repurchase_weight`: must be in 0.0..=10.0",
            ),
            (
                "[engine.ranking]\nrepurchase_prior = nan",
                "engine.ranking.repurchase_prior",
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
                "[kafka]\nchangelog_dedup_keys = 40001",
                "kafka.changelog_dedup_keys`: must be at most 40000",
            ),
            (
                "[kafka]\nchangelog_dedup_slots = 0",
                "kafka.changelog_dedup_slots`: must be 1 to 100",
            ),
            (
                "[kafka]\nchangelog_dedup_slots = 101",
                "kafka.changelog_dedup_slots`: must be 1 to 100",
            ),
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
                "[pipeline]\ndrain_timeout_ms = 30000",
                "pipeline.shutdown_limit_ms`: must be above pipeline.drain_timeout_ms",
            ),
            (
                "[state]\ncheckpoint_interval_ms = 0",
                "state.checkpoint_interval_ms",
            ),
            ("[admin]\nlisten = \"localhost\"", "admin.listen"),
            ("[query]\nlisten = \"localhost:80\"", "query.listen"),
            ("[query]\npartitioner = \"random\"", "query.partitioner"),
            ("[query]\nmax_n = 0", "query.max_n"),
            ("[query]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:1\"", "query.listen"),
            ("[query]\nmembers_topic = \"m\"", "query.members_topic"),
            ("[query]\nlisten = \"0.0.0.0:8080\"\nmembers_topic = \"m\"", "query.advertise_url"),
            ("[query]\nlisten = \"127.0.0.1:8080\"\nmembers_topic = \"m\"\nadvertise_url = \"10.0.0.1:8080\"", "query.advertise_url"),
            ("[query]\nlisten = \"127.0.0.1:8080\"\nmembers_topic = \"m\"", "kafka.instance_id"),
            ("[items]\nwork_topic = \"w\"", "both or neither"),
            (
                "[items]\nwork_topic = \"w\"\nrecords_topic = \"w\"",
                "must differ from items.work_topic",
            ),
            ("[items]\nsignificance = 1.0", "items.significance"),
            ("[items]\nmax_batch_ops = 1", "items.max_batch_ops"),
            ("[items]\nchangelog_topic = \"c\"", "needs items.work_topic"),
            (
                "[items]\nwork_topic = \"w\"\nrecords_topic = \"r\"\nchangelog_topic = \"r\"",
                "must differ from items.work_topic and items.records_topic",
            ),
            (
                "[items]\nwork_topic = \"w\"\nrecords_topic = \"r\"\n[kafka]\nmodel_updates_topic = \"m\"\ninstance_id = \"i\"",
                "replaces kafka.model_updates_topic",
            ),
            (
                "[items]\nwork_topic = \"events\"\nrecords_topic = \"r\"",
                "must differ from every kafka topic",
            ),
        ];
        for (text, expected) in cases {
            let message = Config::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
    }
}
