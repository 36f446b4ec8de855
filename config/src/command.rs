//! `basketflow config check|example`: a configuration checked without starting anything, and
//! the commented example.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::load::Resolved;
use crate::types::Config;
use crate::{DEFAULT_PATH, EXAMPLE};

/// `basketflow config <command>`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file and the BASKETFLOW_* environment without starting
    /// anything; print the effective configuration (passwords as "***"). Exit 1 if invalid.
    Check {
        /// The configuration file; must exist when given. Default: ./basketflow.toml if it
        /// exists, else the built-in defaults (plus the environment).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the example configuration: every key, its default and what it is for.
    Example,
}

/// Runs a `config` command. `check` exits with status 1 when the configuration is invalid.
pub fn run(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Example => print!("{EXAMPLE}"),
        ConfigCommand::Check { config } => {
            let path = config.or_else(|| {
                Path::new(DEFAULT_PATH)
                    .exists()
                    .then(|| PathBuf::from(DEFAULT_PATH))
            });
            let resolved = match Config::resolve_file(path.as_deref()) {
                Ok(resolved) => resolved,
                Err(e) => {
                    // The problems, without a backtrace: this is the command's answer.
                    eprintln!("{e:#}");
                    std::process::exit(1);
                }
            };
            match &path {
                Some(path) => println!("ok: {}", path.display()),
                None => println!("ok: no {DEFAULT_PATH}; built-in defaults"),
            }
            print!("{}", effective(&resolved)?);
        }
    }
    Ok(())
}

/// The effective configuration as TOML, secrets masked, overridden keys listed first.
pub(crate) fn effective(resolved: &Resolved) -> Result<String> {
    let mut out = String::new();
    for (key, var) in &resolved.from_env {
        out.push_str(&format!("# {key} from {var}\n"));
    }
    let mut shown = resolved.config.clone();
    for s in &mut shown.collector.stream_secrets {
        s.secret = "***".into();
    }
    if !shown.rewards.password.is_empty() {
        shown.rewards.password = "***".into();
    }
    if !shown.clickhouse.password.is_empty() {
        shown.clickhouse.password = "***".into();
    }
    out.push_str(&toml::to_string(&shown).context("writing the configuration as TOML")?);
    Ok(out)
}
