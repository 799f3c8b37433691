//! Command-line interface: argument parsing and the glue from files to the engine.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::eval::{evaluate, standard_methods, Mode};
use crate::formats::{load, Format};

#[derive(Debug, Parser)]
#[command(
    name = "streamrec",
    version,
    about = "Real-time recommendations from shop event streams"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prequential (test-then-learn) evaluation of every method on an interaction log.
    Eval(EvalArgs),
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
    pub mode: Option<Mode>,
    #[arg(long, default_value_t = 10)]
    pub top_n: usize,
    /// Engine settings (TOML); defaults when left out.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Score only these methods (comma-separated names from the table); default all.
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Eval(args) => eval(args),
    }
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    if args.top_n == 0 {
        bail!("--top-n must be at least 1");
    }
    let config = load_config(args.config.as_ref())?;
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
    let mode = args.mode.unwrap_or(if args.format.default_purchase_mode() {
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
    let mut methods = standard_methods(&config.engine.ranking.blend);
    if !args.methods.is_empty() {
        let known: Vec<String> = methods.iter().map(|m| m.name.clone()).collect();
        if let Some(unknown) = args.methods.iter().find(|m| !known.contains(m)) {
            bail!("unknown method {unknown:?}; known: {}", known.join(", "));
        }
        methods.retain(|m| args.methods.contains(&m.name));
    }
    let report = evaluate(loaded.events, mode, args.top_n, &config.engine, &methods);
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["input"] = args.input.display().to_string().into();
        value["skipped_rows"] = serde_json::to_value(&loaded.skipped)?;
        println!("{value}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
