//! Trigger rules as declared in `config/triggers.toml` (`[[rule]]` tables), validated at start:
//! an invalid rule is an error naming the rule and the field.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a browse-abandonment rule counts views of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Item,
    Category,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RuleKind {
    /// ≥ `min_views` views of one item (or category) within `window_ms`, then no purchase of it
    /// for `quiet_ms` after the last view.
    BrowseAbandonment {
        scope: Scope,
        min_views: u32,
        window_ms: i64,
        quiet_ms: i64,
    },
    /// An add-to-cart without a purchase of the item within `window_ms`.
    CartAbandonment { window_ms: i64 },
    /// An event after ≥ `inactive_ms` without one; carries `items` fresh recommendations.
    ReEngagement { inactive_ms: i64, items: usize },
    /// The user's top category changed (users with ≥ `min_events` events).
    AffinityShift { min_events: u64 },
    /// The price of an item the user viewed or carted within `watch_ms` fell by ≥ `min_drop_pct` %.
    PriceDrop { min_drop_pct: f64, watch_ms: i64 },
    /// An item the user viewed or carted within `watch_ms` is back in stock.
    BackInStock { watch_ms: i64 },
}

impl RuleKind {
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::BrowseAbandonment { .. } => "browse_abandonment",
            RuleKind::CartAbandonment { .. } => "cart_abandonment",
            RuleKind::ReEngagement { .. } => "re_engagement",
            RuleKind::AffinityShift { .. } => "affinity_shift",
            RuleKind::PriceDrop { .. } => "price_drop",
            RuleKind::BackInStock { .. } => "back_in_stock",
        }
    }

    /// Rules that watch who viewed or carted an item.
    pub fn watches_items(&self) -> bool {
        matches!(
            self,
            RuleKind::PriceDrop { .. } | RuleKind::BackInStock { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// The same user is not triggered by this rule again within this time (event time).
    pub cooldown_ms: i64,
    /// Only users whose attributes have these values.
    pub user_attributes: BTreeMap<String, String>,
}

/// The validated rules; empty means no triggers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("invalid trigger rules {path}: {message}")]
    Parse { path: String, message: String },
    #[error("trigger rule {rule:?}: `{field}` {problem}")]
    Invalid {
        rule: String,
        field: &'static str,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// A `[[rule]]` table as written; which fields a kind needs is checked in `validate`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    kind: Option<String>,
    cooldown_ms: Option<i64>,
    #[serde(default)]
    user_attributes: BTreeMap<String, String>,
    scope: Option<String>,
    min_views: Option<i64>,
    window_ms: Option<i64>,
    quiet_ms: Option<i64>,
    inactive_ms: Option<i64>,
    items: Option<i64>,
    min_events: Option<i64>,
    min_drop_pct: Option<f64>,
    watch_ms: Option<i64>,
}

impl Rules {
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        let file: RulesFile = toml::from_str(text).map_err(|err| RulesError::Parse {
            path: "(text)".into(),
            message: err.message().to_owned(),
        })?;
        let mut rules = Vec::new();
        for (index, raw) in file.rule.into_iter().enumerate() {
            let rule = raw.validate(index)?;
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(invalid(&rule.name, "name", "is used by another rule"));
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn watch_items(&self) -> bool {
        self.rules.iter().any(|r| r.kind.watches_items())
    }

    /// The longest time a watched view or cart stays relevant.
    pub fn longest_watch_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| match r.kind {
                RuleKind::PriceDrop { watch_ms, .. } | RuleKind::BackInStock { watch_ms } => {
                    watch_ms
                }
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

fn invalid(rule: &str, field: &'static str, problem: impl Into<String>) -> RulesError {
    RulesError::Invalid {
        rule: rule.to_owned(),
        field,
        problem: problem.into(),
    }
}

/// The fields each kind takes besides name, kind, cooldown_ms and user_attributes.
/// Every rule kind's name, as rule files spell it.
pub fn kind_names() -> Vec<&'static str> {
    FIELDS.iter().map(|(kind, _)| *kind).collect()
}

const FIELDS: [(&str, &[&str]); 6] = [
    (
        "browse_abandonment",
        &["scope", "min_views", "window_ms", "quiet_ms"],
    ),
    ("cart_abandonment", &["window_ms"]),
    ("re_engagement", &["inactive_ms", "items"]),
    ("affinity_shift", &["min_events"]),
    ("price_drop", &["min_drop_pct", "watch_ms"]),
    ("back_in_stock", &["watch_ms"]),
];

impl RawRule {
    fn present(&self) -> Vec<&'static str> {
        let fields: [(&'static str, bool); 9] = [
            ("scope", self.scope.is_some()),
            ("min_views", self.min_views.is_some()),
            ("window_ms", self.window_ms.is_some()),
            ("quiet_ms", self.quiet_ms.is_some()),
            ("inactive_ms", self.inactive_ms.is_some()),
            ("items", self.items.is_some()),
            ("min_events", self.min_events.is_some()),
            ("min_drop_pct", self.min_drop_pct.is_some()),
            ("watch_ms", self.watch_ms.is_some()),
        ];
        fields.iter().filter(|f| f.1).map(|f| f.0).collect()
    }

    fn validate(self, index: usize) -> Result<Rule, RulesError> {
        let name = match self.name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => return Err(invalid(&format!("#{}", index + 1), "name", "is required")),
        };
        let kind_name = self
            .kind
            .as_deref()
            .ok_or_else(|| invalid(&name, "kind", "is required"))?;
        let Some((_, allowed)) = FIELDS.iter().find(|(k, _)| *k == kind_name) else {
            let known: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
            return Err(invalid(
                &name,
                "kind",
                format!("must be one of {}, got {kind_name:?}", known.join(", ")),
            ));
        };
        if let Some(extra) = self.present().into_iter().find(|f| !allowed.contains(f)) {
            return Err(invalid(
                &name,
                extra,
                format!("does not apply to {kind_name} rules"),
            ));
        }
        let cooldown_ms = positive(&name, "cooldown_ms", self.cooldown_ms)?;
        let kind = self.kind_of(&name, kind_name)?;
        Ok(Rule {
            name,
            kind,
            cooldown_ms,
            user_attributes: self.user_attributes,
        })
    }

    fn kind_of(&self, name: &str, kind: &str) -> Result<RuleKind, RulesError> {
        Ok(match kind {
            "browse_abandonment" => RuleKind::BrowseAbandonment {
                scope: match self.scope.as_deref() {
                    Some("item") => Scope::Item,
                    Some("category") => Scope::Category,
                    Some(other) => {
                        return Err(invalid(
                            name,
                            "scope",
                            format!("must be \"item\" or \"category\", got {other:?}"),
                        ))
                    }
                    None => return Err(invalid(name, "scope", "is required")),
                },
                min_views: positive(name, "min_views", self.min_views)? as u32,
                window_ms: positive(name, "window_ms", self.window_ms)?,
                quiet_ms: positive(name, "quiet_ms", self.quiet_ms)?,
            },
            "cart_abandonment" => RuleKind::CartAbandonment {
                window_ms: positive(name, "window_ms", self.window_ms)?,
            },
            "re_engagement" => RuleKind::ReEngagement {
                inactive_ms: positive(name, "inactive_ms", self.inactive_ms)?,
                items: positive(name, "items", self.items)?.min(100) as usize,
            },
            "affinity_shift" => RuleKind::AffinityShift {
                min_events: positive(name, "min_events", self.min_events)? as u64,
            },
            "price_drop" => RuleKind::PriceDrop {
                min_drop_pct: match self.min_drop_pct {
                    Some(p) if p > 0.0 && p < 100.0 => p,
                    Some(p) => {
                        return Err(invalid(
                            name,
                            "min_drop_pct",
                            format!("must be in (0, 100), got {p}"),
                        ))
                    }
                    None => return Err(invalid(name, "min_drop_pct", "is required")),
                },
                watch_ms: positive(name, "watch_ms", self.watch_ms)?,
            },
            _ => RuleKind::BackInStock {
                watch_ms: positive(name, "watch_ms", self.watch_ms)?,
            },
        })
    }
}

fn positive(rule: &str, field: &'static str, value: Option<i64>) -> Result<i64, RulesError> {
    match value {
        Some(v) if v > 0 => Ok(v),
        Some(v) => Err(invalid(rule, field, format!("must be > 0, got {v}"))),
        None => Err(invalid(rule, field, "is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_invalid_rule_names_the_rule_and_the_field() {
        let cases = [
            ("[[rule]]\nkind = \"cart_abandonment\"", "trigger rule \"#1\": `name` is required"),
            (
                "[[rule]]\nname = \"c\"\nkind = \"cart\"",
                "trigger rule \"c\": `kind` must be one of",
            ),
            (
                "[[rule]]\nname = \"c\"\nkind = \"cart_abandonment\"\ncooldown_ms = 1",
                "trigger rule \"c\": `window_ms` is required",
            ),
            (
                "[[rule]]\nname = \"c\"\nkind = \"cart_abandonment\"\ncooldown_ms = 1\nwindow_ms = 0",
                "trigger rule \"c\": `window_ms` must be > 0, got 0",
            ),
            (
                "[[rule]]\nname = \"c\"\nkind = \"cart_abandonment\"\ncooldown_ms = 1\nwindow_ms = 5\nquiet_ms = 3",
                "trigger rule \"c\": `quiet_ms` does not apply to cart_abandonment rules",
            ),
            (
                "[[rule]]\nname = \"b\"\nkind = \"browse_abandonment\"\ncooldown_ms = 1\nscope = \"brand\"\nmin_views = 2\nwindow_ms = 5\nquiet_ms = 3",
                "trigger rule \"b\": `scope` must be \"item\" or \"category\"",
            ),
            (
                "[[rule]]\nname = \"p\"\nkind = \"price_drop\"\ncooldown_ms = 1\nmin_drop_pct = 120.0\nwatch_ms = 5",
                "trigger rule \"p\": `min_drop_pct` must be in (0, 100)",
            ),
            (
                "[[rule]]\nname = \"a\"\nkind = \"affinity_shift\"\nmin_events = 3",
                "trigger rule \"a\": `cooldown_ms` is required",
            ),
            (
                "[[rule]]\nname = \"a\"\nkind = \"affinity_shift\"\nmin_events = 3\ncooldown_ms = 1\n[[rule]]\nname = \"a\"\nkind = \"affinity_shift\"\nmin_events = 3\ncooldown_ms = 1",
                "trigger rule \"a\": `name` is used by another rule",
            ),
            ("[[rule]]\nname = \"a\"\nwindow = 3", "unknown field `window`"),
        ];
        for (text, expected) in cases {
            let message = Rules::parse(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}\n→ {message}");
        }
    }
}
