//! `basketflow`: one binary for every role of a basketflow deployment.
//!
//! - `basketflow validate`: the event contract's verdict on JSON lines from stdin (for tracker
//!   integrators; the same code the graph's source and the HTTP collector use).
//! - `basketflow run`: the graph, as one process of a timely cluster.
//! - `basketflow trees build`: personalized experience trees from the cold data, published.
//! - `basketflow collect`: the HTTP Shopper Event API trackers send events to.
//! - `basketflow config check|example`: validate a configuration; print the commented example.
//! - `basketflow privacy erase|export`: a shopper's right to be forgotten and right of access.
//! - `basketflow analysts provision`: each retailer's analysts read their retailer's rows only.
//! - `basketflow rewards provision|run`: reward contacts (emails), loaded apart from the graph.

#![forbid(missing_docs)]

use basketflow_config as config;
mod analysts_cli;
mod preflight;
mod privacy_cli;
mod rewards_cli;
mod run;

use std::io;

/// mimalloc: the graph allocates and frees small strings and vectors at a high rate; glibc
/// malloc spent a third of a worker's time in `malloc`, `free` and `malloc_consolidate`.
/// (The `system-allocator` feature leaves the system's, for heap profilers.)
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Command-line interface.
#[derive(Parser, Debug)]
#[command(
    name = "basketflow",
    version,
    about = "Real-time shopper events -> analytics and personalized experiences"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Read JSON lines on stdin; write one verdict line per input line on stdout.
    Validate,
    /// Run the graph (one process of a cluster: -w workers, -n processes, -p index, -h hosts).
    Run(run::RunArgs),
    /// Experience trees: build them from the cold data in ClickHouse and publish them.
    Trees {
        #[command(subcommand)]
        command: basketflow_trees::TreesCommand,
    },
    /// The configuration: check a file and the BASKETFLOW_* environment, print the example.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// A shopper's rights (GDPR): erase them from every derived state and table, export what
    /// ClickHouse holds about them.
    Privacy {
        #[command(subcommand)]
        command: privacy_cli::PrivacyCommand,
    },
    /// Analysts' access in ClickHouse: one user per retailer, reading only that retailer's
    /// rows of every analyst view.
    Analysts {
        #[command(subcommand)]
        command: analysts_cli::AnalystsCommand,
    },
    /// Reward contacts (emails to pay a prize): the loader's ClickHouse user, and the loader.
    Rewards {
        #[command(subcommand)]
        command: rewards_cli::RewardsCommand,
    },
    /// Serve the HTTP collector: trackers POST events, valid ones are produced to Kafka.
    Collect {
        /// The configuration file.
        #[arg(long, default_value = "basketflow.toml")]
        config: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    without_transparent_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args)?,
        Command::Trees { command } => basketflow_trees::run(command, trees_settings)?,
        Command::Config { command } => config::run(command)?,
        Command::Privacy { command } => privacy_cli::run(command)?,
        Command::Analysts { command } => analysts_cli::run(command)?,
        Command::Rewards { command } => rewards_cli::run(command)?,
        Command::Collect { config } => {
            let config = config::Config::load(&config)?;
            basketflow_collector::run(
                config.collector,
                &config.kafka.brokers,
                &config.kafka.events_topic,
                &config.rewards.topic,
                &config.kafka.decisions_topic,
            )?
        }
        Command::Validate => {
            let summary =
                basketflow_ingest::validate::validate(io::stdin().lock(), io::stdout().lock())?;
            let rejected: u64 = summary.rejected.values().sum();
            eprintln!(
                "validate: {} lines, {} ok ({} with unknown fields), {} rejected {:?}",
                summary.lines, summary.ok, summary.with_unknown_fields, rejected, summary.rejected
            );
        }
    }
    Ok(())
}

/// Turns transparent huge pages off for this process (and what it executes), unless
/// `MIMALLOC_ALLOW_THP` is set.
///
/// mimalloc asks for huge pages on its segments (`madvise(MADV_HUGEPAGE)`) and gives freed
/// pages back to the system after 10 ms. With huge pages, every page it touches again is a
/// fresh 2 MiB the kernel zeroes: `clear_page_erms` was 11-13% of a catch-up's samples, in the
/// workers, the ClickHouse writer and the source threads alike. With 4 KiB pages a catch-up
/// on 2 workers took 4-15% less CPU and 10-60 MiB less peak memory (the design note of
/// 2026-12-04, "Fifth slice"). Best effort: a kernel without the flag keeps its default.
fn without_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

/// The tree builder's settings: the configuration file `path` (default: ./basketflow.toml if
/// it exists, else the built-in defaults) with the environment applied.
fn trees_settings(path: Option<&std::path::Path>) -> Result<basketflow_trees::Settings> {
    let default = std::path::Path::new(config::DEFAULT_PATH);
    let path = path.or_else(|| default.exists().then_some(default));
    let config = config::Config::resolve_file(path)?.config;
    Ok(basketflow_trees::Settings {
        brokers: config.kafka.brokers,
        trees_topic: config.kafka.trees_topic,
        clickhouse: basketflow_trees::ClickHouseSettings {
            url: config.clickhouse.url,
            database: config.clickhouse.database,
            user: config.clickhouse.user,
            password: config.clickhouse.password,
        },
        campaigns: config.trees.campaigns,
    })
}
