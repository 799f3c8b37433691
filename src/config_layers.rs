//! Where settings come from, each layer overriding the one before key by key: the embedded
//! defaults, the TOML file, `STREAMREC__SECTION__KEY` environment variables (nested sections
//! joined by `__`, e.g. `STREAMREC__ENGINE__DEDUP__MAX_ENTRIES`), then `--set section.key=value`
//! flags. An override that names no setting, or a value of the wrong type, is an error naming
//! the variable or flag.

use std::path::Path;

use toml::{Table, Value};

use crate::config::{Config, ConfigError};

const ENV_PREFIX: &str = "STREAMREC__";

/// Tables of string values whose keys are not settings of ours: any librdkafka property, and a
/// shop's names for fields and event types.
const FREE_TABLES: [&str; 4] = [
    "kafka.librdkafka",
    "engine.clean.field_names",
    "engine.clean.event_types",
    "engine.clean.catalog_field_names",
];

/// Keys that hold secrets (librdkafka properties), shown masked by `config check`.
const SECRET_MARKERS: [&str; 4] = ["password", "secret", "token", ".key"];

/// The effective configuration.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Config, ConfigError> {
    let defaults = Value::try_from(Config::default()).expect("the defaults serialise");
    let mut merged = defaults.clone();
    if let Some(path) = file {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let table: Table = toml::from_str(&text).map_err(|err| ConfigError::Parse {
            path: shown.clone(),
            message: err.message().to_owned(),
        })?;
        merge(&mut merged, Value::Table(table.clone()));
        if let Err(message) = as_config(&merged) {
            let message = first_unreadable(&defaults, &table).unwrap_or(message);
            return Err(ConfigError::Parse {
                path: shown,
                message,
            });
        }
    }
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let path = env_path(name.strip_prefix(ENV_PREFIX)?);
            Some((name, format!("{path}={value}")))
        })
        .collect();
    overrides.sort(); // the environment's order is arbitrary; applying in name order is stable
    overrides.extend(sets.iter().map(|s| (format!("--set {s}"), s.clone())));
    for (source, assignment) in &overrides {
        apply(&mut merged, &defaults, source, assignment)?;
    }
    // The file and each override were read as they were applied; left: rules across settings.
    let config = as_config(&merged).map_err(|message| ConfigError::Parse {
        path: "the layered settings".into(),
        message,
    })?;
    config.validated()
}

/// `KAFKA__GROUP_ID` → `kafka.group_id`; under `KAFKA__LIBRDKAFKA__` single underscores become
/// dots, since librdkafka's property names have dots (`SASL_PASSWORD` → `sasl.password`).
fn env_path(name: &str) -> String {
    let path = name.to_lowercase().replace("__", ".");
    match path.strip_prefix("kafka.librdkafka.") {
        Some(property) => format!("kafka.librdkafka.{}", property.replace('_', ".")),
        None => path,
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Table(into), Value::Table(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) if existing.is_table() && value.is_table() => {
                        merge(existing, value)
                    }
                    _ => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
}

/// Applies `section.key=value` from `source` (a variable or a flag, for the error).
fn apply(
    merged: &mut Value,
    defaults: &Value,
    source: &str,
    assignment: &str,
) -> Result<(), ConfigError> {
    let bad = |rule: String| ConfigError::Override {
        origin: source.to_owned(),
        rule,
    };
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| bad("expected section.key=value".into()))?;
    // A free table's keys are anyone's (librdkafka's property names have dots of their own):
    // everything after the table is one key.
    let free = FREE_TABLES.iter().find_map(|table| {
        let key = path.trim().strip_prefix(table)?.strip_prefix('.')?;
        Some((table, key))
    });
    let keys: Vec<&str> = match free {
        Some((table, key)) => table.split('.').chain([key]).collect(),
        None => path.split('.').map(str::trim).collect(),
    };
    if keys.iter().any(|k| k.is_empty()) {
        return Err(bad(format!("{path:?} is not a setting name")));
    }
    let free_map = free.is_some();
    let value = match lookup(defaults, &keys) {
        _ if free_map => Value::String(raw.to_owned()),
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Table(_)) => return Err(bad(format!("{path} is a section, not a setting"))),
        Some(_) => parse_value(raw).ok_or_else(|| bad(format!("{raw:?} is not a TOML value")))?,
        None => return Err(bad(format!("{path} names no setting"))),
    };
    set(merged, &keys, value);
    // A value of the wrong type or range for its setting (`-1` for a count).
    as_config(merged).map_err(|message| bad(format!("{path}: {message}")))?;
    Ok(())
}

/// `value` read as the whole configuration, or serde's reason why not.
fn as_config(value: &Value) -> Result<Config, String> {
    (value.clone().try_into()).map_err(|err: toml::de::Error| err.message().to_owned())
}

