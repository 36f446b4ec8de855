//! `basketflow trees build`: personalized experience trees from the cold data in ClickHouse.
//!
//! The data scientists' tool: it reads campaign definitions (a TOML file, see
//! `examples/campaigns.toml`), reads the cold data from ClickHouse's analyst views
//! (`shopper_purchases`, `product_affinities`, `sold_products_daily`), computes one tree per
//! active shopper and publishes it on the compacted trees topic (key = `shopper_id`, value = the
//! tree as JSON), or prints the trees with `--dry-run`.
//!
//! The code has two halves: a pure part ([`Builder`]: campaigns and cold-data rows in, trees out;
//! unit-tested exactly) and an I/O part ([`run`]: ClickHouse queries, the Kafka producer,
//! progress and the summary).
//!
//! # Which shoppers, which campaign
//! A campaign is active when `start <= now < end` (`--now`, default: the current time). A shopper
//! is active for a campaign when they have at least one purchase (a `shopper_purchases` row) at
//! a retailer the campaign targets. The topic holds one tree per shopper, so a shopper gets the
//! tree of the first active campaign of the file that targets them, at the targeted retailer
//! where they have the most orders (then the greatest spend, then the smallest retailer id).
//! Shoppers who had other candidates are counted as `shadowed` in the summary.
//!
//! # The shopper's figures (from the cold data, at the chosen retailer)
//! - A product's category is the one `sold_products_daily` gives it (the category with the most
//!   units if rows disagree); its unit price is its revenue divided by its units, rounded.
//! - *Orders*: the shopper's number of orders is estimated as the greatest `orders` of their
//!   products (there is no orders table: this is a lower bound, exact when one product is in
//!   every order). *Spend*: the sum of `quantity x unit price` over their products.
//! - *Usual basket*: spend / orders, rounded up to the cent.
//! - *Category orders*: the greatest `orders` among their promoted products (the promoted
//!   category, or the campaign's `products` list when given).
//!
//! # Personalization rules
//! - **Recommended product** (the complement, e.g. the right sauce for pasta): the complement
//!   product the shopper bought in the most orders (then most units, then smallest id), reason
//!   `bought_before`; else the complement product bought together most often
//!   (`product_affinities.orders_together`, then smallest id) with the shopper's favourite
//!   promoted product (most orders, then most units, then smallest id), reason `bought_together`;
//!   else the complement's best seller (most orders in `sold_products_daily`, then most units,
//!   then smallest id), reason `best_seller`. No complement product known: no recommendation.
//! - **Tension-cart threshold**: the usual basket rounded up to a multiple of `round_cents`,
//!   plus `step_cents`. The nudge node fires once the basket is worth `threshold -
//!   announce_before_cents` (at least 0).
//! - **Discount** of the personalized promotion, scaled down for shoppers who buy the category
//!   anyway: `max - (max - min) * min(k, regular_orders) / regular_orders` (rounded half up)
//!   with `k` the category orders: never bought = max, `regular_orders` or more = min. The
//!   segment says which: `new` (k = 0), `occasional`, `regular`. Its products: the shopper's
//!   favourite promoted products, then the promoted best sellers, `max_products` in all.
//! - **Gamified promotion** on the next paid order, only for loyal shoppers (orders >=
//!   `min_orders`); the prize is capped at their usual basket rounded up (and `max_prize_cents`).
//!
//! # The tree
//! ```text
//! start
//! ├─ basket            basket_contains {category}        product_recommendation {product_id, reason}
//! │  ├─ basket/tension basket_value_at_least {threshold-Δ} tension_cart {threshold_cents, reward_cents}
//! │  │  └─ basket/tension/paid  order_paid               gamified_promotion (loyal only)
//! │  └─ basket/paid    order_paid                        gamified_promotion (loyal only)
//! ├─ searched:<term>   searched {term}                   personalized_promotion (one per term)
//! │  ├─ searched:<term>/basket ... (the same basket subtree, ids prefixed)
//! │  └─ searched:<term>/paid ...
//! ├─ viewed:<category> viewed {category, min_count}      personalized_promotion
//! │  └─ ... (the same)
//! └─ paid              order_paid                        gamified_promotion (loyal only)
//! ```
//! Children are tried in order, so a shopper who puts the category in the basket gets the
//! recommendation rather than the promotion. Conditions cannot be negated, so "has not bought
//! the category" is decided when the tree is built: with `audience = "new_to_category"` only
//! shoppers without category orders get the promotion branches. Nodes whose experience is
//! disabled or not computable are left out (a basket node without experience stays as a waypoint
//! when it has children). Every node has one parent (no shared subtrees).
//!
//! Deterministic: the same cold data, campaigns, `--now` and `--version` give the same trees,
//! whatever order ClickHouse returns rows in.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use basketflow_kafka::{client_config, keyed_producer};
use basketflow_sinks::clickhouse_sink::ClickHouseSink;
use basketflow_vocab::time::MICROS_PER_DAY;
use basketflow_vocab::{
    Condition, Experience, ExperienceKind, ExperienceTree, Node, ParamValue, ProductMatch,
    Timestamp,
};
use clap::{Args, Subcommand};
use clickhouse::Row;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use serde::Deserialize;
use serde_json::json;

use crate::config::Config;

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// `basketflow trees <command>`.
#[derive(Subcommand, Debug)]
pub(crate) enum TreesCommand {
    /// Compute a personalized tree per active shopper from the cold data in ClickHouse and
    /// publish them on the trees topic (key = shopper_id); prints a JSON summary line.
    Build(BuildArgs),
}

/// Options of `basketflow trees build`.
#[derive(Args, Debug, Clone)]
pub(crate) struct BuildArgs {
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
    /// Stop after this many shoppers (in shopper id order).
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

/// Runs a `trees` command.
pub(crate) fn run(command: TreesCommand) -> Result<()> {
    match command {
        TreesCommand::Build(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building a tokio runtime")?
            .block_on(build(args)),
    }
}

// ---------------------------------------------------------------------------------------------
// The campaign file
// ---------------------------------------------------------------------------------------------

/// The campaign file: a list of `[[campaign]]` tables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignFile {
    /// The campaigns, in priority order.
    #[serde(default)]
    pub campaign: Vec<Campaign>,
}

/// One retailer id, `"all"`, or a list of retailer ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RetailerSpec {
    /// A retailer id, or `"all"`.
    One(String),
    /// Several retailer ids.
    Many(Vec<String>),
}

/// One campaign, as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Campaign {
    /// The tree id of every tree of the campaign.
    pub id: String,
    /// The targeted retailers.
    pub retailer: RetailerSpec,
    /// First active instant (RFC 3339, or a date = its midnight UTC); none = always started.
    #[serde(default)]
    pub start: Option<toml::Value>,
    /// End, exclusive (RFC 3339, or a date = active through that whole day UTC); none = never.
    #[serde(default)]
    pub end: Option<toml::Value>,
    /// The promoted category (the basket, search and view conditions use it).
    pub category: String,
    /// If not empty: the promoted products (personalization picks among them instead of the
    /// whole category).
    #[serde(default)]
    pub products: Vec<String>,
    /// The complement category the recommendation is picked in.
    #[serde(default)]
    pub complement: Option<String>,
    /// If not empty: the complement products the recommendation is picked among.
    #[serde(default)]
    pub complement_products: Vec<String>,
    /// The experience kinds enabled (default: all four).
    #[serde(default = "all_kinds")]
    pub experiences: Vec<ExperienceKind>,
    /// Discount settings.
    #[serde(default)]
    pub discount: DiscountSettings,
    /// Tension-cart settings.
    #[serde(default)]
    pub tension_cart: TensionSettings,
    /// Personalized-promotion settings.
    #[serde(default)]
    pub promotion: PromotionSettings,
    /// Gamified-promotion settings.
    #[serde(default)]
    pub gamified: GamifiedSettings,
}

fn all_kinds() -> Vec<ExperienceKind> {
    vec![
        ExperienceKind::ProductRecommendation,
        ExperienceKind::TensionCart,
        ExperienceKind::PersonalizedPromotion,
        ExperienceKind::GamifiedPromotion,
    ]
}

/// `[campaign.discount]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct DiscountSettings {
    /// Discount for regular buyers of the category, in percent.
    pub min_percent: i64,
    /// Discount for shoppers who never bought the category, in percent.
    pub max_percent: i64,
    /// Category orders from which a shopper is regular (gets `min_percent`).
    pub regular_orders: i64,
}

