//! `basketflow trees build`: personalized experience trees from the cold data in ClickHouse.
//!
//! The data scientists' tool: it reads campaign definitions (a TOML file, see
//! `examples/campaigns.toml`), reads the cold data from ClickHouse's analyst views
//! (`shopper_purchases`, `product_affinities`, `sold_products_daily`), computes one tree per
//! active retailer's shopper and publishes it on the compacted trees topic (key =
//! [`basketflow_vocab::tree_key`]: `retailer_id`, U+001F, `shopper_id`; value = the tree as JSON), or prints the trees with `--dry-run`. The binary parses the command line
//! ([`TreesCommand`]) and calls [`run`] with the [`Settings`] of its configuration.
//!
//! # The flow
//! ```text
//! campaigns file ── parse_campaigns ──> plans ── select_active(--now) ──> active plans
//!                                                                             │
//! ClickHouse (cold_data), only the retailers the active plans target:         ▼
//!   sold_products_daily, summed over days ────────────────────────────> Builder::new
//!   product_affinities, streamed ─────────────────────────────────────> Builder::add_affinity
//!   shopper_purchases, streamed in shopper order, one shopper at a time ─> Builder::build
//!                                                                             │ a tree
//!                                                                             ▼
//!        publish: the trees topic (key = retailer U+001F shopper), or stdout with --dry-run;
//!        then the campaigns (ClickHouse `campaigns_log`, not with --dry-run: what
//!        `campaign_uplift` attributes by) and one JSON summary line (stdout; stderr with
//!        --dry-run)
//! ```
//!
//! No active campaign at `--now` is an error (exit 1) that names each campaign and why it is
//! not active: a demo or a schedule whose campaigns all ended must not publish nothing quietly.
//!
//! | module | job |
//! |---|---|
//! | [`campaigns`] | the campaign file: types, parser, checks, which campaigns are active |
//! | [`builder`] | the pure builder (no I/O): plans and rows in, trees out; the rules |
//! | `cold_data` | the reads of the analyst views in ClickHouse |
//! | `publish` | the trees topic's producer (or stdout), deliveries counted |
//! | this file | the command line, the settings and the flow above, the summary |
//!
//! `basketflow trees publish --file F` publishes trees computed elsewhere (JSON lines, one tree
//! per line as on the topic): every line is checked first, so a file goes whole or not at all.
//!
//! Deterministic: the same cold data, campaigns, `--now` and `--version` give the same trees,
//! whatever order ClickHouse returns rows in.

#![forbid(missing_docs)]

pub mod builder;
pub mod campaigns;
mod cold_data;
mod publish;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use basketflow_sinks::clickhouse::campaigns::{CampaignRecord, CAMPAIGNS_TABLE};
use basketflow_sinks::clickhouse::ClickHouseStore;
use basketflow_vocab::{ExperienceTree, Timestamp};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::builder::{Builder, BuiltTree};
use crate::campaigns::{parse_campaigns, parse_instant, retailers_of, select_active};
pub use crate::cold_data::ClickHouseSettings;
use crate::cold_data::ColdData;
use crate::publish::{Delivered, Output};

/// `basketflow trees <command>`.
#[derive(Subcommand, Debug)]
pub enum TreesCommand {
    /// Compute a personalized tree per active shopper from the cold data in ClickHouse and
    /// publish them on the trees topic (key = retailer U+001F shopper); prints a JSON summary
    /// line.
    Build(BuildArgs),
    /// Publish trees computed elsewhere (a data scientist's notebook, a test, a storefront
    /// demo): JSON lines, one tree per line, each checked before any is sent; prints a JSON
    /// summary line.
    Publish(PublishArgs),
}

/// Options of `basketflow trees publish`.
#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// The trees: a file of JSON lines (one `ExperienceTree` per line, as on the trees topic;
    /// blank lines skipped), or `-` for stdin.
    #[arg(long)]
    pub file: PathBuf,
    /// The configuration file (kafka.brokers, kafka.trees_topic). Default: ./basketflow.toml if
    /// it exists, else the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Options of `basketflow trees build`.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// The campaign file (TOML, `[[campaign]]` tables; see examples/campaigns.toml).
    /// Default: `[trees] campaigns` of the configuration.
    #[arg(long)]
    pub campaigns: Option<PathBuf>,
    /// The configuration file (kafka.brokers, kafka.trees_topic, [clickhouse]). Default:
    /// ./basketflow.toml if it exists, else the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the trees as JSON lines on stdout instead of publishing them (the summary then
    /// goes to stderr).
    #[arg(long)]
    pub dry_run: bool,
    /// Stop after this many shoppers (in retailer, then shopper id order).
    #[arg(long)]
    pub limit: Option<u64>,
    /// The instant campaigns are active at: RFC 3339 or a date (midnight UTC). Default: now.
    #[arg(long)]
    pub now: Option<String>,
    /// The version of the published trees (must increase with each publication). Default: the
    /// current unix time in seconds.
    #[arg(long = "version")]
    pub tree_version: Option<u64>,
    /// Report progress on stderr every this many shoppers.
    #[arg(long, default_value_t = 10_000)]
    pub progress_every: u64,
}

