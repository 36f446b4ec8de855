//! `basketflow analysts provision`: each retailer's analysts get a ClickHouse user that reads
//! that retailer's rows of every analyst view, and nothing else.
//!
//! Reads the configuration (`--config`, as `run`: the ClickHouse address, user and database)
//! and the access file (`--access`, default `analysts.toml`):
//!
//! ```toml
//! # The directory of the server's config.xml and users.xml: the command writes
//! # users.d/basketflow-access-<db>.xml and config.d/basketflow-access-<db>.xml there.
//! clickhouse_config_dir = "/etc/clickhouse-server"
//! # The server's native (TCP) address as the server itself reaches it.
//! native_address = "127.0.0.1:9000"
//!
//! [[retailer]]
//! retailer_id = "retailer-00"
//! user = "analyst_retailer_00"
//! database = "analyst_retailer_00"
//! # printf %s "$PASSWORD" | sha256sum (this one: "retailer-00-demo")
//! password_sha256_hex = "96499e0af3b81e5257006ef94f98dd84d095880a912f584a367f2d1073759830"
//! ```
//!
//! Then writes the two files, waits until the server has loaded them, creates the filtered
//! views and the retailers' databases, and prints one JSON line: what it provisioned and how
//! many rows each retailer's views hold. The mechanism, and why it is this one on ClickHouse
//! 18.16, is in [`basketflow_sinks::clickhouse::access`]. Re-running it is safe (rotation of a
//! password, a new retailer): files and statements are rewritten as a whole.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use basketflow_sinks::clickhouse::access::{AccessPlan, RetailerAccess};
use basketflow_sinks::clickhouse::ClickHouseReader;
use clap::Subcommand;
use serde::Deserialize;
use serde_json::json;

use crate::config::{Config, DEFAULT_PATH};

/// How long the server may take to load the written files.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// `basketflow analysts <command>`.
#[derive(Subcommand, Debug)]
pub(crate) enum AnalystsCommand {
    /// Give each retailer of the access file a ClickHouse user that reads only that retailer's
    /// rows of every analyst view (writes users.d/ and config.d/ files, creates views).
    Provision {
        /// The configuration file (default: ./basketflow.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The access file: where the server's configuration is, and the retailers.
        #[arg(long, default_value = "analysts.toml")]
        access: PathBuf,
    },
}

/// The access file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessFile {
    /// The directory of the server's `config.xml` and `users.xml`.
    clickhouse_config_dir: PathBuf,
    /// The server's native address, as the server reaches itself.
    native_address: std::net::SocketAddr,
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
    let AnalystsCommand::Provision { config, access } = command;
    if let Err(e) = runtime.block_on(provision(config.as_deref(), &access)) {
        eprintln!("analysts provision: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

/// The internal user's password: the one already in our `config.d` file (so that re-running
/// does not change it under running queries), else 32 random letters and digits.
fn internal_password(config_file: &Path) -> String {
    let existing = std::fs::read_to_string(config_file).ok().and_then(|text| {
        let start = text.find("<password>")? + "<password>".len();
        let end = start + text[start..].find("</password>")?;
        Some(text[start..end].to_string())
    });
    existing
        .filter(|p| p.len() >= 16 && p.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
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

async fn provision(config: Option<&Path>, access: &Path) -> Result<()> {
    let default = Path::new(DEFAULT_PATH);
    let config =
        Config::resolve_file(config.or_else(|| default.exists().then_some(default)))?.config;
    let text = std::fs::read_to_string(access)
        .with_context(|| format!("reading the access file {}", access.display()))?;
    let file: AccessFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", access.display()))?;
    let ch = &config.clickhouse;
    let mut plan = AccessPlan {
        database: ch.database.clone(),
        native_host: file.native_address.ip().to_string(),
        native_port: file.native_address.port(),
        internal_password: String::new(),
        retailers: file.retailers,
    };
    let users_file = file
        .clickhouse_config_dir
        .join("users.d")
        .join(plan.file_name());
    let config_file = file
        .clickhouse_config_dir
        .join("config.d")
        .join(plan.file_name());
    plan.internal_password = internal_password(&config_file);
    let problems = plan.problems();
    if !problems.is_empty() {
        bail!("{}: {}", access.display(), problems.join("; "));
    }

    let admin = ClickHouseReader::connect(&ch.url, &ch.database, &ch.user, &ch.password).await?;
    let known: u64 = admin
        .client()
        .query("SELECT count() FROM system.databases WHERE name = ?")
        .bind(&ch.database)
        .fetch_one()
        .await
        .context("looking for the database")?;
    if known == 0 {
        bail!(
            "database {} does not exist on {}: run the graph once (it creates the views) first",
            ch.database,
            ch.url
        );
    }

    write_atomically(&users_file, &plan.users_xml())?;
    write_atomically(&config_file, &plan.config_xml())?;

    // The server reloads both files by itself: wait for the cluster and the internal user.
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    let internal = loop {
        let cluster: Result<u64, _> = admin
            .client()
            .query("SELECT count() FROM system.clusters WHERE cluster = ?")
            .bind(plan.cluster())
            .fetch_one()
            .await;
        // Connecting checks that the server answers this user.
        let login = ClickHouseReader::connect(
            &ch.url,
            &ch.database,
            &plan.internal_user(),
            &plan.internal_password,
        )
        .await;
        if let (Ok(1..), Ok(internal)) = (&cluster, &login) {
            break internal.clone();
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not load {} and {} within {:?} (is clickhouse_config_dir the \
                 directory of its config.xml? cluster: {cluster:?}, internal user: {:?})",
                users_file.display(),
                config_file.display(),
                RELOAD_TIMEOUT,
                login.err().map(|e| e.to_string())
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let existing: Vec<String> = admin
        .client()
        .query("SELECT name FROM system.tables WHERE database = ?")
        .bind(plan.tenants_database())
        .fetch_all()
        .await
        .context("listing the tenant views")?;
    for statement in plan.statements(&existing) {
        admin
            .client()
            .query(&statement)
            .execute()
            .await
            .with_context(|| format!("running {statement}"))?;
    }

    // Each retailer's views, read as the internal user does for the analysts.
    let mut retailers = Vec::new();
    for r in &plan.retailers {
        let mut rows = serde_json::Map::new();
        for view in AccessPlan::views() {
            let n: u64 = internal
                .client()
                .query(&format!(
                    "SELECT count() FROM {}.{}",
                    plan.tenants_database(),
                    AccessPlan::tenant_view(view, r)
                ))
                .fetch_one()
                .await
                .with_context(|| format!("reading {view} of {}", r.retailer_id))?;
            rows.insert(view.to_string(), json!(n));
        }
        retailers.push(json!({
            "retailer_id": r.retailer_id,
            "user": r.user,
            "database": r.database,
            "rows": rows,
        }));
    }
    println!(
        "{}",
        json!({
            "database": plan.database,
            "cluster": plan.cluster(),
            "internal_user": plan.internal_user(),
            "files": [users_file, config_file],
            "retailers": retailers,
        })
    );
    Ok(())
}