impl Default for DiscountSettings {
    fn default() -> Self {
        DiscountSettings {
            min_percent: 5,
            max_percent: 20,
            regular_orders: 5,
        }
    }
}

/// `[campaign.tension_cart]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TensionSettings {
    /// The usual basket is rounded up to a multiple of this.
    pub round_cents: i64,
    /// Added to the rounded usual basket to make the threshold.
    pub step_cents: i64,
    /// The nudge fires when the basket is worth the threshold minus this.
    pub announce_before_cents: i64,
    /// The reward for reaching the threshold.
    pub reward_cents: i64,
}

impl Default for TensionSettings {
    fn default() -> Self {
        TensionSettings {
            round_cents: 500,
            step_cents: 500,
            announce_before_cents: 1000,
            reward_cents: 300,
        }
    }
}

/// Who gets the personalized promotion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Audience {
    /// Every active shopper (the discount is scaled down for regular buyers).
    #[default]
    All,
    /// Only shoppers who never bought the promoted products.
    NewToCategory,
}

/// `[campaign.promotion]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PromotionSettings {
    /// Search terms that trigger the promotion (default: the category, '-' read as a space).
    pub search_terms: Option<Vec<String>>,
    /// Views of the category in the session that trigger the promotion (0: no view trigger).
    pub view_min_count: u32,
    /// Who gets it.
    pub audience: Audience,
    /// How many products the promotion names.
    pub max_products: usize,
}

impl Default for PromotionSettings {
    fn default() -> Self {
        PromotionSettings {
            search_terms: None,
            view_min_count: 2,
            audience: Audience::All,
            max_products: 3,
        }
    }
}

/// `[campaign.gamified]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GamifiedSettings {
    /// Orders at the retailer from which a shopper is loyal.
    pub min_orders: i64,
    /// What can be won.
    pub prize: String,
    /// One chance in this many.
    pub win_one_in: i64,
    /// Upper bound of the prize, in cents.
    pub max_prize_cents: i64,
}

impl Default for GamifiedSettings {
    fn default() -> Self {
        GamifiedSettings {
            min_orders: 5,
            prize: "basket_back".into(),
            win_one_in: 20,
            max_prize_cents: 10_000,
        }
    }
}

/// A campaign checked and ready to use.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// The campaign as written.
    pub campaign: Campaign,
    /// Start, inclusive.
    pub start: Option<Timestamp>,
    /// End, exclusive.
    pub end: Option<Timestamp>,
    /// The targeted retailers; `None` = all.
    pub retailers: Option<BTreeSet<String>>,
    /// The search terms that trigger the promotion.
    pub search_terms: Vec<String>,
    /// The enabled kinds.
    pub kinds: BTreeSet<ExperienceKind>,
}

impl Plan {
    /// True when the campaign targets `retailer`.
    pub fn targets(&self, retailer: &str) -> bool {
        self.retailers
            .as_ref()
            .is_none_or(|set| set.contains(retailer))
    }

    /// Why the campaign is not active at `now`, if it is not.
    pub fn inactive_reason(&self, now: Timestamp) -> Option<String> {
        match (self.start, self.end) {
            (Some(s), _) if now < s => Some(format!("starts at {s}")),
            (_, Some(e)) if now >= e => Some(format!("ended at {e}")),
            _ => None,
        }
    }

    fn enabled(&self, kind: ExperienceKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// Parses `s` as an RFC 3339 instant or a `YYYY-MM-DD` date (its midnight UTC, or the next
/// midnight when `end_of_day`).
pub(crate) fn parse_instant(s: &str, end_of_day: bool) -> Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(s) {
        return Ok(t);
    }
    let is_date = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    match Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z")) {
        Some(t) if is_date => Ok(Timestamp(t.0 + if end_of_day { MICROS_PER_DAY } else { 0 })),
        _ => bail!("{s:?} is neither an RFC 3339 instant with an offset nor a YYYY-MM-DD date"),
    }
}

fn instant(v: &Option<toml::Value>, end_of_day: bool, what: &str) -> Result<Option<Timestamp>> {
    let text = match v {
        None => return Ok(None),
        Some(toml::Value::String(s)) => s.clone(),
        Some(toml::Value::Datetime(d)) => d.to_string(),
        Some(other) => bail!("{what} must be a date or an RFC 3339 instant, not {other}"),
    };
    parse_instant(&text, end_of_day)
        .with_context(|| what.to_owned())
        .map(Some)
}

/// Parses and checks a campaign file.
pub(crate) fn parse_campaigns(text: &str) -> Result<Vec<Plan>> {
    let file: CampaignFile = toml::from_str(text)?;
    let mut ids = BTreeSet::new();
    let mut plans = Vec::new();
    for c in file.campaign {
        let plan = check_campaign(c.clone()).with_context(|| format!("campaign {:?}", c.id))?;
        ensure!(
            ids.insert(c.id.clone()),
            "campaign id {:?} appears twice",
            c.id
        );
        plans.push(plan);
    }
    Ok(plans)
}

fn check_campaign(c: Campaign) -> Result<Plan> {
    ensure!(!c.id.trim().is_empty(), "id must not be empty");
    ensure!(!c.category.trim().is_empty(), "category must not be empty");
    let retailers = match &c.retailer {
        RetailerSpec::One(r) if r == "all" => None,
        RetailerSpec::One(r) => Some(BTreeSet::from([r.clone()])),
        RetailerSpec::Many(list) if list.iter().any(|r| r == "all") => None,
        RetailerSpec::Many(list) => Some(list.iter().cloned().collect()),
    };
    if let Some(set) = &retailers {
        ensure!(
            !set.is_empty() && set.iter().all(|r| !r.is_empty()),
            "retailer must name at least one retailer, or \"all\""
        );
    }
    let start = instant(&c.start, false, "start")?;
    let end = instant(&c.end, true, "end")?;
    if let (Some(s), Some(e)) = (start, end) {
        ensure!(s < e, "start {s} is not before end {e}");
    }
    let kinds: BTreeSet<ExperienceKind> = c.experiences.iter().copied().collect();
    ensure!(
        !kinds.is_empty(),
        "experiences must enable at least one kind"
    );
    if kinds.contains(&ExperienceKind::ProductRecommendation) {
        ensure!(
            c.complement.is_some() || !c.complement_products.is_empty(),
            "product_recommendation needs a complement category or complement_products"
        );
    }
    let d = &c.discount;
    ensure!(
        0 <= d.min_percent && d.min_percent <= d.max_percent && d.max_percent <= 100,
        "discount needs 0 <= min_percent <= max_percent <= 100"
    );
    ensure!(
        d.regular_orders >= 1,
        "discount.regular_orders must be at least 1"
    );
    let t = &c.tension_cart;
    ensure!(
        t.round_cents >= 1,
        "tension_cart.round_cents must be at least 1"
    );
    ensure!(
        t.step_cents >= 0 && t.announce_before_cents >= 0 && t.reward_cents >= 0,
        "tension_cart amounts must not be negative"
    );
    let search_terms = match &c.promotion.search_terms {
        Some(terms) => terms.iter().map(|t| t.trim().to_owned()).collect(),
        None => vec![c.category.replace('-', " ")],
    };
    ensure!(
        search_terms.iter().all(|t: &String| !t.is_empty()),
        "promotion.search_terms must not contain empty terms"
    );
    let g = &c.gamified;
    ensure!(
        g.min_orders >= 1 && g.win_one_in >= 1 && g.max_prize_cents >= 0,
        "gamified needs min_orders >= 1, win_one_in >= 1, max_prize_cents >= 0"
    );
    Ok(Plan {
        campaign: c,
        start,
        end,
        retailers,
        search_terms,
        kinds,
    })
}

// ---------------------------------------------------------------------------------------------
// The cold data, as the analyst views give it
// ---------------------------------------------------------------------------------------------

/// One row of `shopper_purchases`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Row, Deserialize)]
pub(crate) struct Purchase {
    /// The retailer.
    pub retailer_id: String,
    /// The shopper.
    pub shopper_id: String,
    /// The product.
    pub product_id: String,
    /// Units bought.
    pub quantity: i64,
    /// Orders containing the product.
    pub orders: i64,
}

/// `sold_products_daily` summed over days: one row per retailer, product and category.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Row, Deserialize)]
pub(crate) struct ProductSales {
    /// The retailer.
    pub retailer_id: String,
    /// The product.
    pub product_id: String,
    /// The category the order lines gave it.
    pub category: String,
    /// Units sold.
    pub quantity: i64,
    /// Revenue.
    pub revenue_cents: i64,
    /// Orders.
    pub orders: i64,
}

