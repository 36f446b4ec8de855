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
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use basketflow_sinks::clickhouse::copies::{Copy, CopyPlan, RetailerAccess, FILLED, REMOVING};
use basketflow_sinks::clickhouse::{ClickHouseReader, ClickHouseStore};
use clap::Subcommand;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Config, DEFAULT_PATH};

/// How long the server may take to load the users file.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

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
    if let Err(e) = runtime.block_on(provision(config.as_deref(), &access, wait_seconds)) {
        eprintln!("analysts provision: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary file in the same directory (the server never
/// reads half a file).
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

async fn provision(config: Option<&Path>, access: &Path, wait_seconds: u64) -> Result<()> {
    let default = Path::new(DEFAULT_PATH);
    let config =
        Config::resolve_file(config.or_else(|| default.exists().then_some(default)))?.config;
    let text = std::fs::read_to_string(access)
        .with_context(|| format!("reading the access file {}", access.display()))?;
    let file: AccessFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", access.display()))?;
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
    if !file.clickhouse_config_dir.join("config.xml").exists() {
        bail!(
            "no config.xml in clickhouse_config_dir {}: it must be the server's configuration \
             directory (users.d/ is read next to it)",
            file.clickhouse_config_dir.display()
        );
    }

    let store = ClickHouseStore::connect(&ch.url, &ch.database, &ch.user, &ch.password).await?;
    let progress: u64 = store
        .client()
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'progress'")
        .bind(&ch.database)
        .fetch_one()
        .await
        .context("looking for the database")?;
    if progress == 0 {
        bail!(
            "database {} has no progress table on {}: run the graph once (it creates the \
             schema) first",
            ch.database,
            ch.url
        );
    }
    let registered = store.copies().await?;
    let mut problems = plan.problems(&registered);
    for r in &plan.retailers {
        let known = registered.iter().any(|c| c.database == r.database);
        let tables: u64 = store
            .client()
            .query("SELECT count() FROM system.tables WHERE database = ?")
            .bind(&r.database)
            .fetch_one()
            .await?;
        if !known && tables > 0 {
            problems.push(format!(
                "database {:?} exists and holds tables: name a new database for {:?}'s copy \
                 (the writer creates and empties it)",
                r.database, r.retailer_id
            ));
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", access.display(), problems.join("; "));
    }
    let is_filled = |copies: &[Copy], r: &RetailerAccess| {
        copies.iter().any(|c| {
            c.database == r.database && c.retailer_id == r.retailer_id && c.filled == FILLED
        })
    };

    // First, no user but those of listed retailers whose copy is filled (a retailer taken out
    // loses its user before its copy goes), and the server has loaded that.
    let first: Vec<&RetailerAccess> = plan
        .retailers
        .iter()
        .filter(|r| is_filled(&registered, r))
        .collect();
    reload(&plan, &first, &users_file, &ch.url).await?;
    // Then the wanted state, which the graph's writer carries out between two batches (or
    // when it starts): copies not listed taken out, new ones filled.
    let mut removed = Vec::new();
    for copy in &registered {
        if !plan.retailers.iter().any(|r| r.database == copy.database) {
            if copy.filled != REMOVING {
                store.mark_removing(copy).await?;
            }
            removed.push(copy.database.clone());
        }
    }
    for r in &plan.retailers {
        store.register_copy(&r.database, &r.retailer_id).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(wait_seconds);
    let copies = loop {
        let copies = store.copies().await?;
        let done = plan.retailers.iter().all(|r| is_filled(&copies, r))
            && !copies.iter().any(|c| c.filled == REMOVING);
        if done || Instant::now() >= deadline {
            break copies;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let filled: Vec<&RetailerAccess> = plan
        .retailers
        .iter()
        .filter(|r| is_filled(&copies, r))
        .collect();
    let mut listed = Vec::new();
    for r in &plan.retailers {
        let is_filled = filled.contains(&r);
        let mut rows = serde_json::Map::new();
        if is_filled {
            for view in CopyPlan::views() {
                let n: u64 = store
                    .client()
                    .query(&format!("SELECT count() FROM {}.{view}", r.database))
                    .fetch_one()
                    .await
                    .with_context(|| format!("reading {}.{view}", r.database))?;
                rows.insert(view.to_string(), json!(n));
            }
        }
        listed.push(json!({
            "retailer_id": r.retailer_id,
            "user": r.user,
            "database": r.database,
            "filled": is_filled,
            "rows": rows,
        }));
    }
    let removing: Vec<&str> = copies
        .iter()
        .filter(|c| c.filled == REMOVING)
        .map(|c| c.database.as_str())
        .collect();
    // Users for the filled copies: an analyst never reads a copy before its first fill.
    reload(&plan, &filled, &users_file, &ch.url).await?;
    println!(
        "{}",
        json!({
            "database": plan.database,
            "users_file": users_file,
            "copies": listed,
            "removed": removed,
            "removal_pending": removing,
        })
    );
    let pending = plan.retailers.len() - filled.len() + removing.len();
    if pending > 0 {
        eprintln!(
            "analysts provision: {pending} copies wait for the graph's ClickHouse writer (it \
             fills and takes out copies between batches or when it starts; see its log): run \
             this command again then (users of unfilled copies are not written)"
        );
        std::process::exit(PENDING_EXIT);
    }
    Ok(())
}

/// Writes the users file granting `granted` (and a fresh marker user) and waits until the
/// server has loaded it.
async fn reload(
    plan: &CopyPlan,
    granted: &[&RetailerAccess],
    users_file: &Path,
    url: &str,
) -> Result<()> {
    let marker = format!("basketflow_reload_{:016x}", rand::random::<u64>());
    let hash = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    write_atomically(
        users_file,
        &plan.users_xml(granted.iter().copied(), &marker, &hash),
    )?;
    wait_for_reload(url, &marker, users_file).await
}

/// Waits until the server has loaded the users file that declares `marker` (a user no one
/// can log in as: a login is then refused for its password, not as an unknown user).
async fn wait_for_reload(url: &str, marker: &str, users_file: &Path) -> Result<()> {
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        let answer = ClickHouseReader::connect(url, "system", marker, "basketflow-probe").await;
        let unknown = answer
            .as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("Code: 192"));
        if !unknown {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not load {} within {RELOAD_TIMEOUT:?} (is clickhouse_config_dir \
                 the directory of its config.xml?)",
                users_file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
