//! `streamrec catalog load` and the catalog options of `eval`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;

use super::{load_config, runtime, EvalArgs};
use crate::catalog::CatalogUpdate;
use crate::config::Config;
use crate::event::Event;
use crate::formats::catalog::{catalog_from_events, load_catalog};
use crate::kafka;

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Publish a catalog file (item.v1 JSON lines or MovieLens movies.csv) to the catalog
    /// topic, keyed by item id.
    Load {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// bootstrap.servers; overrides kafka.brokers.
        #[arg(long)]
        brokers: Option<String>,
        /// Default: kafka.catalog_topic.
        #[arg(long)]
        topic: Option<String>,
    },
}

pub fn run(command: CatalogCommand) -> anyhow::Result<()> {
    let CatalogCommand::Load {
        input,
        config,
        brokers,
        topic,
    } = command;
    let mut config = load_config(config.as_ref(), &[])?;
    if let Some(brokers) = brokers {
        config.kafka.brokers = brokers;
    }
    let Some(topic) = topic.or(Some(config.kafka.catalog_topic.clone()).filter(|t| !t.is_empty()))
    else {
        bail!("no topic: give --topic or set kafka.catalog_topic");
    };
    let loaded = load_catalog(&input, &config.engine.clean)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let messages: Vec<(String, Vec<u8>)> = loaded
        .updates
        .iter()
        .filter_map(|update| match update {
            CatalogUpdate::Upsert(item) => {
                Some((item.item_id.clone(), item.to_json().into_bytes()))
            }
            CatalogUpdate::Remove { .. } => None,
        })
        .collect();
    let report = runtime()?.block_on(kafka::produce_messages(
        &config.kafka,
        &topic,
        &messages,
        false,
        None,
    ))?;
    println!(
        "published {} listings to {topic} in {:.1} s; skipped: {:?}",
        report.produced,
        report.elapsed.as_secs_f64(),
        loaded.skipped
    );
    for example in &loaded.examples {
        eprintln!("  {example}");
    }
    Ok(())
}

/// The listings `eval` applies before the events.
pub fn for_eval(
    args: &EvalArgs,
    events: &[Event],
    config: &Config,
) -> anyhow::Result<Vec<CatalogUpdate>> {
    if args.catalog_from_events {
        return Ok(catalog_from_events(events));
    }
    let Some(path) = &args.catalog else {
        return Ok(Vec::new());
    };
    let loaded = load_catalog(path, &config.engine.clean)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if !loaded.skipped.is_empty() {
        eprintln!("catalog: skipped {:?}", loaded.skipped);
    }
    Ok(loaded.updates)
}
