//! The query API's settings (the `[query]` table).

use serde::{Deserialize, Serialize};

use super::partitioner::Partitioner;
use crate::config::{invalid, ConfigError};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// `host:port` of the query listener, e.g. `0.0.0.0:8080`; empty: no query API.
    pub listen: String,
    /// A bearer token every request must present; empty: none. Set it from the environment
    /// (`STREAMREC__QUERY__TOKEN`); `config check` shows it masked.
    pub token: String,
    /// The most items one answer may hold (`n`).
    pub max_n: usize,
    /// The most item ids one request may name (a session's items, exclusions).
    pub max_items: usize,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// A request not answered within this time gets a 503.
    pub timeout_ms: u64,
    /// Requests answered at once; more are turned away with a 503 at once (load shedding).
    pub max_in_flight: usize,
    /// How the events topic's producers choose a partition from the user id: the query API
    /// asks the worker that owns the user's partition. librdkafka clients default to
    /// `consistent_random`, Java clients to `murmur2_random`.
    pub partitioner: String,
    /// A compacted topic where the instances of a group announce their query addresses and
    /// the events partitions they hold; with it, a user's query reaching an instance that
    /// does not hold the user's partition is redirected (307) to the one that does. Empty: off.
    pub members_topic: String,
    /// The URL other instances' callers are sent to, e.g. `http://10.0.0.5:8080`; empty: the
    /// address `listen` bound (so it must name one, not `0.0.0.0`).
    pub advertise_url: String,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            listen: String::new(),
            token: String::new(),
            max_n: 100,
            max_items: 50,
            max_body_bytes: 16 * 1024,
            timeout_ms: 1_000,
            max_in_flight: 256,
            partitioner: "consistent_random".into(),
            members_topic: String::new(),
            advertise_url: String::new(),
        }
    }
}

impl QueryConfig {
    /// The address to bind, if any.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }

    pub fn partitioner(&self) -> Partitioner {
        Partitioner::named(&self.partitioner).expect("validated")
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.address().is_none() {
            let rule = format!(
                "must be host:port with an IP address (0.0.0.0:8080), got {:?}",
                self.listen
            );
            return Err(invalid("query.listen", &rule));
        }
        for (key, value) in [
            ("query.max_n", self.max_n),
            ("query.max_items", self.max_items),
            ("query.max_body_bytes", self.max_body_bytes),
            ("query.max_in_flight", self.max_in_flight),
            ("query.timeout_ms", self.timeout_ms as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if Partitioner::named(&self.partitioner).is_none() {
            let rule = format!(
                "must be one of {}, got {:?}",
                Partitioner::NAMES.join(", "),
                self.partitioner
            );
            return Err(invalid("query.partitioner", &rule));
        }
        if !self.members_topic.is_empty() {
            if self.address().is_none() {
                return Err(invalid("query.members_topic", "needs query.listen"));
            }
            let unspecified = self.address().is_some_and(|a| a.ip().is_unspecified());
            let url = self.advertise_url.strip_prefix("http://").unwrap_or("");
            let given = !self.advertise_url.is_empty();
            if (given && (url.is_empty() || url.contains('/'))) || (!given && unspecified) {
                let rule = format!(
                    "must be http://host:port with query.members_topic when query.listen binds every address, got {:?}",
                    self.advertise_url
                );
                return Err(invalid("query.advertise_url", &rule));
            }
        }
        Ok(())
    }
}