/// One row of `product_affinities`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Row, Deserialize)]
pub(crate) struct Affinity {
    /// The retailer.
    pub retailer_id: String,
    /// The smaller product id.
    pub product_a: String,
    /// The greater product id.
    pub product_b: String,
    /// Orders containing both.
    pub orders_together: i64,
}

// ---------------------------------------------------------------------------------------------
// The pure part: cold data in, trees out
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default)]
struct ProductInfo {
    category: String,
    unit_price_cents: i64,
    quantity: i64,
    orders: i64,
}

#[derive(Debug, Default)]
struct RetailerCatalog {
    products: BTreeMap<String, ProductInfo>,
    /// Product ids of each category, best seller first.
    by_category: BTreeMap<String, Vec<String>>,
    /// Relevant affinities: product -> (partner, orders together).
    partners: BTreeMap<String, Vec<(String, i64)>>,
}

static EMPTY_CATALOG: RetailerCatalog = RetailerCatalog {
    products: BTreeMap::new(),
    by_category: BTreeMap::new(),
    partners: BTreeMap::new(),
};

impl RetailerCatalog {
    fn category(&self, product: &str) -> Option<&str> {
        self.products.get(product).map(|p| p.category.as_str())
    }

    /// Best-seller order: most orders, then most units, then smallest id.
    fn sales_key<'a>(&self, product: &'a str) -> (Reverse<i64>, Reverse<i64>, &'a str) {
        let p = self.products.get(product);
        (
            Reverse(p.map_or(0, |p| p.orders)),
            Reverse(p.map_or(0, |p| p.quantity)),
            product,
        )
    }
}

/// How the recommended product was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RecommendationReason {
    /// The shopper bought it before.
    BoughtBefore,
    /// Bought together with the shopper's favourite promoted product.
    BoughtTogether,
    /// The complement's best seller.
    BestSeller,
}

impl RecommendationReason {
    /// The reason's name, as in the tree's params.
    pub fn as_str(self) -> &'static str {
        match self {
            RecommendationReason::BoughtBefore => "bought_before",
            RecommendationReason::BoughtTogether => "bought_together",
            RecommendationReason::BestSeller => "best_seller",
        }
    }
}

/// A tree with what the summary counts about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BuiltTree {
    /// The tree.
    pub tree: ExperienceTree,
    /// Index of its campaign among the builder's plans.
    pub plan: usize,
    /// How its recommendation was chosen (none: no recommendation node).
    pub recommendation: Option<RecommendationReason>,
    /// The promotion's segment (`new`, `occasional`, `regular`), if the tree has a promotion.
    pub segment: Option<&'static str>,
    /// True when the tree has the gamified promotion.
    pub loyal: bool,
}

/// What [`Builder::build`] says about one shopper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShopperOutcome {
    /// The tree, if an active campaign targets the shopper and enables something for them.
    pub tree: Option<BuiltTree>,
    /// How many (campaign, retailer) pairs could have given the shopper a tree.
    pub candidates: usize,
}

/// The pure tree builder: active campaigns plus catalog figures; one shopper's purchases in,
/// their tree out.
pub(crate) struct Builder {
    plans: Vec<Plan>,
    version: u64,
    catalogs: BTreeMap<String, RetailerCatalog>,
}

/// A shopper's figures at one retailer.
struct Profile<'a> {
    retailer: &'a str,
    catalog: &'a RetailerCatalog,
    /// Their rows there, by product id.
    rows: Vec<&'a Purchase>,
    orders: i64,
    spend_cents: i64,
}

fn ceil_div(a: i64, b: i64) -> i64 {
    if a <= 0 {
        0
    } else {
        (a + b - 1) / b
    }
}

fn round_up_to(a: i64, step: i64) -> i64 {
    ceil_div(a, step).saturating_mul(step)
}

/// A shopper's rows ordered by preference: most orders, then most units, then smallest id.
fn favourites<'a>(rows: impl Iterator<Item = &'a Purchase>) -> Vec<&'a Purchase> {
    let mut v: Vec<&Purchase> = rows.collect();
    v.sort_by(|a, b| {
        (Reverse(a.orders), Reverse(a.quantity), &a.product_id).cmp(&(
            Reverse(b.orders),
            Reverse(b.quantity),
            &b.product_id,
        ))
    });
    v
}

fn category_match(category: &str) -> ProductMatch {
    ProductMatch {
        product_id: None,
        category: Some(category.to_owned()),
        brand: None,
    }
}

fn paid_node(id: String, game: &Experience) -> Node {
    Node {
        id,
        conditions: vec![Condition::OrderPaid {}],
        experience: Some(game.clone()),
        children: vec![],
    }
}

/// The parts of one shopper's tree, before assembly.
struct Parts {
    basket: Condition,
    recommendation: Option<Experience>,
    tension: Option<(Condition, Experience)>,
    promotions: Vec<(String, Condition, Experience)>,
    game: Option<Experience>,
}

impl Parts {
    /// Appends the basket subtree under `prefix`; its root id, unless it would be empty.
    fn push_basket(&self, nodes: &mut Vec<Node>, prefix: &str) -> Option<String> {
        if self.recommendation.is_none() && self.tension.is_none() && self.game.is_none() {
            return None;
        }
        let id = format!("{prefix}basket");
        let at = nodes.len();
        nodes.push(Node {
            id: id.clone(),
            conditions: vec![self.basket.clone()],
            experience: self.recommendation.clone(),
            children: vec![],
        });
        let mut children = Vec::new();
        if let Some((cond, exp)) = &self.tension {
            let tid = format!("{id}/tension");
            children.push(tid.clone());
            let mut tension = Node {
                id: tid.clone(),
                conditions: vec![cond.clone()],
                experience: Some(exp.clone()),
                children: vec![],
            };
            let paid = self
                .game
                .as_ref()
                .map(|g| paid_node(format!("{tid}/paid"), g));
            if let Some(p) = &paid {
                tension.children.push(p.id.clone());
            }
            nodes.push(tension);
            nodes.extend(paid);
        }
        if let Some(g) = &self.game {
            children.push(format!("{id}/paid"));
            nodes.push(paid_node(format!("{id}/paid"), g));
        }
        nodes[at].children = children;
        Some(id)
    }

    /// All the nodes, root first, each before its children.
    fn assemble(&self) -> Vec<Node> {
        let mut nodes = vec![Node {
            id: "start".into(),
            conditions: vec![],
            experience: None,
            children: vec![],
        }];
        let mut children = Vec::new();
        children.extend(self.push_basket(&mut nodes, ""));
        for (id, cond, exp) in &self.promotions {
            children.push(id.clone());
            let at = nodes.len();
            nodes.push(Node {
                id: id.clone(),
                conditions: vec![cond.clone()],
                experience: Some(exp.clone()),
                children: vec![],
            });
            let mut below = Vec::new();
            below.extend(self.push_basket(&mut nodes, &format!("{id}/")));
            if let Some(g) = &self.game {
                below.push(format!("{id}/paid"));
                nodes.push(paid_node(format!("{id}/paid"), g));
            }
            nodes[at].children = below;
        }
        if let Some(g) = &self.game {
            children.push("paid".into());
            nodes.push(paid_node("paid".into(), g));
        }
        nodes[0].children = children;
        nodes
    }
}

impl Builder {
    /// A builder for the active `plans`, publishing version `version`, with the product figures
    /// of `sold_products_daily` summed over days (any order).
    pub fn new(plans: Vec<Plan>, version: u64, products: Vec<ProductSales>) -> Builder {
        let mut products = products;
        products.sort();
        // (retailer, product) -> category -> units, and the sums.
        let mut sums: BTreeMap<(String, String), (BTreeMap<String, i64>, ProductSales)> =
            BTreeMap::new();
        for p in products {
            let entry = sums
                .entry((p.retailer_id.clone(), p.product_id.clone()))
                .or_insert_with(|| {
                    (
                        BTreeMap::new(),
                        ProductSales {
                            quantity: 0,
                            revenue_cents: 0,
                            orders: 0,
                            ..p.clone()
                        },
                    )
                });
            *entry.0.entry(p.category.clone()).or_default() += p.quantity;
            entry.1.quantity += p.quantity;
            entry.1.revenue_cents += p.revenue_cents;
            entry.1.orders += p.orders;
        }
        let mut catalogs: BTreeMap<String, RetailerCatalog> = BTreeMap::new();
        for ((retailer, product), (categories, total)) in sums {
            let category = categories
                .iter()
                .min_by_key(|(c, units)| (Reverse(**units), c.as_str()))
                .map(|(c, _)| c.clone())
                .unwrap_or_default();
            let unit_price_cents = if total.quantity > 0 {
                let (r, q) = (total.revenue_cents as i128, total.quantity as i128);
                ((2 * r + q) / (2 * q)) as i64
            } else {
                0
            };
            catalogs.entry(retailer).or_default().products.insert(
                product,
                ProductInfo {
                    category,
                    unit_price_cents,
                    quantity: total.quantity,
                    orders: total.orders,
                },
            );
        }
        for catalog in catalogs.values_mut() {
            let mut by_category: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (id, p) in &catalog.products {
                by_category
                    .entry(p.category.clone())
                    .or_default()
                    .push(id.clone());
            }
            for ids in by_category.values_mut() {
                ids.sort_by(|a, b| catalog.sales_key(a).cmp(&catalog.sales_key(b)));
            }
            catalog.by_category = by_category;
        }
        Builder {
            plans,
            version,
            catalogs,
        }
    }

