//! `streamrec config check`: the effective layered settings, secrets masked.

use std::path::PathBuf;

use clap::Subcommand;

use super::load_config;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the layered settings (defaults, file, STREAMREC__* environment, --set) and print
    /// the effective config with secrets masked.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// section.key=value, applied last (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

pub(super) fn config(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { config, set } = command;
    let effective = load_config(config.as_ref(), &set)?;
    println!(
        "# config OK: defaults, then {}, then STREAMREC__* environment, then --set",
        config
            .as_ref()
            .map_or("no file".into(), |p| p.display().to_string())
    );
    print!("{}", crate::config_layers::render_masked(&effective));
    Ok(())
}