/// What `trees build` needs from the configuration (the binary fills it from its own).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The trees topic (compacted, key = [`basketflow_vocab::tree_key`]).
    pub trees_topic: String,
    /// Where the cold data is.
    pub clickhouse: ClickHouseSettings,
    /// The campaign file used when `--campaigns` is not given.
    pub campaigns: PathBuf,
}

/// Runs a `trees` command. `settings` gives the settings for the configuration file named by
/// `--config` (`None`: none named); it is called once, before anything else is read.
pub fn run(
    command: TreesCommand,
    settings: impl FnOnce(Option<&Path>) -> Result<Settings>,
) -> Result<()> {
    match command {
        TreesCommand::Build(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building a tokio runtime")?
            .block_on(build(args, settings)),
        TreesCommand::Publish(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a tokio runtime")?
            .block_on(publish_file(args, settings)),
    }
}

/// The trees of a JSON-lines text, each checked ([`ExperienceTree::check`]); the first bad
/// line fails the whole text, named by its number, so a file is published whole or not at all.
pub fn parse_tree_lines(text: &str) -> Result<Vec<ExperienceTree>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let tree: ExperienceTree = serde_json::from_str(line)
                .with_context(|| format!("line {}: not an experience tree", i + 1))?;
            tree.check()
                .map_err(|why| anyhow::anyhow!("line {}: {why}", i + 1))?;
            Ok(tree)
        })
        .collect()
}

/// `trees publish`: every tree of the file checked, then produced; fails unless the broker
/// acknowledged each one.
async fn publish_file(
    args: PublishArgs,
    settings: impl FnOnce(Option<&Path>) -> Result<Settings>,
) -> Result<()> {
    let settings = settings(args.config.as_deref())?;
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the trees from stdin")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading the trees {}", args.file.display()))?
    };
    let trees = parse_tree_lines(&text).with_context(|| format!("in {}", args.file.display()))?;
    let mut output = Output::kafka(&settings.brokers, &settings.trees_topic)?;
    for tree in &trees {
        output.write(tree).await?;
    }
    let Delivered {
        delivered,
        failures,
        first_error,
    } = output.finish()?;
    println!(
        "{}",
        json!({"trees": trees.len(), "delivered": delivered, "failures": failures,
               "topic": settings.trees_topic})
    );
    if failures > 0 || delivered != trees.len() as u64 {
        bail!(
            "{failures} of {} trees were not delivered to {}: {}",
            trees.len(),
            settings.trees_topic,
            first_error.unwrap_or_else(|| "no acknowledgment".into())
        );
    }
    Ok(())
}

/// What the summary says about one campaign's trees.
#[derive(Default)]
struct CampaignCounts {
    trees: u64,
    loyal: u64,
    recommendation: BTreeMap<&'static str, u64>,
    segments: BTreeMap<&'static str, u64>,
    /// The retailers it built trees at.
    retailers: BTreeSet<String>,
}

impl CampaignCounts {
    fn count(&mut self, built: &BuiltTree) {
        self.trees += 1;
        self.loyal += u64::from(built.loyal);
        if !self.retailers.contains(&built.tree.retailer_id) {
            self.retailers.insert(built.tree.retailer_id.clone());
        }
        *self
            .recommendation
            .entry(built.recommendation.map_or("none", |r| r.as_str()))
            .or_default() += 1;
        if let Some(segment) = built.segment {
            *self.segments.entry(segment).or_default() += 1;
        }
    }
}