    /// The active campaigns.
    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    fn catalog(&self, retailer: &str) -> &RetailerCatalog {
        self.catalogs.get(retailer).unwrap_or(&EMPTY_CATALOG)
    }

    fn is_promoted(plan: &Plan, catalog: &RetailerCatalog, product: &str) -> bool {
        let c = &plan.campaign;
        if c.products.is_empty() {
            catalog.category(product) == Some(c.category.as_str())
        } else {
            c.products.iter().any(|p| p == product)
        }
    }

    fn is_complement(plan: &Plan, catalog: &RetailerCatalog, product: &str) -> bool {
        let c = &plan.campaign;
        if !c.complement_products.is_empty() {
            c.complement_products.iter().any(|p| p == product)
        } else {
            c.complement.is_some() && catalog.category(product) == c.complement.as_deref()
        }
    }

    /// Remembers an affinity if some campaign can use it (a promoted product with a complement
    /// one); others are dropped, to keep memory small. Call after [`Self::new`], in any order.
    pub fn add_affinity(&mut self, a: &Affinity) {
        let Some(catalog) = self.catalogs.get(&a.retailer_id) else {
            return;
        };
        let (mut a_to_b, mut b_to_a) = (false, false);
        for plan in self.plans.iter().filter(|p| p.targets(&a.retailer_id)) {
            a_to_b |= Self::is_promoted(plan, catalog, &a.product_a)
                && Self::is_complement(plan, catalog, &a.product_b);
            b_to_a |= Self::is_promoted(plan, catalog, &a.product_b)
                && Self::is_complement(plan, catalog, &a.product_a);
        }
        if a.orders_together <= 0 || !(a_to_b || b_to_a) {
            return;
        }
        let catalog = self
            .catalogs
            .get_mut(&a.retailer_id)
            .expect("checked above");
        if a_to_b {
            let v = catalog.partners.entry(a.product_a.clone()).or_default();
            v.push((a.product_b.clone(), a.orders_together));
            v.sort_by(|x, y| (Reverse(x.1), &x.0).cmp(&(Reverse(y.1), &y.0)));
        }
        if b_to_a {
            let v = catalog.partners.entry(a.product_b.clone()).or_default();
            v.push((a.product_a.clone(), a.orders_together));
            v.sort_by(|x, y| (Reverse(x.1), &x.0).cmp(&(Reverse(y.1), &y.0)));
        }
    }

    fn profile<'a>(&'a self, retailer: &'a str, rows: &'a [Purchase]) -> Profile<'a> {
        let catalog = self.catalog(retailer);
        let rows: Vec<&Purchase> = rows
            .iter()
            .filter(|r| r.retailer_id == retailer && r.orders > 0)
            .collect();
        let orders = rows.iter().map(|r| r.orders).max().unwrap_or(0);
        let spend: i128 = rows
            .iter()
            .map(|r| {
                let price = catalog
                    .products
                    .get(&r.product_id)
                    .map_or(0, |p| p.unit_price_cents);
                r.quantity.max(0) as i128 * price as i128
            })
            .sum();
        Profile {
            retailer,
            catalog,
            rows,
            orders,
            spend_cents: spend.min(i64::MAX as i128) as i64,
        }
    }

    /// The recommended complement product and why.
    fn recommend(plan: &Plan, p: &Profile) -> Option<(String, RecommendationReason)> {
        let complement = |id: &str| Self::is_complement(plan, p.catalog, id);
        if let Some(r) =
            favourites(p.rows.iter().copied().filter(|r| complement(&r.product_id))).first()
        {
            return Some((r.product_id.clone(), RecommendationReason::BoughtBefore));
        }
        let favourite = favourites(
            p.rows
                .iter()
                .copied()
                .filter(|r| Self::is_promoted(plan, p.catalog, &r.product_id)),
        );
        if let Some(fav) = favourite.first() {
            let partner = p
                .catalog
                .partners
                .get(&fav.product_id)
                .and_then(|v| v.iter().find(|(id, _)| complement(id)));
            if let Some((id, _)) = partner {
                return Some((id.clone(), RecommendationReason::BoughtTogether));
            }
        }
        Self::best_sellers_of_complement(plan, p.catalog)
            .into_iter()
            .next()
            .map(|id| (id, RecommendationReason::BestSeller))
    }

    fn best_sellers_of_complement(plan: &Plan, catalog: &RetailerCatalog) -> Vec<String> {
        let c = &plan.campaign;
        if !c.complement_products.is_empty() {
            let mut v: Vec<&str> = c.complement_products.iter().map(|s| s.as_str()).collect();
            v.sort_by_key(|id| catalog.sales_key(id));
            v.dedup();
            v.into_iter().map(|s| s.to_owned()).collect()
        } else {
            c.complement
                .as_ref()
                .and_then(|cat| catalog.by_category.get(cat))
                .cloned()
                .unwrap_or_default()
        }
    }

    fn best_sellers_of_promoted(plan: &Plan, catalog: &RetailerCatalog) -> Vec<String> {
        let c = &plan.campaign;
        if !c.products.is_empty() {
            let mut v: Vec<&str> = c.products.iter().map(|s| s.as_str()).collect();
            v.sort_by_key(|id| catalog.sales_key(id));
            v.dedup();
            v.into_iter().map(|s| s.to_owned()).collect()
        } else {
            catalog
                .by_category
                .get(&c.category)
                .cloned()
                .unwrap_or_default()
        }
    }

    /// The tree of campaign `plan_index` for `shopper_id` at the profile's retailer.
    fn tree(&self, plan_index: usize, shopper_id: &str, p: &Profile) -> Option<BuiltTree> {
        let plan = &self.plans[plan_index];
        let c = &plan.campaign;
        let t = &c.tension_cart;
        let usual = ceil_div(p.spend_cents, p.orders.max(1));
        let usual_rounded = round_up_to(usual, t.round_cents);

        let mut recommendation_reason = None;
        let recommendation = if plan.enabled(ExperienceKind::ProductRecommendation) {
            Self::recommend(plan, p).map(|(product_id, reason)| {
                recommendation_reason = Some(reason);
                Experience {
                    kind: ExperienceKind::ProductRecommendation,
                    params: BTreeMap::from([
                        ("product_id".to_owned(), ParamValue::Text(product_id)),
                        (
                            "reason".to_owned(),
                            ParamValue::Text(reason.as_str().to_owned()),
                        ),
                    ]),
                }
            })
        } else {
            None
        };

        let tension = plan.enabled(ExperienceKind::TensionCart).then(|| {
            let threshold = usual_rounded.saturating_add(t.step_cents);
            (
                Condition::BasketValueAtLeast {
                    cents: (threshold - t.announce_before_cents).max(0),
                },
                Experience {
                    kind: ExperienceKind::TensionCart,
                    params: BTreeMap::from([
                        ("threshold_cents".to_owned(), ParamValue::Int(threshold)),
                        ("reward_cents".to_owned(), ParamValue::Int(t.reward_cents)),
                    ]),
                },
            )
        });

        let promoted_rows = favourites(
            p.rows
                .iter()
                .copied()
                .filter(|r| Self::is_promoted(plan, p.catalog, &r.product_id)),
        );
        let category_orders = promoted_rows.iter().map(|r| r.orders).max().unwrap_or(0);
        let d = &c.discount;
        let k = category_orders.min(d.regular_orders);
        let discount = d.max_percent
            - ((d.max_percent - d.min_percent) * k + d.regular_orders / 2) / d.regular_orders;
        let segment = match category_orders {
            0 => "new",
            k if k >= d.regular_orders => "regular",
            _ => "occasional",
        };
        let mut promotions = Vec::new();
        let promote = plan.enabled(ExperienceKind::PersonalizedPromotion)
            && (c.promotion.audience == Audience::All || category_orders == 0);
        if promote {
            let mut products: Vec<String> = Vec::new();
            let own = promoted_rows.iter().map(|r| r.product_id.clone());
            for id in own.chain(Self::best_sellers_of_promoted(plan, p.catalog)) {
                if products.len() >= c.promotion.max_products {
                    break;
                }
                if !products.contains(&id) {
                    products.push(id);
                }
            }
            let mut params = BTreeMap::from([
                ("category".to_owned(), ParamValue::Text(c.category.clone())),
                ("discount_percent".to_owned(), ParamValue::Int(discount)),
                ("segment".to_owned(), ParamValue::Text(segment.to_owned())),
            ]);
            if !products.is_empty() {
                params.insert("product_ids".to_owned(), ParamValue::List(products));
            }
            let promotion = Experience {
                kind: ExperienceKind::PersonalizedPromotion,
                params,
            };
            for term in &plan.search_terms {
                promotions.push((
                    format!("searched:{term}"),
                    Condition::Searched { term: term.clone() },
                    promotion.clone(),
                ));
            }
            if c.promotion.view_min_count > 0 {
                promotions.push((
                    format!("viewed:{}", c.category),
                    Condition::Viewed {
                        matches: category_match(&c.category),
                        min_count: c.promotion.view_min_count,
                    },
                    promotion,
                ));
            }
        }

        let g = &c.gamified;
        let loyal = plan.enabled(ExperienceKind::GamifiedPromotion) && p.orders >= g.min_orders;
        let game = loyal.then(|| Experience {
            kind: ExperienceKind::GamifiedPromotion,
            params: BTreeMap::from([
                ("prize".to_owned(), ParamValue::Text(g.prize.clone())),
                (
                    "max_prize_cents".to_owned(),
                    ParamValue::Int(usual_rounded.min(g.max_prize_cents)),
                ),
                ("win_one_in".to_owned(), ParamValue::Int(g.win_one_in)),
            ]),
        });

        let parts = Parts {
            basket: Condition::BasketContains {
                matches: category_match(&c.category),
                min_quantity: 1,
            },
            recommendation,
            tension,
            promotions,
            game,
        };
        let nodes = parts.assemble();
        if nodes.len() == 1 {
            return None;
        }
        let tree = ExperienceTree {
            tree_id: c.id.clone(),
            version: self.version,
            retailer_id: p.retailer.to_owned(),
            shopper_id: shopper_id.to_owned(),
            root: "start".into(),
            nodes,
        };
        debug_assert_eq!(tree.check(), Ok(()));
        Some(BuiltTree {
            tree,
            plan: plan_index,
            recommendation: recommendation_reason,
            segment: promote.then_some(segment),
            loyal,
        })
    }

    /// The tree of `shopper_id`, whose `shopper_purchases` rows (every retailer, any order) are
    /// `rows`.
    pub fn build(&self, shopper_id: &str, rows: &[Purchase]) -> ShopperOutcome {
        let retailers: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.shopper_id == shopper_id && r.orders > 0)
            .map(|r| r.retailer_id.as_str())
            .collect();
        let candidates: Vec<(usize, &str)> = self
            .plans
            .iter()
            .enumerate()
            .flat_map(|(i, plan)| {
                retailers
                    .iter()
                    .filter(|r| plan.targets(r))
                    .map(move |r| (i, *r))
            })
            .collect();
        let Some(&(first, _)) = candidates.first() else {
            return ShopperOutcome {
                tree: None,
                candidates: 0,
            };
        };
        let mine: Vec<Purchase> = rows
            .iter()
            .filter(|r| r.shopper_id == shopper_id)
            .cloned()
            .collect();
        let best = candidates
            .iter()
            .filter(|(i, _)| *i == first)
            .map(|(_, r)| self.profile(r, &mine))
            .min_by_key(|p| (Reverse(p.orders), Reverse(p.spend_cents), p.retailer))
            .expect("at least one candidate");
        ShopperOutcome {
            tree: self.tree(first, shopper_id, &best),
            candidates: candidates.len(),
        }
    }
}

