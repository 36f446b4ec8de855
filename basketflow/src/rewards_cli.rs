//! `basketflow rewards`: reward contacts (the emails that pay out a gamified promotion), apart
//! from everything that personalizes (crate `basketflow_rewards`).
//!
//! - `rewards provision --clickhouse-config-dir DIR`: writes the loader's ClickHouse user
//!   (`[rewards] user`, password `[rewards] password`) into `DIR/users.d/`, allowed
//!   `[rewards] database` alone, waits until the server knows it, then creates the database
//!   and its tables as that user. Re-running it is safe (a password rotated).
//! - `rewards run`: the loader. Reads `[rewards] topic` and `[kafka] privacy_topic`, writes
//!   the contacts, applies erasures (rows deleted, tombstone, audit) and retention
//!   (`[privacy]`). Stops on SIGTERM or SIGINT, or with `--exit-when-caught-up` once it has read
//!   what the topics held when it started; then prints its counts as one JSON line.
//!
//! - `rewards export --retailer R --shopper S`: the shopper's reward contacts (right of
//!   access; `privacy export` covers the graph's tables, read by the graph's user, which may
//!   not read this database), as one JSON document, read as the rewards user.
//!
//! All read the same configuration as `run` (`--config`, else `./basketflow.toml` if present,
//! else the defaults; `BASKETFLOW_*` overrides).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use basketflow_rewards::loader::{self, LoaderSettings};
use basketflow_rewards::users;
use clap::Subcommand;

use crate::config::{Config, DEFAULT_PATH};

/// `basketflow rewards <command>`.
#[derive(Subcommand, Debug)]
pub(crate) enum RewardsCommand {
    /// Write the loader's ClickHouse user (allowed [rewards] database only) into the server's
    /// users.d/, wait until the server knows it, and create the database as that user.
    Provision {
        /// The configuration file (default: ./basketflow.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The directory of the server's config.xml (users.d/ is next to it).
        #[arg(long)]
        clickhouse_config_dir: PathBuf,
        /// How long to wait for the server to load the user.
        #[arg(long, default_value_t = 30)]
        wait_seconds: u64,
        /// Accept an empty [rewards] password (a local stack only: anyone who reaches the
        /// server from [rewards] networks could then read every email).
        #[arg(long)]
        insecure_local: bool,
    },
    /// Print a shopper's reward contacts (right of access) as one JSON document.
    Export {
        /// The configuration file (default: ./basketflow.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The retailer.
        #[arg(long)]
        retailer: String,
        /// The shopper.
        #[arg(long)]
        shopper: String,
    },
    /// Load reward contacts into their database; apply erasures and retention to them.
    Run {
        /// The configuration file (default: ./basketflow.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Stop once the topics are read up to where they ended at start.
        #[arg(long)]
        exit_when_caught_up: bool,
    },
}

fn load(config: Option<&Path>) -> Result<Config> {
    let default = Path::new(DEFAULT_PATH);
    Ok(Config::resolve_file(config.or_else(|| default.exists().then_some(default)))?.config)
}

/// Runs `basketflow rewards <command>`.
pub(crate) fn run(command: RewardsCommand) -> Result<()> {
    match command {
        RewardsCommand::Provision {
            config,
            clickhouse_config_dir,
            wait_seconds,
            insecure_local,
        } => {
            let config = load(config.as_deref())?;
            let r = &config.rewards;
            if r.password.is_empty() {
                if !insecure_local {
                    anyhow::bail!(
                        "rewards provision: [rewards] password is empty: anyone who reaches \
                         ClickHouse could read every reward contact's email. Set \
                         BASKETFLOW_REWARDS_PASSWORD (or [rewards] password), or pass \
                         --insecure-local on a local stack"
                    );
                }
                eprintln!(
                    "rewards provision: WARNING: [rewards] password is empty (--insecure-local); \
                     never do this but on a local stack"
                );
            }
            let file = users::write_users_file(
                &clickhouse_config_dir,
                &r.user,
                &r.password,
                &r.database,
                &r.networks,
            )?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime")?;
            runtime.block_on(async {
                let store = users::wait_until_known(
                    &config.clickhouse.url,
                    &r.database,
                    &r.user,
                    &r.password,
                    Duration::from_secs(wait_seconds),
                )
                .await?;
                store.migrate().await
            })?;
            println!(
                "{}",
                serde_json::json!({
                    "users_file": file.display().to_string(),
                    "user": r.user,
                    "database": r.database,
                })
            );
            Ok(())
        }
        RewardsCommand::Export {
            config,
            retailer,
            shopper,
        } => {
            let config = load(config.as_deref())?;
            let r = &config.rewards;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a tokio runtime")?;
            let contacts = runtime.block_on(async {
                let store = basketflow_rewards::RewardsStore::connect(
                    &config.clickhouse.url,
                    &r.database,
                    &r.user,
                    &r.password,
                )
                .await?;
                store.export(&retailer, &shopper).await
            })?;
            println!(
                "{}",
                serde_json::json!({
                    "retailer_id": retailer,
                    "shopper_id": shopper,
                    "reward_contacts": contacts,
                    "kafka": format!(
                        "topic {} keeps the contacts' messages until an erasure's tombstone is \
                         compacted or the retention period has passed",
                        r.topic
                    ),
                })
            );
            Ok(())
        }
        RewardsCommand::Run {
            config,
            exit_when_caught_up,
        } => {
            let config = load(config.as_deref())?;
            basketflow_metrics::logging::init(
                config.log.format(),
                config.log.level().unwrap_or(log::LevelFilter::Info),
            );
            let stop = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
            signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
            let r = &config.rewards;
            let settings = LoaderSettings {
                brokers: config.kafka.brokers.clone(),
                contacts_topic: r.topic.clone(),
                privacy_topic: config.kafka.privacy_topic.clone(),
                clickhouse_url: config.clickhouse.url.clone(),
                database: r.database.clone(),
                user: r.user.clone(),
                password: r.password.clone(),
                retention: config.privacy.retention(),
                exit_when_caught_up,
                metrics_listen: r.metrics_listen().map(str::to_string),
            };
            let counts = loader::run(&settings, stop)?;
            println!("{}", serde_json::to_string(&counts)?);
            Ok(())
        }
    }
}
