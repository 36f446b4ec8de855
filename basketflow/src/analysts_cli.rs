//! `basketflow analysts provision`: each listed retailer's analysts get a ClickHouse user
//! that reads that retailer's rows of every analyst view, and nothing else.
//!
//! Reads the configuration (`--config`, as `run`: the ClickHouse address, user and database)
//! and the access file (`--access`, default `analysts.toml`; see `examples/analysts.toml`):
//!
//! ```toml
//! # The directory of the server's config.xml and users.xml: the command writes
//! # users.d/basketflow-analysts-<db>.xml there, which the server reloads by itself.
//! clickhouse_config_dir = "/etc/clickhouse-server"
//!
//! [[retailer]]
//! retailer_id = "retailer-00"
//! user = "analyst_retailer_00"
//! database = "analyst_retailer_00"
//! # printf %s "$PASSWORD" | sha256sum
//! password_sha256_hex = "96499e0af3b81e5257006ef94f98dd84d095880a912f584a367f2d1073759830"
//! ```
//!
//! Then removes the copies of retailers no longer listed, registers each listed retailer's copy
//! (its rows in its own database; [`basketflow_sinks::clickhouse::copies`]), waits (at most
//! `--wait-seconds`) for the graph's ClickHouse writer to fill the new ones, writes the users of
//! the filled copies, waits until the server knows them, and prints one JSON line: the copies,
//! whether each is filled, and how many rows its views hold. Exits with status 2 when some
//! copies are not filled yet (the graph is not running): run it again once it is. Re-running it
//! is safe (a password rotated, a retailer added or removed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use basketflow_sinks::clickhouse::analysts::provision;
use basketflow_sinks::clickhouse::copies::{CopyPlan, RetailerAccess};
use basketflow_sinks::clickhouse::ClickHouseStore;
use clap::Subcommand;
use serde::Deserialize;

use crate::config::{Config, DEFAULT_PATH};

/// Exit status when some copies wait for the writer (their users not written yet).
const PENDING_EXIT: i32 = 2;

/// `basketflow analysts <command>`.
#[derive(Subcommand, Debug)]
pub(crate) enum AnalystsCommand {
    /// Give each retailer of the access file a ClickHouse user that reads only that retailer's
    /// rows of every analyst view (a copy of its rows in its own database, kept current).
    Provision {
        /// The configuration file (default: ./basketflow.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The access file: where the server's configuration is, and the retailers.
        #[arg(long, default_value = "analysts.toml")]
        access: PathBuf,
        /// How long to wait for the graph's writer to fill new copies.
        #[arg(long, default_value_t = 60)]
        wait_seconds: u64,
    },
}

/// The access file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    /// The directory of the server's `config.xml` and `users.xml`.
    clickhouse_config_dir: PathBuf,
    /// The retailers.
    #[serde(default, rename = "retailer")]
    retailers: Vec<RetailerAccess>,
}

/// Runs `basketflow analysts <command>`; a failure is one line on stderr and status 1.
pub(crate) fn run(command: AnalystsCommand) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;
    let AnalystsCommand::Provision {
        config,
        access,
        wait_seconds,
    } = command;
    match runtime.block_on(provision_from(config.as_deref(), &access, wait_seconds)) {
        Ok(0) => Ok(()),
        Ok(pending) => {
            eprintln!(
                "analysts provision: {pending} copies wait for the graph's ClickHouse writer (it \
                 fills and takes out copies between batches or when it starts; see its log): \
                 run this command again then (users of unfilled copies are not written)"
            );
            std::process::exit(PENDING_EXIT);
        }
        Err(e) => {
            eprintln!("analysts provision: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Provisions what the access file says; prints the outcome as one JSON line and returns how
/// many copies still wait for the writer.
async fn provision_from(config: Option<&Path>, access: &Path, wait_seconds: u64) -> Result<usize> {
    let default = Path::new(DEFAULT_PATH);
    let config =
        Config::resolve_file(config.or_else(|| default.exists().then_some(default)))?.config;
    let text = std::fs::read_to_string(access)
        .with_context(|| format!("reading the access file {}", access.display()))?;
    let file: AccessFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", access.display()))?;
    if !file.clickhouse_config_dir.join("config.xml").exists() {
        bail!(
            "no config.xml in clickhouse_config_dir {}: it must be the server's configuration \
             directory (users.d/ is read next to it)",
            file.clickhouse_config_dir.display()
        );
    }
    let ch = &config.clickhouse;
    let plan = CopyPlan {
        database: ch.database.clone(),
        writer_user: ch.user.clone(),
        retailers: file.retailers,
    };
    let users_file = file
        .clickhouse_config_dir
        .join("users.d")
        .join(plan.file_name());
    let store = ClickHouseStore::connect(&ch.url, &ch.database, &ch.user, &ch.password).await?;
    let outcome = provision(
        &store,
        &plan,
        &users_file,
        &ch.url,
        Duration::from_secs(wait_seconds),
    )
    .await
    .with_context(|| access.display().to_string())?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(outcome.pending())
}