/// The retailers `plans` target (`None`: all).
pub(crate) fn retailers_of(plans: &[Plan]) -> Option<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for p in plans {
        all.extend(p.retailers.clone()?);
    }
    Some(all)
}

/// The active plans at `now`, and the ids of the others with the reason.
pub(crate) fn select_active(
    plans: Vec<Plan>,
    now: Timestamp,
) -> (Vec<Plan>, Vec<(String, String)>) {
    let mut active = Vec::new();
    let mut skipped = Vec::new();
    for plan in plans {
        match plan.inactive_reason(now) {
            None => active.push(plan),
            Some(reason) => skipped.push((plan.campaign.id.clone(), reason)),
        }
    }
    (active, skipped)
}

// ---------------------------------------------------------------------------------------------
// The I/O part
// ---------------------------------------------------------------------------------------------

/// Counts deliveries and remembers the first failure.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_error.lock().expect("not poisoned");
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

enum Output {
    Print(std::io::BufWriter<std::io::Stdout>),
    Kafka {
        producer: ThreadedProducer<DeliveryContext>,
        deliveries: Arc<Deliveries>,
        topic: String,
    },
}

impl Output {
    async fn write(&mut self, tree: &ExperienceTree) -> Result<()> {
        let json = serde_json::to_string(tree)?;
        match self {
            Output::Print(w) => {
                w.write_all(json.as_bytes())?;
                w.write_all(b"\n")?;
            }
            Output::Kafka {
                producer, topic, ..
            } => {
                let mut record = BaseRecord::to(topic.as_str())
                    .key(tree.shopper_id.as_bytes())
                    .payload(json.as_bytes());
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        Err((e, _)) => bail!("producing to {topic}: {e}"),
                    }
                }
            }
        }
        Ok(())
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let default = Path::new("basketflow.toml");
    let path = path.or_else(|| default.exists().then_some(default));
    Ok(Config::resolve_file(path)?.config)
}

/// `WHERE` clause restricting `retailer_id` to the builder's retailers, bound to the query.
fn retailer_clause(retailers: &Option<BTreeSet<String>>) -> &'static str {
    if retailers.is_some() {
        "WHERE has(?, retailer_id)"
    } else {
        ""
    }
}

fn bind_retailers(
    query: clickhouse::query::Query,
    retailers: &Option<BTreeSet<String>>,
) -> clickhouse::query::Query {
    match retailers {
        Some(set) => query.bind(set.iter().cloned().collect::<Vec<String>>()),
        None => query,
    }
}

#[derive(Default)]
struct CampaignCounts {
    trees: u64,
    loyal: u64,
    recommendation: BTreeMap<&'static str, u64>,
    segments: BTreeMap<&'static str, u64>,
}