/// `trees build`: the flow of the crate's doc, then the summary.
async fn build(
    args: BuildArgs,
    settings: impl FnOnce(Option<&Path>) -> Result<Settings>,
) -> Result<()> {
    let began = Instant::now();
    let settings = settings(args.config.as_deref())?;
    let campaigns = args
        .campaigns
        .clone()
        .unwrap_or_else(|| settings.campaigns.clone());
    let text = std::fs::read_to_string(&campaigns)
        .with_context(|| format!("reading the campaigns {}", campaigns.display()))?;
    let plans = parse_campaigns(&text)
        .with_context(|| format!("in the campaigns {}", campaigns.display()))?;
    let now = match &args.now {
        Some(s) => parse_instant(s, false).context("--now")?,
        None => Timestamp::now(),
    };
    let version = match args.tree_version {
        Some(v) => v,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs(),
    };
    let (active, skipped) = select_active(plans, now);
    for (id, reason) in &skipped {
        eprintln!("trees: campaign {id} skipped: not active at {now} ({reason})");
    }
    if active.is_empty() {
        let why: Vec<String> = skipped.iter().map(|(id, r)| format!("{id} {r}")).collect();
        bail!(
            "no campaign of {} is active at {now} ({}): nothing to publish; give the \
             campaigns a later end (or none), or --now",
            campaigns.display(),
            if why.is_empty() {
                "the file has none".to_owned()
            } else {
                why.join("; ")
            }
        );
    }
    // The campaigns go to ClickHouse after the trees: check first that the table exists.
    let store = if args.dry_run {
        None
    } else {
        let c = &settings.clickhouse;
        let store = ClickHouseStore::connect(&c.url, &c.database, &c.user, &c.password)
            .await
            .with_context(|| format!("connecting to ClickHouse at {}", c.url))?;
        if !store.exists(CAMPAIGNS_TABLE).await? {
            bail!(
                "{}.{CAMPAIGNS_TABLE} does not exist: start `basketflow run` once with this \
                 configuration (it migrates the schema) before publishing trees",
                c.database
            );
        }
        // A running campaign keeps its holdout share: another one would move shoppers between
        // groups that campaign_uplift has already counted.
        for (id, retailer, was) in store.recorded_holdouts().await? {
            if let Some(plan) = active.iter().find(|p| p.campaign.id == id) {
                if plan.holdout_basis_points != was {
                    bail!(
                        "campaign {id} was published with holdout_share {} at {retailer}; \
                         {} now would move shoppers between the groups campaign_uplift has \
                         counted: keep the share, or start a campaign with a new id",
                        f64::from(was) / 10_000.0,
                        f64::from(plan.holdout_basis_points) / 10_000.0
                    );
                }
            }
        }
        Some(store)
    };

    let retailers = retailers_of(&active);
    let cold = ColdData::connect(&settings.clickhouse, retailers).await?;
    let mut products = Vec::new();
    if !active.is_empty() {
        products = cold.products().await?;
    }
    let product_rows = products.len();
    let mut builder = Builder::new(active, version, products);

    let mut affinity_rows = 0u64;
    let mut shoppers_total = 0u64;
    if !builder.plans().is_empty() {
        affinity_rows = cold.for_each_affinity(|a| builder.add_affinity(a)).await?;
        shoppers_total = cold.count_shoppers().await?;
        if let Some(limit) = args.limit {
            shoppers_total = shoppers_total.min(limit);
        }
    }
    eprintln!(
        "trees: {} active campaign(s), {product_rows} products, {affinity_rows} affinities, \
         {shoppers_total} shoppers to do",
        builder.plans().len()
    );

    let mut output = if args.dry_run {
        Output::print()
    } else {
        Output::kafka(&settings.brokers, &settings.trees_topic)?
    };

    let mut shoppers = 0u64;
    let mut trees = 0u64;
    let mut shadowed = 0u64;
    let mut without_tree = 0u64;
    let mut limited = false;
    let mut counts: BTreeMap<usize, CampaignCounts> = BTreeMap::new();
    let work_began = Instant::now();
    if !builder.plans().is_empty() {
        let mut purchases = cold.purchases()?;
        while let Some(group) = purchases.next_shopper().await? {
            if args.limit.is_some_and(|l| shoppers >= l) {
                limited = true;
                break;
            }
            let outcome = builder.build(&group[0].retailer_id, &group[0].shopper_id, &group);
            shoppers += 1;
            if outcome.candidates > 1 {
                shadowed += 1;
            }
            if outcome.tree.is_none() {
                without_tree += 1;
            }
            if let Some(built) = outcome.tree {
                output.write(&built.tree).await?;
                trees += 1;
                counts.entry(built.plan).or_default().count(&built);
            }
            if args.progress_every > 0 && shoppers.is_multiple_of(args.progress_every) {
                let secs = work_began.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "trees: {shoppers}/{shoppers_total} shoppers, {:.0}/s",
                    shoppers as f64 / secs
                );
            }
        }
    }

    let Delivered {
        delivered,
        failures,
        first_error,
    } = output.finish()?;
    let mut recorded = 0usize;
    if let (Some(store), true) = (&store, failures == 0 && delivered == trees) {
        let records = campaign_records(builder.plans(), &counts, version);
        store
            .record_campaigns(&records)
            .await
            .context("recording the campaigns in ClickHouse")?;
        recorded = records.len();
    }
    let secs = work_began.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "trees: {shoppers}/{shoppers_total} shoppers, {:.0}/s, done",
        shoppers as f64 / secs
    );
    let by_campaign: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .map(|(i, c)| {
            (
                builder.plans()[*i].campaign.id.clone(),
                json!({
                    "trees": c.trees,
                    "loyal": c.loyal,
                    "recommendation": c.recommendation,
                    "segments": c.segments,
                }),
            )
        })
        .collect();
    let summary = json!({
        "version": version,
        "now": now.to_string(),
        "dry_run": args.dry_run,
        "topic": if args.dry_run { None } else { Some(&settings.trees_topic) },
        "campaigns_active": builder.plans().iter().map(|p| &p.campaign.id).collect::<Vec<_>>(),
        "campaigns_skipped": skipped.iter().map(|(id, why)| json!({"id": id, "reason": why})).collect::<Vec<_>>(),
        "shoppers": shoppers,
        "limited": limited,
        "trees": trees,
        "without_tree": without_tree,
        "shadowed": shadowed,
        "by_campaign": by_campaign,
        "campaign_rows_recorded": recorded,
        "delivered": delivered,
        "delivery_failures": failures,
        "elapsed_ms": began.elapsed().as_millis() as u64,
        "shoppers_per_s": (shoppers as f64 / secs).round() as u64,
    });
    if args.dry_run {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    if failures > 0 || (!args.dry_run && delivered != trees) {
        bail!(
            "{failures} tree(s) not delivered to {} ({delivered} of {trees} delivered); first \
             error: {}",
            settings.trees_topic,
            first_error.unwrap_or_else(|| "none reported (flush timed out?)".into())
        );
    }
    Ok(())
}

