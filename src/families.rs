//! Registering a metric family under `streamrec_`, and keeping its full name: the tests check
//! that every family registered appears in `/metrics`.

use prometheus_client::registry::{Metric, Registry};

/// Where families go: the registry, and the list of their full names.
pub(crate) type Families<'a> = (&'a mut Registry, &'a mut Vec<String>);

pub(crate) fn add<M: Metric + Clone>(
    (registry, names): &mut Families<'_>,
    name: &str,
    help: &str,
    metric: &M,
) {
    names.push(format!("streamrec_{name}"));
    registry.register(name, help, metric.clone());
}
