//! The campaign file (TOML, `[[campaign]]` tables, see `examples/campaigns.toml`): its types,
//! its parser and the checks that turn each campaign into a [`Plan`].
//!
//! A campaign is active when `start <= now < end` ([`select_active`]); `start` and `end` are RFC
//! 3339 instants or dates (a date's midnight UTC; an `end` date is active through that whole
//! day). Campaigns are listed in priority order: the builder gives a shopper the tree of the
//! first active campaign that targets them.

use std::collections::BTreeSet;

use anyhow::{bail, ensure, Context, Result};
use basketflow_vocab::time::MICROS_PER_DAY;
use basketflow_vocab::{ExperienceKind, FrequencyCap, Timestamp, BASIS_POINTS};
use serde::Deserialize;

/// The campaign file: a list of `[[campaign]]` tables.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignFile {
    /// The campaigns, in priority order.
    #[serde(default)]
    pub campaign: Vec<Campaign>,
}

/// One retailer id, `"all"`, or a list of retailer ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RetailerSpec {
    /// A retailer id, or `"all"`.
    One(String),
    /// Several retailer ids.
    Many(Vec<String>),
}

/// One campaign, as written in the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
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
    /// The share of the campaign's shoppers held out (0 to 1, at most 4 decimals; default 0):
    /// they walk their tree as usual, their decisions are recorded for analysts and never
    /// shown, so `campaign_uplift` can compare the groups.
    #[serde(default)]
    pub holdout_share: f64,
    /// How long after a shopper's first decision in the campaign their orders count for it in
    /// `campaign_uplift`, in hours (default 168: 7 days).
    #[serde(default = "default_attribution_hours")]
    pub attribution_hours: u32,
    /// Frequency caps (`[[campaign.cap]]`): every one holds for each shopper.
    #[serde(default)]
    pub cap: Vec<CapSettings>,
    /// The promotion budget per targeted retailer, in cents (absent: none): the shown
    /// decisions spend their `cost_cents`; once one does not fit, the campaign stops there.
    #[serde(default)]
    pub budget_cents: Option<u64>,
}

/// `[[campaign.cap]]`: at most so many decisions per session and/or per day, of one kind or of
/// every kind ([`basketflow_vocab::FrequencyCap`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapSettings {
    /// The kind counted (absent: every kind).
    #[serde(default)]
    pub kind: Option<ExperienceKind>,
    /// At most this many per session.
    #[serde(default)]
    pub per_session: Option<u32>,
    /// At most this many per day (UTC, the graph's logical time).
    #[serde(default)]
    pub per_day: Option<u32>,
}

fn default_attribution_hours() -> u32 {
    168
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
pub struct DiscountSettings {
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
pub struct TensionSettings {
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
pub enum Audience {
    /// Every active shopper (the discount is scaled down for regular buyers).
    #[default]
    All,
    /// Only shoppers who never bought the promoted products.
    NewToCategory,
}

/// `[campaign.promotion]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromotionSettings {
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
pub struct GamifiedSettings {
    /// Orders at the retailer from which a shopper is loyal.
    pub min_orders: i64,
    /// What can be won.
    pub prize: String,
    /// One chance in this many.
    pub win_one_in: i64,
    /// Upper bound of the prize, in cents.
    pub max_prize_cents: i64,
    /// The secret of the draw (at least 16 characters; absent: a public draw, which a forged
    /// payment could aim at). Keep a campaign file with a secret private; changing it changes
    /// which orders win on a replay.
    pub draw_secret: Option<String>,
}

impl Default for GamifiedSettings {
    fn default() -> Self {
        GamifiedSettings {
            min_orders: 5,
            prize: "basket_back".into(),
            win_one_in: 20,
            max_prize_cents: 10_000,
            draw_secret: None,
        }
    }
}

/// A campaign checked and ready to use.
#[derive(Clone, Debug)]
pub struct Plan {
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
    /// `holdout_share` in basis points ([`basketflow_vocab::held_out`]).
    pub holdout_basis_points: u16,
    /// The frequency caps, as the trees carry them.
    pub caps: Vec<FrequencyCap>,
    /// The budget per retailer, as the trees carry it.
    pub budget_cents: Option<u64>,
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

    /// True when the campaign enables `kind`.
    pub fn enabled(&self, kind: ExperienceKind) -> bool {
        self.kinds.contains(&kind)
    }
}

/// Parses `s` as an RFC 3339 instant or a `YYYY-MM-DD` date (its midnight UTC, or the next
/// midnight when `end_of_day`).
pub fn parse_instant(s: &str, end_of_day: bool) -> Result<Timestamp> {
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
pub fn parse_campaigns(text: &str) -> Result<Vec<Plan>> {
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
    ensure!(
        !kinds.contains(&ExperienceKind::GameWon),
        "game_won is not an experience to enable: the graph decides it for a gamified promotion's winners"
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
    ensure!(
        g.draw_secret
            .as_ref()
            .is_none_or(|s| s.chars().count() >= 16),
        "gamified.draw_secret needs at least 16 characters"
    );
    let share = c.holdout_share;
    ensure!(
        (0.0..=1.0).contains(&share),
        "holdout_share must be between 0 and 1, not {share}"
    );
    let scaled = share * f64::from(BASIS_POINTS);
    ensure!(
        (scaled - scaled.round()).abs() < 1e-6,
        "holdout_share {share} has more than 4 decimals (the draw is in basis points)"
    );
    // Within 0..=10,000 (checked above).
    let holdout_basis_points = scaled.round() as u16;
    ensure!(
        c.attribution_hours >= 1 && c.attribution_hours <= 24 * 366,
        "attribution_hours must be between 1 and {} (a year)",
        24 * 366
    );
    let caps: Vec<FrequencyCap> = c
        .cap
        .iter()
        .map(|cap| FrequencyCap {
            kind: cap.kind,
            per_session: cap.per_session,
            per_day: cap.per_day,
        })
        .collect();
    for (i, cap) in caps.iter().enumerate() {
        ensure!(
            cap.per_session.is_some() || cap.per_day.is_some(),
            "cap {} sets neither per_session nor per_day",
            i + 1
        );
        ensure!(
            cap.per_session != Some(0) && cap.per_day != Some(0),
            "cap {}: a cap of 0 would stop every decision (disable the kind in experiences \
             instead)",
            i + 1
        );
        if let Some(kind) = cap.kind {
            ensure!(
                kinds.contains(&kind),
                "cap {} counts {}, which experiences does not enable",
                i + 1,
                kind.as_str()
            );
        }
    }
    ensure!(
        c.budget_cents != Some(0),
        "budget_cents = 0 would stop every costly decision: leave the budget out, or disable \
         the kinds"
    );
    Ok(Plan {
        budget_cents: c.budget_cents,
        caps,
        holdout_basis_points,
        campaign: c,
        start,
        end,
        retailers,
        search_terms,
        kinds,
    })
}

/// The retailers `plans` target (`None`: all).
pub fn retailers_of(plans: &[Plan]) -> Option<BTreeSet<String>> {
    let mut all = BTreeSet::new();
    for p in plans {
        all.extend(p.retailers.clone()?);
    }
    Some(all)
}

/// The active plans at `now`, and the ids of the others with the reason.
pub fn select_active(plans: Vec<Plan>, now: Timestamp) -> (Vec<Plan>, Vec<(String, String)>) {
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

#[cfg(test)]
pub mod tests;