/// The `campaigns_log` rows of a build: each active campaign at each retailer it targets (its
/// listed retailers; for `"all"`, those it built trees at).
fn campaign_records(
    plans: &[campaigns::Plan],
    counts: &BTreeMap<usize, CampaignCounts>,
    version: u64,
) -> Vec<CampaignRecord> {
    let published_at = u32::try_from(Timestamp::now().unix_seconds().max(0)).unwrap_or(u32::MAX);
    let mut records = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let built = counts
            .get(&i)
            .map(|c| c.retailers.clone())
            .unwrap_or_default();
        let retailers = plan.retailers.clone().unwrap_or(built);
        let c = &plan.campaign;
        for retailer_id in retailers {
            records.push(CampaignRecord {
                campaign_id: c.id.clone(),
                retailer_id,
                version,
                category: c.category.clone(),
                products: c.products.clone(),
                holdout_basis_points: plan.holdout_basis_points,
                attribution_seconds: c.attribution_hours * 3600,
                published_at,
            });
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::parse_tree_lines;

    const TREE: &str = r#"{"tree_id":"web","version":1,"retailer_id":"r1","shopper_id":"cust-1","root":"start","nodes":[{"id":"start","children":["cart"]},{"id":"cart","conditions":[{"basket_value_at_least":{"cents":1}}],"experience":{"kind":"tension_cart","params":{"threshold_cents":5000}},"children":["cart"]}]}"#;

    #[test]
    fn publish_reads_every_tree_of_a_json_lines_file_and_skips_blank_lines() {
        let text = format!("{TREE}\n\n{}\n", TREE.replace("cust-1", "cust-2"));
        let trees = parse_tree_lines(&text).unwrap();
        let shoppers: Vec<&str> = trees.iter().map(|t| t.shopper_id.as_str()).collect();
        assert_eq!(shoppers, ["cust-1", "cust-2"]);
        assert_eq!(trees[0].nodes[1].children, ["cart"]);
    }

    #[test]
    fn publish_refuses_the_whole_file_at_its_first_bad_line_and_names_it() {
        let unknown_child = TREE.replace(r#""children":["cart"]}]"#, r#""children":["gone"]}]"#);
        let text = format!("{TREE}\n{unknown_child}\n");
        let err = format!("{:#}", parse_tree_lines(&text).unwrap_err());
        assert_eq!(err, r#"line 2: node "cart" has an unknown child "gone""#);
        let err = format!("{:#}", parse_tree_lines("{\"tree_id\":1}\n").unwrap_err());
        assert!(
            err.starts_with("line 1: not an experience tree: invalid type"),
            "{err}"
        );
    }
}
