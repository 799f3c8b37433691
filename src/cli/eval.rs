//! `streamrec eval`: prequential evaluation of every method on an interaction log.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::{eval_grid, load_config};
use crate::config::Config;
use crate::eval::{
    evaluate, experiment_methods, standard_methods, EvalReport, Method, MethodReport, Mode,
    Protocol, Publish, Topology,
};
use crate::formats::{load, Format};
use crate::online::two_proportion_z;

/// `eval --mode`: what counts as a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMode {
    Discovery,
    Purchase,
}

impl From<EvalMode> for Mode {
    fn from(mode: EvalMode) -> Mode {
        match mode {
            EvalMode::Discovery => Mode::Discovery,
            EvalMode::Purchase => Mode::Purchase,
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The interaction log to replay.
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long, value_enum)]
    pub format: Format,
    /// Default: purchase for jsonl and taobao, discovery for MovieLens.
    #[arg(long, value_enum)]
    pub mode: Option<EvalMode>,
    #[arg(long, default_value_t = 10)]
    pub top_n: usize,
    /// Engine settings (TOML); defaults when left out.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// section.key=value, applied after the file and the environment (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// section.key=v1,v2,...: evaluate every combination of these settings' values
    /// (repeatable), each on a fresh engine, one row per combination and method.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// Also show each user, after each event, the list `run` would publish then (the
    /// configured blend, `pipeline.exclude_seen`), and report the online metrics that `run`
    /// would count for their next events.
    #[arg(long)]
    pub online: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Score only these methods (comma-separated names from the table); default all.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Score the variants of this experiment (`engine.experiments` in `--config`) side by
    /// side, each ranking every user, instead of the standard methods; each is compared with
    /// the first variant (the control) by a two-proportion z test on HR@N.
    #[arg(long, conflicts_with = "methods")]
    pub experiment: Option<String>,
    /// A catalog applied before the events: item.v1 JSON lines or MovieLens movies.csv.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// List every item of the log up front with the category its events carry (Taobao).
    #[arg(long, conflicts_with = "catalog")]
    pub catalog_from_events: bool,
    /// Simulate this many instances: users partitioned by hash, each instance with its own
    /// replica of the item model, kept in step by item-model updates.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// How the instances share the item side: `replicated` (each learns into its replica and
    /// follows the others' model updates, as `run` does today) or `owned` (the item side owned
    /// by item: instances send item-side work to the owners and rank on their published state).
    #[arg(long, value_enum, default_value_t = TopologyArg::Replicated)]
    pub topology: TopologyArg,
    /// The lag: replicated, updates reach the other replicas every this many events; owned,
    /// work reaches the owners and their state the read model every this many.
    #[arg(long, default_value_t = 1000)]
    pub sync_every: usize,
    /// Owned: an item's view is published only once it moved by more than this share of its
    /// last view (vector, marginals or popularity); 0 publishes every change.
    #[arg(long, default_value_t = 0.0)]
    pub significance: f32,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TopologyArg {
    Replicated,
    Owned,
}

impl From<TopologyArg> for Topology {
    fn from(arg: TopologyArg) -> Topology {
        match arg {
            TopologyArg::Replicated => Topology::Replicated,
            TopologyArg::Owned => Topology::Owned,
        }
    }
}

pub(super) fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if args.top_n == 0 {
        bail!("--top-n must be at least 1");
    }
    if args.instances == 0 || args.sync_every == 0 {
        bail!("--instances and --sync-every must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.significance) {
        bail!("--significance must be a share from 0 to 1");
    }
    let config = load_config(args.config.as_ref(), &args.set)?;
    let loaded = load(&args.input, args.format, &config.engine.clean)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    if loaded.events.is_empty() {
        bail!(
            "{} holds no valid {:?} rows ({} rows, {} skipped)",
            args.input.display(),
            args.format,
            loaded.rows,
            loaded.skipped_total()
        );
    }
    let mode = args
        .mode
        .map(Mode::from)
        .unwrap_or(if args.format.default_purchase_mode() {
            Mode::Purchase
        } else {
            Mode::Discovery
        });
    if loaded.skipped_total() > 0 {
        eprintln!(
            "skipped {} of {} rows: {:?}",
            loaded.skipped_total(),
            loaded.rows,
            loaded.skipped
        );
        for example in &loaded.examples {
            eprintln!("  {example}");
        }
    }
    let listings = super::catalog::for_eval(&args, &loaded.events, &config)?;
    let protocol = Protocol {
        mode,
        top_n: args.top_n,
        instances: args.instances,
        topology: args.topology.into(),
        sync_every: args.sync_every,
        significance: args.significance,
        publish: args.online.then_some(Publish {
            exclude_seen: config.pipeline.exclude_seen,
        }),
    };
    if !args.grid.is_empty() {
        let point = |settings: &[String]| {
            let sets = [args.set.as_slice(), settings].concat();
            let config = load_config(args.config.as_ref(), &sets)?;
            let methods = methods_of(&args, &config)?;
            let events = loaded.events.clone();
            Ok(evaluate(
                events,
                &listings,
                &protocol,
                &config.engine,
                &methods,
            ))
        };
        return eval_grid::run(&args.grid, args.json, point);
    }
    let methods = methods_of(&args, &config)?;
    let report = evaluate(
        loaded.events,
        &listings,
        &protocol,
        &config.engine,
        &methods,
    );
    let versus = args.experiment.as_ref().map(|_| versus_control(&report));
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["input"] = args.input.display().to_string().into();
        value["skipped_rows"] = serde_json::to_value(&loaded.skipped)?;
        if let (Some(name), Some(versus)) = (&args.experiment, &versus) {
            value["experiment"] = serde_json::json!({ "name": name, "versus_control": versus });
        }
        println!("{value}");
    } else {
        print!("{}", report.table());
        for v in versus.iter().flatten() {
            println!(
                "{} vs {}: HR@{} {:+.4} (z = {:.2}{})",
                v.variant,
                v.control,
                report.top_n,
                v.hr_difference,
                v.z,
                if v.z.abs() > 1.96 {
                    ", significant at 5 %"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// The standard methods or the experiment's variants, narrowed to `--methods`.
fn methods_of(args: &EvalArgs, config: &Config) -> anyhow::Result<Vec<Method>> {
    let mut methods = match &args.experiment {
        None => standard_methods(&config.engine.ranking),
        Some(name) => experiment_methods(&config.engine, name).with_context(|| {
            let known: Vec<&str> = (config.engine.experiments.iter())
                .map(|e| e.name.as_str())
                .collect();
            format!("no experiment {name:?} in the config; known: {known:?}")
        })?,
    };
    if !args.methods.is_empty() {
        let known: Vec<String> = methods.iter().map(|m| m.name.clone()).collect();
        if let Some(unknown) = args.methods.iter().find(|m| !known.contains(m)) {
            bail!("unknown method {unknown:?}; known: {}", known.join(", "));
        }
        methods.retain(|m| args.methods.contains(&m.name));
    }
    Ok(methods)
}

/// A variant's HR@N against the control's (the first method): difference and z statistic.
#[derive(Debug, serde::Serialize)]
struct Versus {
    variant: String,
    control: String,
    hr_difference: f64,
    z: f64,
}

fn versus_control(report: &EvalReport) -> Vec<Versus> {
    let Some((control, rest)) = report.methods.split_first() else {
        return Vec::new();
    };
    let versus = |m: &MethodReport| Versus {
        variant: m.method.clone(),
        control: control.method.clone(),
        hr_difference: m.hr_at_n - control.hr_at_n,
        z: two_proportion_z((control.hits, control.tests), (m.hits, m.tests)),
    };
    rest.iter().map(versus).collect()
}