async fn build(args: BuildArgs) -> Result<()> {
    let began = Instant::now();
    let config = load_config(args.config.as_deref())?;
    let campaigns = args
        .campaigns
        .clone()
        .unwrap_or_else(|| config.trees.campaigns.clone());
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

    let ch = &config.clickhouse;
    let sink = ClickHouseSink::connect(&ch.url, &ch.database, &ch.user, &ch.password)
        .await
        .with_context(|| format!("connecting to ClickHouse at {}", ch.url))?;
    let client = sink.client();
    let db = sink.database();

    let retailers = retailers_of(&active);
    let clause = retailer_clause(&retailers);
    let mut products = Vec::new();
    if !active.is_empty() {
        let sql = format!(
            "SELECT retailer_id, product_id, category, sum(quantity) AS quantity, \
             sum(revenue_cents) AS revenue_cents, sum(orders) AS orders \
             FROM {db}.sold_products_daily {clause} \
             GROUP BY retailer_id, product_id, category \
             ORDER BY retailer_id, product_id, category"
        );
        products = bind_retailers(client.query(&sql), &retailers)
            .fetch_all::<ProductSales>()
            .await
            .context("reading sold_products_daily")?;
    }
    let product_rows = products.len();
    let mut builder = Builder::new(active, version, products);

    let mut affinity_rows = 0u64;
    let mut shoppers_total = 0u64;
    if !builder.plans().is_empty() {
        let sql = format!(
            "SELECT retailer_id, product_a, product_b, orders_together \
             FROM {db}.product_affinities {clause} \
             ORDER BY retailer_id, product_a, product_b"
        );
        let mut cursor = bind_retailers(client.query(&sql), &retailers)
            .fetch::<Affinity>()
            .context("reading product_affinities")?;
        while let Some(a) = cursor.next().await.context("reading product_affinities")? {
            affinity_rows += 1;
            builder.add_affinity(&a);
        }
        let sql = format!("SELECT uniqExact(shopper_id) FROM {db}.shopper_purchases {clause}");
        shoppers_total = bind_retailers(client.query(&sql), &retailers)
            .fetch_one::<u64>()
            .await
            .context("counting shoppers")?;
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
        Output::Print(std::io::BufWriter::new(std::io::stdout()))
    } else {
        let deliveries = Arc::new(Deliveries::default());
        // Idempotent, and partitioned by key as Java clients and the traffic generator do.
        let producer: ThreadedProducer<DeliveryContext> =
            keyed_producer(client_config(&config.kafka.brokers))
                .set("linger.ms", "20")
                .set("compression.type", "lz4")
                .set("queue.buffering.max.messages", "200000")
                // A missing topic is an error, not an uncompacted topic created on the fly.
                .set("allow.auto.create.topics", "false")
                .create_with_context(DeliveryContext(deliveries.clone()))
                .context("creating the Kafka producer")?;
        let topic = config.kafka.trees_topic.clone();
        let metadata = producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(30))
            .with_context(|| format!("reading the metadata of {topic}"))?;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {}
            _ => bail!(
                "topic {topic} does not exist on {}: create it (compacted), e.g. scripts/stack up",
                config.kafka.brokers
            ),
        }
        Output::Kafka {
            producer,
            deliveries,
            topic,
        }
    };

    let mut shoppers = 0u64;
    let mut trees = 0u64;
    let mut shadowed = 0u64;
    let mut without_tree = 0u64;
    let mut limited = false;
    let mut counts: BTreeMap<usize, CampaignCounts> = BTreeMap::new();
    let work_began = Instant::now();
    if !builder.plans().is_empty() {
        let sql = format!(
            "SELECT retailer_id, shopper_id, product_id, quantity, orders \
             FROM {db}.shopper_purchases {clause} \
             ORDER BY shopper_id, retailer_id, product_id"
        );
        let mut cursor = bind_retailers(client.query(&sql), &retailers)
            .fetch::<Purchase>()
            .context("reading shopper_purchases")?;
        let mut group: Vec<Purchase> = Vec::new();
        loop {
            let row = cursor.next().await.context("reading shopper_purchases")?;
            let boundary = match (&row, group.first()) {
                (Some(r), Some(g)) => r.shopper_id != g.shopper_id,
                (None, Some(_)) => true,
                _ => false,
            };
            if boundary {
                if args.limit.is_some_and(|l| shoppers >= l) {
                    limited = true;
                    break;
                }
                let outcome = builder.build(&group[0].shopper_id, &group);
                group.clear();
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
                    let c = counts.entry(built.plan).or_default();
                    c.trees += 1;
                    c.loyal += u64::from(built.loyal);
                    *c.recommendation
                        .entry(built.recommendation.map_or("none", |r| r.as_str()))
                        .or_default() += 1;
                    if let Some(segment) = built.segment {
                        *c.segments.entry(segment).or_default() += 1;
                    }
                }
                if args.progress_every > 0 && shoppers.is_multiple_of(args.progress_every) {
                    let secs = work_began.elapsed().as_secs_f64().max(1e-9);
                    eprintln!(
                        "trees: {shoppers}/{shoppers_total} shoppers, {:.0}/s",
                        shoppers as f64 / secs
                    );
                }
            }
            match row {
                Some(r) => group.push(r),
                None => break,
            }
        }
    }

    let (delivered, failures, first_error) = match &mut output {
        Output::Print(w) => {
            w.flush()?;
            (0, 0, None)
        }
        Output::Kafka {
            producer,
            deliveries,
            ..
        } => {
            producer
                .flush(Duration::from_secs(120))
                .context("flushing the Kafka producer")?;
            (
                deliveries.delivered.load(Ordering::Relaxed),
                deliveries.failed.load(Ordering::Relaxed),
                deliveries.first_error.lock().expect("not poisoned").clone(),
            )
        }
    };
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
        "topic": if args.dry_run { None } else { Some(&config.kafka.trees_topic) },
        "campaigns_active": builder.plans().iter().map(|p| &p.campaign.id).collect::<Vec<_>>(),
        "campaigns_skipped": skipped.iter().map(|(id, why)| json!({"id": id, "reason": why})).collect::<Vec<_>>(),
        "shoppers": shoppers,
        "limited": limited,
        "trees": trees,
        "without_tree": without_tree,
        "shadowed": shadowed,
        "by_campaign": by_campaign,
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
            config.kafka.trees_topic,
            first_error.unwrap_or_else(|| "none reported (flush timed out?)".into())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const CAMPAIGN: &str = r#"
        [[campaign]]
        id = "autumn-pasta"
        retailer = "r1"
        start = "2026-09-01"
        end = "2026-11-30"
        category = "pasta"
        complement = "pasta-sauce"
        [campaign.discount]
        min_percent = 5
        max_percent = 20
        regular_orders = 5
        [campaign.tension_cart]
        round_cents = 500
        step_cents = 500
        announce_before_cents = 200
        reward_cents = 300
        [campaign.promotion]
        search_terms = ["pasta"]
        view_min_count = 2
        max_products = 3
        [campaign.gamified]
        min_orders = 5
        prize = "basket_back"
        win_one_in = 20
        max_prize_cents = 10000
    "#;

    fn sales(
        retailer: &str,
        product: &str,
        category: &str,
        q: i64,
        rev: i64,
        o: i64,
    ) -> ProductSales {
        ProductSales {
            retailer_id: retailer.into(),
            product_id: product.into(),
            category: category.into(),
            quantity: q,
            revenue_cents: rev,
            orders: o,
        }
    }

    fn bought(retailer: &str, shopper: &str, product: &str, q: i64, o: i64) -> Purchase {
        Purchase {
            retailer_id: retailer.into(),
            shopper_id: shopper.into(),
            product_id: product.into(),
            quantity: q,
            orders: o,
        }
    }

    fn pair(retailer: &str, a: &str, b: &str, n: i64) -> Affinity {
        Affinity {
            retailer_id: retailer.into(),
            product_a: a.into(),
            product_b: b.into(),
            orders_together: n,
        }
    }

    fn products() -> Vec<ProductSales> {
        vec![
            // Two days of pasta-1: summed (10 units, 1500 cents: 150 each, 8 orders).
            sales("r1", "r1-pasta-1", "pasta", 6, 900, 5),
            sales("r1", "r1-pasta-1", "pasta", 4, 600, 3),
            sales("r1", "r1-pasta-2", "pasta", 4, 800, 4),
            sales("r1", "r1-sauce-1", "pasta-sauce", 20, 5000, 12),
            sales("r1", "r1-sauce-2", "pasta-sauce", 5, 1500, 5),
            sales("r1", "r1-sauce-3", "pasta-sauce", 6, 1800, 6),
            sales("r1", "r1-milk-1", "milk", 30, 3000, 20),
            sales("r2", "r2-pasta-1", "pasta", 3, 300, 3),
            sales("r2", "r2-sauce-1", "pasta-sauce", 3, 600, 3),
        ]
    }

    fn affinities() -> Vec<Affinity> {
        vec![
            pair("r1", "r1-pasta-1", "r1-sauce-3", 4),
            pair("r1", "r1-pasta-1", "r1-sauce-2", 2),
            // Not a complement: dropped.
            pair("r1", "r1-milk-1", "r1-pasta-1", 9),
            pair("r1", "r1-pasta-2", "r1-sauce-2", 3),
        ]
    }

    fn purchases() -> Vec<Purchase> {
        vec![
            bought("r1", "alice", "r1-pasta-1", 6, 5),
            bought("r1", "alice", "r1-sauce-2", 3, 3),
            bought("r1", "alice", "r1-milk-1", 4, 2),
            bought("r1", "bob", "r1-pasta-1", 2, 2),
            bought("r1", "bob", "r1-pasta-2", 2, 2),
            bought("r1", "carol", "r1-milk-1", 1, 1),
            // Only at a retailer the campaign does not target.
            bought("r2", "dave", "r2-pasta-1", 1, 1),
        ]
    }

    fn builder(campaigns: &str, version: u64) -> Builder {
        let plans = parse_campaigns(campaigns).unwrap();
        let mut b = Builder::new(plans, version, products());
        for a in affinities() {
            b.add_affinity(&a);
        }
        b
    }

    /// Every shopper's outcome, in shopper order (rows grouped like the I/O part does).
    fn build_all(b: &Builder, rows: &[Purchase]) -> Vec<(String, ShopperOutcome)> {
        let mut by_shopper: BTreeMap<String, Vec<Purchase>> = BTreeMap::new();
        for r in rows {
            by_shopper
                .entry(r.shopper_id.clone())
                .or_default()
                .push(r.clone());
        }
        by_shopper
            .into_iter()
            .map(|(s, rows)| {
                let outcome = b.build(&s, &rows);
                if let Some(t) = &outcome.tree {
                    t.tree.check().unwrap();
                    assert_eq!(t.tree.shopper_id, s);
                }
                (s, outcome)
            })
            .collect()
    }

    fn tree_of(b: &Builder, shopper: &str) -> ExperienceTree {
        let rows: Vec<Purchase> = purchases()
            .into_iter()
            .filter(|r| r.shopper_id == shopper)
            .collect();
        let tree = b.build(shopper, &rows).tree.unwrap().tree;
        tree.check().unwrap();
        tree
    }

    fn params(tree: &ExperienceTree, node: &str) -> Value {
        let n = tree.nodes.iter().find(|n| n.id == node).unwrap();
        serde_json::to_value(&n.experience.as_ref().unwrap().params).unwrap()
    }

    fn ids(tree: &ExperienceTree) -> Vec<&str> {
        tree.nodes.iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn an_occasional_buyer_gets_the_sauce_bought_with_their_pasta_exactly() {
        // bob: pasta-1 and pasta-2, 2 orders each (tie -> smallest id: pasta-1 is the favourite).
        // pasta-1 goes with sauce-3 in 4 orders, sauce-2 in 2 -> sauce-3.
        // spend = 2 x 150 + 2 x 200 = 700 over 2 orders -> 350 -> 500 -> threshold 1000.
        // discount = 20 - (15 x 2 + 2) / 5 = 14. Not loyal (2 orders < 5): no game.
        let tree = tree_of(&builder(CAMPAIGN, 7), "bob");
        let basket = |prefix: &str| {
            vec![
                json!({"id": format!("{prefix}basket"),
                       "conditions": [{"basket_contains": {"product_id": null, "category": "pasta", "brand": null, "min_quantity": 1}}],
                       "experience": {"kind": "product_recommendation",
                                      "params": {"product_id": "r1-sauce-3", "reason": "bought_together"}},
                       "children": [format!("{prefix}basket/tension")]}),
                json!({"id": format!("{prefix}basket/tension"),
                       "conditions": [{"basket_value_at_least": {"cents": 800}}],
                       "experience": {"kind": "tension_cart",
                                      "params": {"reward_cents": 300, "threshold_cents": 1000}},
                       "children": []}),
            ]
        };
        let promotion = json!({"kind": "personalized_promotion",
            "params": {"category": "pasta", "discount_percent": 14,
                       "product_ids": ["r1-pasta-1", "r1-pasta-2"], "segment": "occasional"}});
        let mut nodes = vec![json!({"id": "start", "conditions": [], "experience": null,
            "children": ["basket", "searched:pasta", "viewed:pasta"]})];
        nodes.extend(basket(""));
        nodes.push(
            json!({"id": "searched:pasta", "conditions": [{"searched": {"term": "pasta"}}],
            "experience": promotion, "children": ["searched:pasta/basket"]}),
        );
        nodes.extend(basket("searched:pasta/"));
        nodes.push(json!({"id": "viewed:pasta",
            "conditions": [{"viewed": {"product_id": null, "category": "pasta", "brand": null, "min_count": 2}}],
            "experience": promotion, "children": ["viewed:pasta/basket"]}));
        nodes.extend(basket("viewed:pasta/"));
        let want = json!({"tree_id": "autumn-pasta", "version": 7, "retailer_id": "r1",
            "shopper_id": "bob", "root": "start", "nodes": nodes});
        assert_eq!(serde_json::to_value(&tree).unwrap(), want);
        // The JSON the topic carries reads back as the same tree.
        let again: ExperienceTree =
            serde_json::from_str(&serde_json::to_string(&tree).unwrap()).unwrap();
        assert_eq!(again, tree);
    }

    #[test]
    fn a_loyal_regular_gets_the_sauce_they_buy_the_minimum_discount_and_a_game() {
        // alice: 5 orders; spend = 6 x 150 + 3 x 300 + 4 x 100 = 2200 -> 440 -> 500 -> 1000.
        let tree = tree_of(&builder(CAMPAIGN, 7), "alice");
        assert_eq!(
            ids(&tree),
            [
                "start",
                "basket",
                "basket/tension",
                "basket/tension/paid",
                "basket/paid",
                "searched:pasta",
                "searched:pasta/basket",
                "searched:pasta/basket/tension",
                "searched:pasta/basket/tension/paid",
                "searched:pasta/basket/paid",
                "searched:pasta/paid",
                "viewed:pasta",
                "viewed:pasta/basket",
                "viewed:pasta/basket/tension",
                "viewed:pasta/basket/tension/paid",
                "viewed:pasta/basket/paid",
                "viewed:pasta/paid",
                "paid",
            ]
        );
        assert_eq!(
            tree.nodes[0].children,
            ["basket", "searched:pasta", "viewed:pasta", "paid"]
        );
        assert_eq!(tree.nodes[1].children, ["basket/tension", "basket/paid"]);
        assert_eq!(
            params(&tree, "basket"),
            json!({"product_id": "r1-sauce-2", "reason": "bought_before"})
        );
        assert_eq!(
            params(&tree, "basket/tension"),
            json!({"threshold_cents": 1000, "reward_cents": 300})
        );
        assert_eq!(
            params(&tree, "viewed:pasta"),
            json!({"category": "pasta", "discount_percent": 5,
                   "product_ids": ["r1-pasta-1", "r1-pasta-2"], "segment": "regular"})
        );
        let game = json!({"prize": "basket_back", "max_prize_cents": 500, "win_one_in": 20});
        for id in ["paid", "basket/paid", "searched:pasta/basket/tension/paid"] {
            assert_eq!(params(&tree, id), game);
            let node = tree.nodes.iter().find(|n| n.id == id).unwrap();
            assert_eq!(node.conditions, [Condition::OrderPaid {}]);
        }
    }

    #[test]
    fn a_new_shopper_gets_the_best_seller_and_the_maximum_discount() {
        let tree = tree_of(&builder(CAMPAIGN, 7), "carol");
        assert_eq!(
            params(&tree, "basket"),
            json!({"product_id": "r1-sauce-1", "reason": "best_seller"})
        );
        // spend 100 over 1 order -> 500 -> 1000.
        assert_eq!(
            params(&tree, "basket/tension"),
            json!({"threshold_cents": 1000, "reward_cents": 300})
        );
        assert_eq!(
            params(&tree, "searched:pasta"),
            json!({"category": "pasta", "discount_percent": 20,
                   "product_ids": ["r1-pasta-1", "r1-pasta-2"], "segment": "new"})
        );
    }

    #[test]
    fn only_targeted_shoppers_get_trees_and_the_summary_counts_are_right() {
        let b = builder(CAMPAIGN, 7);
        let all = build_all(&b, &purchases());
        let got: Vec<(&str, Option<&str>, &str, bool)> = all
            .iter()
            .map(|(s, o)| match &o.tree {
                Some(t) => (
                    s.as_str(),
                    t.recommendation.map(|r| r.as_str()),
                    t.segment.unwrap_or("-"),
                    t.loyal,
                ),
                None => (s.as_str(), None, "-", false),
            })
            .collect();
        assert_eq!(
            got,
            [
                ("alice", Some("bought_before"), "regular", true),
                ("bob", Some("bought_together"), "occasional", false),
                ("carol", Some("best_seller"), "new", false),
                ("dave", None, "-", false),
            ]
        );
        assert_eq!(all[3].1.candidates, 0);
    }

    #[test]
    fn the_same_inputs_in_any_order_give_the_same_trees() {
        let want = build_all(&builder(CAMPAIGN, 7), &purchases());
        let mut p = products();
        p.reverse();
        let mut b = Builder::new(parse_campaigns(CAMPAIGN).unwrap(), 7, p);
        let mut a = affinities();
        a.reverse();
        for x in &a {
            b.add_affinity(x);
        }
        let mut rows = purchases();
        rows.reverse();
        assert_eq!(build_all(&b, &rows), want);
    }

    #[test]
    fn the_first_campaign_wins_at_the_retailer_with_the_most_orders() {
        let campaigns = r#"
            [[campaign]]
            id = "r2-only"
            retailer = ["r2"]
            category = "pasta"
            complement = "pasta-sauce"
            experiences = ["product_recommendation"]
            [[campaign]]
            id = "everywhere"
            retailer = "all"
            category = "pasta"
            complement = "pasta-sauce"
            experiences = ["product_recommendation"]
        "#;
        let b = builder(campaigns, 1);
        let rows = vec![
            bought("r1", "erin", "r1-pasta-1", 9, 9),
            bought("r2", "erin", "r2-pasta-1", 1, 1),
            bought("r1", "fred", "r1-pasta-2", 1, 1),
            bought("r2", "fred", "r2-pasta-1", 3, 3),
            bought("r1", "gina", "r1-milk-1", 1, 1),
        ];
        let all = build_all(&b, &rows);
        let got: Vec<(&str, &str, &str, usize)> = all
            .iter()
            .map(|(s, o)| {
                let t = &o.tree.as_ref().unwrap().tree;
                (
                    s.as_str(),
                    t.tree_id.as_str(),
                    t.retailer_id.as_str(),
                    o.candidates,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("erin", "r2-only", "r2", 3),
                ("fred", "r2-only", "r2", 3),
                ("gina", "everywhere", "r1", 1),
            ]
        );
        // Only the recommendation is enabled: start -> basket, nothing else.
        let erin = &all[0].1.tree.as_ref().unwrap().tree;
        assert_eq!(ids(erin), ["start", "basket"]);
        assert_eq!(
            params(erin, "basket"),
            json!({"product_id": "r2-sauce-1", "reason": "best_seller"})
        );
    }

    #[test]
    fn audience_product_lists_and_disabled_kinds_shape_the_tree() {
        let campaigns = r#"
            [[campaign]]
            id = "new-only"
            retailer = "r1"
            category = "pasta"
            products = ["r1-pasta-2"]
            complement = "pasta-sauce"
            complement_products = ["r1-sauce-2", "r1-sauce-3"]
            experiences = ["product_recommendation", "personalized_promotion"]
            [campaign.promotion]
            audience = "new_to_category"
            search_terms = []
            view_min_count = 1
            max_products = 1
        "#;
        let b = builder(campaigns, 3);
        // alice bought pasta-1 only, which is not in the list: new to the promoted products.
        let alice = tree_of(&b, "alice");
        assert_eq!(
            ids(&alice),
            ["start", "basket", "viewed:pasta", "viewed:pasta/basket"]
        );
        assert_eq!(
            params(&alice, "viewed:pasta"),
            json!({"category": "pasta", "discount_percent": 20,
                   "product_ids": ["r1-pasta-2"], "segment": "new"})
        );
        // bob bought pasta-2 (listed): no promotion; his favourite listed product is pasta-2,
        // bought with sauce-2 (listed) in 3 orders.
        let bob = tree_of(&b, "bob");
        assert_eq!(ids(&bob), ["start", "basket"]);
        assert_eq!(
            params(&bob, "basket"),
            json!({"product_id": "r1-sauce-2", "reason": "bought_together"})
        );
        // carol: the best seller among the listed sauces (sauce-3: 6 orders).
        assert_eq!(
            params(&tree_of(&b, "carol"), "basket"),
            json!({"product_id": "r1-sauce-3", "reason": "best_seller"})
        );
    }

    #[test]
    fn without_a_known_complement_the_basket_node_stays_as_a_waypoint() {
        let campaigns = r#"
            [[campaign]]
            id = "cheese"
            retailer = "r1"
            category = "pasta"
            complement = "cheese"
            experiences = ["product_recommendation", "tension_cart"]
            [campaign.tension_cart]
            round_cents = 1000
            step_cents = 0
            announce_before_cents = 5000
        "#;
        let tree = tree_of(&builder(campaigns, 1), "alice");
        assert_eq!(ids(&tree), ["start", "basket", "basket/tension"]);
        assert_eq!(tree.nodes[1].experience, None);
        // 440 rounded up to 1000, no step; the announce point cannot go below 0.
        assert_eq!(
            tree.nodes[2].conditions,
            [Condition::BasketValueAtLeast { cents: 0 }]
        );
        assert_eq!(
            params(&tree, "basket/tension"),
            json!({"threshold_cents": 1000, "reward_cents": 300})
        );
        // Nothing enabled can be shown to anyone: no trees.
        let nothing = r#"
            [[campaign]]
            id = "cheese"
            retailer = "r1"
            category = "pasta"
            complement = "cheese"
            experiences = ["product_recommendation"]
        "#;
        let b = builder(nothing, 1);
        let out = b.build("alice", &purchases());
        assert_eq!(out.tree, None);
        assert_eq!(out.candidates, 1);
    }

    #[test]
    fn dates_and_activity() {
        let day = parse_instant("2026-11-30", false).unwrap();
        assert_eq!(
            day,
            Timestamp::parse_rfc3339("2026-11-30T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("2026-11-30", true).unwrap(),
            Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_instant("2026-11-30T10:00:00+02:00", true).unwrap(),
            Timestamp::parse_rfc3339("2026-11-30T08:00:00Z").unwrap()
        );
        assert!(parse_instant("2026-11-30T10:00:00", false).is_err());
        assert!(parse_instant("30/11/2026", false).is_err());
        let at = |s: &str| parse_instant(s, false).unwrap();
        let ids = |now: &str| {
            let (active, skipped) = select_active(parse_campaigns(CAMPAIGN).unwrap(), at(now));
            (
                active
                    .iter()
                    .map(|p| p.campaign.id.clone())
                    .collect::<Vec<_>>(),
                skipped,
            )
        };
        assert_eq!(
            ids("2026-08-31T23:59:59Z"),
            (
                vec![],
                vec![(
                    "autumn-pasta".into(),
                    "starts at 2026-09-01T00:00:00Z".into()
                )]
            )
        );
        assert_eq!(ids("2026-09-01").0, ["autumn-pasta"]);
        assert_eq!(ids("2026-11-30T23:59:59Z").0, ["autumn-pasta"]);
        assert_eq!(
            ids("2026-12-01").1,
            [(
                "autumn-pasta".into(),
                "ended at 2026-12-01T00:00:00Z".into()
            )]
        );
    }

    #[test]
    fn the_example_campaign_file_is_valid() {
        let plans = parse_campaigns(include_str!("../../examples/campaigns.toml")).unwrap();
        let got: Vec<_> = plans
            .iter()
            .map(|p| (p.campaign.id.as_str(), p.start, p.end, p.kinds.len()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "autumn-pasta",
                    Timestamp::parse_rfc3339("2026-09-01T00:00:00Z"),
                    Timestamp::parse_rfc3339("2026-12-01T00:00:00Z"),
                    4
                ),
                (
                    "coffee-break",
                    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z"),
                    None,
                    2
                ),
            ]
        );
        assert_eq!(plans[0].search_terms, ["pasta", "spaghetti"]);
        assert_eq!(plans[1].retailers, None);
    }

    #[test]
    fn bad_campaigns_are_refused_with_the_reason() {
        let err = |text: &str| format!("{:#}", parse_campaigns(text).unwrap_err());
        let base =
            "id = \"c\"\nretailer = \"r1\"\ncategory = \"pasta\"\ncomplement = \"pasta-sauce\"\n";
        assert!(err(&format!(
            "[[campaign]]\n{base}[campaign.discount]\nmin_percent = 30\nmax_percent = 20\n"
        ))
        .contains("0 <= min_percent <= max_percent <= 100"));
        assert!(err(&format!("[[campaign]]\n{base}[[campaign]]\n{base}")).contains("appears twice"));
        assert!(
            err("[[campaign]]\nid = \"c\"\nretailer = \"r1\"\ncategory = \"pasta\"\n")
                .contains("needs a complement")
        );
        assert!(err(&format!("[[campaign]]\n{base}colour = \"red\"\n")).contains("unknown field"));
        assert!(err(&format!(
            "[[campaign]]\n{base}start = \"2026-12-01\"\nend = \"2026-11-01\"\n"
        ))
        .contains("is not before end"));
        assert!(
            err(&format!("[[campaign]]\n{base}experiences = []\n")).contains("at least one kind")
        );
    }
}