/// The first setting of `layer` that does not read on top of `defaults`, as `key: reason`:
/// reading the merged whole says what is wrong, not where.
fn first_unreadable(defaults: &Value, layer: &Table) -> Option<String> {
    let mut leaves = Vec::new();
    leaves_of(layer, &mut Vec::new(), &mut leaves);
    leaves.into_iter().find_map(|(keys, value)| {
        let mut alone = defaults.clone();
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        set(&mut alone, &names, value);
        let message = as_config(&alone).err()?;
        Some(format!("{}: {message}", keys.join(".")))
    })
}

/// Every value of `table` that is not a table, with its keys.
fn leaves_of(table: &Table, keys: &mut Vec<String>, leaves: &mut Vec<(Vec<String>, Value)>) {
    for (key, value) in table {
        keys.push(key.clone());
        match value {
            Value::Table(inner) => leaves_of(inner, keys, leaves),
            _ => leaves.push((keys.clone(), value.clone())),
        }
        keys.pop();
    }
}

fn lookup<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |v, key| v.get(key))
}

fn parse_value(raw: &str) -> Option<Value> {
    let table: Table = toml::from_str(&format!("v = {raw}")).ok()?;
    table.get("v").cloned()
}

fn set(value: &mut Value, keys: &[&str], new: Value) {
    let (last, parents) = keys.split_last().expect("at least one key");
    let mut node = value;
    for key in parents {
        let table = node.as_table_mut().expect("sections are tables");
        node = table
            .entry(key.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
    }
    node.as_table_mut()
        .expect("sections are tables")
        .insert(last.to_string(), new);
}

/// Whether a librdkafka property's value is masked when shown: a key naming a secret, unless
/// the key names where something is (`ssl.key.location`, `sasl.oauthbearer.token.endpoint.url`)
/// and the value holds no credentials (`user:password@host`).
fn is_secret(key: &str, value: &str) -> bool {
    let key = key.to_lowercase();
    let names_a_place = key.ends_with(".location") || key.ends_with(".url");
    let shown_place = names_a_place && !value.contains('@');
    let secret_key = SECRET_MARKERS.iter().any(|m| key.contains(m));
    secret_key && !shown_place
}

/// The configuration as TOML, with librdkafka secrets and the query token masked.
pub fn render_masked(config: &Config) -> String {
    let mut shown = config.clone();
    if !shown.query.token.is_empty() {
        shown.query.token = "***".into();
    }
    for (key, value) in shown.kafka.librdkafka.iter_mut() {
        if is_secret(key, value) {
            *value = "***".into();
        }
    }
    let mut value = toml::Value::try_from(&shown).expect("the config serialises");
    shortest_floats(&mut value);
    toml::to_string_pretty(&value).expect("the config serialises")
}

/// Writes each float that an `f32` setting widened to `f64` as the `f32` reads: `0.3`, not
/// `0.30000001192092896`.
fn shortest_floats(value: &mut toml::Value) {
    match value {
        toml::Value::Float(x) => {
            let narrow = *x as f32;
            if f64::from(narrow) == *x {
                *x = narrow.to_string().parse().unwrap_or(*x);
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(shortest_floats),
        toml::Value::Table(table) => table.iter_mut().for_each(|(_, v)| shortest_floats(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `load` with a config file holding `text`, then the environment and the flags.
    fn load_file(
        text: &str,
        env: Vec<(String, String)>,
        sets: &[String],
    ) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        load(Some(&file), env, sets)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_print_as_written() {
        let text = render_masked(&Config::default());
        assert!(text.contains("\nposition_decay = 0.85\n"), "{text}");
        let reparsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            reparsed,
            Config::default(),
            "the printed config reads back the same"
        );
    }

    #[test]
    fn later_layers_win_key_by_key() {
        let config = load_file(
            "[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"from-file\"\n[state]\ncheckpoint_max_events = 7\n",
            env(&[
                ("STREAMREC__KAFKA__GROUP_ID", "from-env"),
                ("STREAMREC__STATE__CHECKPOINT_MAX_EVENTS", "9"),
                ("STREAMREC__ENGINE__DEDUP__MAX_ENTRIES", "11"),
                ("STREAMREC__KAFKA__LIBRDKAFKA__SASL_PASSWORD", "x"),
                ("HOME", "/root"),
            ]),
            &["state.checkpoint_max_events=10".into()],
        )
        .unwrap();
        assert_eq!(config.kafka.brokers, "file:9092", "file over defaults");
        assert_eq!(config.kafka.group_id, "from-env", "environment over file");
        assert_eq!(
            config.state.checkpoint_max_events, 10,
            "flag over environment"
        );
        assert_eq!(config.engine.dedup.max_entries, 11, "nested sections");
        assert_eq!(config.kafka.librdkafka["sasl.password"], "x");
        assert_eq!(
            config.pipeline,
            Config::default().pipeline,
            "untouched sections keep their defaults"
        );
    }

    #[test]
    fn a_shops_names_can_be_set_from_every_layer() {
        let text = "[engine.clean.field_names]\nitem_id = \"productId\"\n[engine.clean.event_types]\nview_item = \"view\"\n";
        let config = load_file(
            text,
            env(&[("STREAMREC__ENGINE__CLEAN__FIELD_NAMES__USER_ID", "userId")]),
            &["engine.clean.event_types.add_item=add_to_cart".into()],
        )
        .unwrap();
        let clean = &config.engine.clean;
        assert_eq!(clean.field_names["item_id"], "productId", "file");
        assert_eq!(clean.field_names["user_id"], "userId", "environment");
        assert_eq!(clean.event_types["view_item"], "view", "file");
        assert_eq!(clean.event_types["add_item"], "add_to_cart", "flag");
        let refused = ["engine.clean.field_names.userid=uid".into()];
        let err = load(None, vec![], &refused).unwrap_err().to_string();
        assert!(err.contains("engine.clean.field_names"), "{err}");
        assert!(err.contains("\"userid\" is not an input field"), "{err}");
    }

    #[test]
    fn a_shops_catalog_names_can_be_set_from_every_layer() {
        let config = load_file(
            "[engine.clean.catalog_field_names]\nitem_id = \"sku\"\n",
            env(&[(
                "STREAMREC__ENGINE__CLEAN__CATALOG_FIELD_NAMES__IN_STOCK",
                "stock.available",
            )]),
            &["engine.clean.catalog_field_names.updated_at=modified".into()],
        )
        .unwrap();
        let names = &config.engine.clean.catalog_field_names;
        assert_eq!(names["item_id"], "sku", "file");
        assert_eq!(names["in_stock"], "stock.available", "environment");
        assert_eq!(names["updated_at"], "modified", "flag");
        let refused = ["engine.clean.catalog_field_names.stock=available".into()];
        let err = load(None, vec![], &refused).unwrap_err().to_string();
        assert!(err.contains("\"stock\" is not a catalog field"), "{err}");
    }

    #[test]
    fn bad_overrides_name_their_source_and_rule() {
        for (variables, sets, expected) in [
            (
                env(&[("STREAMREC__KAFKA__BROKERZ", "x")]),
                vec![],
                "STREAMREC__KAFKA__BROKERZ: kafka.brokerz names no setting",
            ),
            (
                vec![],
                vec!["state.checkpoint_max_events=lots".to_owned()],
                "--set state.checkpoint_max_events=lots: \"lots\" is not a TOML value",
            ),
            (
                vec![],
                vec!["kafka".to_owned()],
                "expected section.key=value",
            ),
            (
                vec![],
                vec!["engine.dedup=3".to_owned()],
                "engine.dedup is a section",
            ),
            (
                env(&[("STREAMREC__PIPELINE__WORKERS", "0")]),
                vec![],
                "pipeline.workers",
            ),
            (
                vec![],
                vec!["engine.seed=-1".to_owned()],
                "--set engine.seed=-1: engine.seed: invalid value: integer `-1`, expected u64",
            ),
            (
                env(&[("STREAMREC__ENGINE__DEDUP__MAX_ENTRIES", "many")]),
                vec![],
                "STREAMREC__ENGINE__DEDUP__MAX_ENTRIES: \"many\" is not a TOML value",
            ),
            (
                env(&[("STREAMREC__ENGINE__DEDUP__MAX_ENTRIES", "1.5")]),
                vec![],
                "STREAMREC__ENGINE__DEDUP__MAX_ENTRIES: engine.dedup.max_entries: invalid type",
            ),
        ] {
            let err = load(None, variables, &sets).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_file_setting_of_the_wrong_type_or_name_is_named_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            (
                "[engine]\nseed = -1\n",
                "engine.seed: invalid value: integer `-1`",
            ),
            (
                "[engine.dedup]\nmax_entriez = 5\n",
                "engine.dedup.max_entriez: unknown field `max_entriez`",
            ),
            (
                "[kafka.librdkafka]\n\"linger.ms\" = 5\n",
                "kafka.librdkafka.linger.ms: invalid type: integer `5`, expected a string",
            ),
        ] {
            let path = dir.path().join("streamrec.toml");
            std::fs::write(&path, text).unwrap();
            let err = load(Some(&path), vec![], &[]).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn secrets_are_masked_when_shown() {
        let mut config = Config::default();
        for (key, value) in [
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "k"),
            ("sasl.oauthbearer.client.secret", "s"),
            ("security.protocol", "SASL_SSL"),
            ("ssl.key.location", "/etc/tls/client.key"),
            (
                "sasl.oauthbearer.token.endpoint.url",
                "https://login.example/token",
            ),
            ("ssl.keystore.location", "https://u:pw@files.example/ks"),
        ] {
            config.kafka.librdkafka.insert(key.into(), value.into());
        }
        config.query.token = "query-secret".into();
        let text = render_masked(&config);
        assert!(!text.contains("hunter2") && !text.contains("\"k\"") && !text.contains("\"s\""));
        assert!(!text.contains("query-secret"), "{text}");
        assert!(text.contains("SASL_SSL"), "{text}");
        assert!(text.contains("***"));
        // Where a key or a token comes from is not a secret, unless it carries credentials.
        assert!(text.contains("/etc/tls/client.key"), "{text}");
        assert!(text.contains("https://login.example/token"), "{text}");
        assert!(!text.contains("u:pw@"), "{text}");
    }
}
