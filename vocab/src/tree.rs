//! Experience trees: a shopper's precomputed journey, and the decisions it produces.
//!
//! A tree arrives as JSON on `experience-trees` (key = [`tree_key`]: `retailer_id`, the byte
//! `0x1F`, `shopper_id`; a null value removes that retailer's shopper's tree). Each [`Node`] lists [`Condition`]s over the shopper's hot data (basket,
//! searches and views of the session, the event itself) and cold data (what the shopper bought
//! before, from the graph's own purchase history), and may carry an [`Experience`] with
//! personalized parameters. The shopper starts at the root; after each of their events, the
//! first child of their current node whose conditions all hold becomes their node, and if that
//! node has an experience, a [`Decision`] is emitted.
//!
//! ```json
//! {"tree_id":"autumn-pasta","version":3,"retailer_id":"retailer-00","shopper_id":"cust-0000042",
//!  "root":"start","nodes":[
//!   {"id":"start","children":["pasta"]},
//!   {"id":"pasta","conditions":[{"basket_contains":{"category":"pasta"}}],
//!    "experience":{"kind":"product_recommendation","params":{"product_id":"r00-pasta-sauce-0003"}},
//!    "children":["threshold"]},
//!   {"id":"threshold","conditions":[{"basket_value_at_least":{"cents":4000}}],
//!    "experience":{"kind":"tension_cart","params":{"threshold_cents":5000,"reward_cents":500}}}]}
//! ```

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Separates retailer and shopper in the key of a tree message: ASCII's unit separator
/// (U+001F), a control character, which no identifier may contain (identifiers are printable
/// text), so the key splits in exactly one way.
pub const TREE_KEY_SEPARATOR: char = '\u{1f}';

/// The key of a tree's messages on `experience-trees`: `retailer_id`, U+001F, `shopper_id`.
///
/// Retailers are tenants and may reuse each other's shopper ids, so the compacted topic keys
/// a tree by both: compaction keeps the latest tree of each retailer's shopper, and a null
/// value (tombstone) with this key removes one retailer's tree and no other. Any producer
/// (ours in `basketflow-trees`, or a retailer's own tool) must use exactly these bytes, e.g.
/// `printf 'retailer-00\x1fcust-42'` as the key; the default partitioner then keeps all of a
/// key's messages in order on one partition.
///
/// ```
/// use basketflow_vocab::{split_tree_key, tree_key};
/// let key = tree_key("retailer-00", "cust-42");
/// assert_eq!(key, "retailer-00\u{1f}cust-42");
/// assert_eq!(split_tree_key(key.as_bytes()), Some(("retailer-00", "cust-42")));
/// assert_eq!(split_tree_key(b"cust-42"), None);
/// ```
pub fn tree_key(retailer_id: &str, shopper_id: &str) -> String {
    let mut key = String::with_capacity(retailer_id.len() + 1 + shopper_id.len());
    key.push_str(retailer_id);
    key.push(TREE_KEY_SEPARATOR);
    key.push_str(shopper_id);
    key
}

/// The `(retailer_id, shopper_id)` of a tree message's key ([`tree_key`]); `None` unless the
/// key is UTF-8 with exactly one separator and both parts non-empty.
pub fn split_tree_key(key: &[u8]) -> Option<(&str, &str)> {
    let key = std::str::from_utf8(key).ok()?;
    let (retailer_id, shopper_id) = key.split_once(TREE_KEY_SEPARATOR)?;
    (!retailer_id.is_empty() && !shopper_id.is_empty() && !shopper_id.contains(TREE_KEY_SEPARATOR))
        .then_some((retailer_id, shopper_id))
}

/// One shopper's experience tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExperienceTree {
    /// Identifies the tree (typically the campaign); stable across versions.
    pub tree_id: String,
    /// Increases each time the builder republishes the tree.
    pub version: u64,
    /// The retailer.
    pub retailer_id: String,
    /// The shopper this tree is for.
    pub shopper_id: String,
    /// Id of the root node.
    pub root: String,
    /// The nodes, in any order; children are referred to by id.
    pub nodes: Vec<Node>,
    /// The share of the campaign's shoppers held out, in basis points (0 to 10,000; absent:
    /// 0, nobody). The draw is [`held_out`] of `tree_id`, retailer and shopper: a held-out
    /// shopper walks the tree as usual and their decisions are recorded for analysts
    /// ([`Decision::held_out`]) but never published to storefronts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub holdout_basis_points: u16,
    /// Frequency caps of the campaign's decisions for this shopper (none: uncapped). A
    /// decision that a cap stops is recorded for analysts ([`Decision::capped`]) but never
    /// published, and does not count toward the caps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<FrequencyCap>,
    /// The campaign's promotion budget at this retailer, in cents (absent: none). Each
    /// decision that would be shown spends its experience's `cost_cents` param; once one does
    /// not fit, the campaign stops at this retailer ([`Decision::over_budget`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_cents: Option<u64>,
    /// The campaign's secret for its game's draw ([`wins_game`]; absent: a public draw). The
    /// trees topic is internal: decisions and pages never carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draw_secret: Option<String>,
}

/// The experience param a budgeted campaign's decision spends ([`ExperienceTree::budget_cents`]).
pub const COST_PARAM: &str = "cost_cents";

/// A frequency cap: at most so many decisions (of one kind, or of every kind) per session and
/// per day. The shopper's decisions that would be shown count, held-out shoppers' included
/// (so both groups of a holdout see the same caps); capped ones do not. The session is the
/// events' `session_id` (a change starts a new count); the day is the UTC day of the graph's
/// logical time (the broker's append time), so a replay counts the same.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FrequencyCap {
    /// The experience kind counted (absent: every kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ExperienceKind>,
    /// At most this many decisions per session (absent: no session cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_session: Option<u32>,
    /// At most this many decisions per day (absent: no daily cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
}

fn is_zero(x: &u16) -> bool {
    *x == 0
}

/// Basis points in a whole: a holdout share of 10,000 basis points holds out every shopper.
pub const BASIS_POINTS: u16 = 10_000;

/// The holdout draw: whether `campaign`'s shopper `shopper_id` at `retailer_id` is held out
/// when the campaign holds out `basis_points` of 10,000.
///
/// The draw is the first 8 bytes (big-endian) of SHA-256 over the three ids, each followed by
/// the byte `0x1F` (which no identifier contains), taken modulo 10,000: the shopper is held
/// out when it is below `basis_points`. It depends on nothing else, so it is the same on every
/// restart, tree version and cluster shape; raising the share only adds shoppers to the
/// held-out group (a shopper held out at 10% stays held out at 20%); and separate campaigns
/// draw independently. The modulo's bias is below 10^-15.
///
/// ```
/// use basketflow_vocab::held_out;
/// assert!(!held_out("autumn-pasta", "retailer-00", "cust-42", 0));
/// assert!(held_out("autumn-pasta", "retailer-00", "cust-42", 10_000));
/// assert_eq!(
///     held_out("autumn-pasta", "retailer-00", "cust-42", 1_000),
///     held_out("autumn-pasta", "retailer-00", "cust-42", 1_000)
/// );
/// ```
pub fn held_out(campaign: &str, retailer_id: &str, shopper_id: &str, basis_points: u16) -> bool {
    if basis_points == 0 {
        return false;
    }
    holdout_draw(campaign, retailer_id, shopper_id) < basis_points
}

/// The shopper's draw for a campaign, 0 to 9,999 ([`held_out`]).
pub fn holdout_draw(campaign: &str, retailer_id: &str, shopper_id: &str) -> u16 {
    // Below 10,000: fits.
    (draw(&[campaign, retailer_id, shopper_id]) % u64::from(BASIS_POINTS)) as u16
}

/// The first 8 bytes (big-endian) of SHA-256 over `parts`, each followed by the byte `0x1F`.
fn draw(parts: &[&str]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in parts {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// As [`draw`], keyed: the first 8 bytes (big-endian) of HMAC-SHA256 under `secret` over
/// `parts`, each followed by `0x1F`.
fn keyed_draw(secret: &[u8], parts: &[&str]) -> u64 {
    let mut message = Vec::new();
    for part in parts {
        message.extend_from_slice(part.as_bytes());
        message.push(0x1f);
    }
    let mac = crate::hmac::hmac_sha256(secret, &message);
    let mut first = [0u8; 8];
    first.copy_from_slice(&mac[..8]);
    u64::from_be_bytes(first)
}

/// The param of a [`ExperienceKind::GameWon`] decision naming the game decision that played.
pub const GAME_DECISION_PARAM: &str = "game_decision_id";

/// The gamified promotion's draw: whether `order_id`, paid by a shopper of `retailer_id` who
/// was shown `campaign`'s game, wins, with a chance of one in `win_one_in`.
///
/// The draw is seeded by the campaign: the first 8 bytes (big-endian) of HMAC-SHA256 under the
/// campaign's `secret` ([`ExperienceTree::draw_secret`]) over campaign, retailer and order, each
/// followed by `0x1F`, modulo `win_one_in`; the order wins when that is 0. Without a secret,
/// SHA-256 of the same bytes (as [`held_out`]): a public draw, which anyone can compute, so a
/// forged `order_paid` could aim at a winning order id. It reads the log and the tree only, so
/// the same orders win on every replay, restart and cluster shape, and each order is drawn
/// once per campaign. `win_one_in` 0 never wins.
///
/// ```
/// use basketflow_vocab::wins_game;
/// assert!(wins_game("pasta-and-sauce", "retailer-00", "o-1", 1, None));
/// assert!(!wins_game("pasta-and-sauce", "retailer-00", "o-1", 0, Some("s3cret")));
/// ```
pub fn wins_game(
    campaign: &str,
    retailer_id: &str,
    order_id: &str,
    win_one_in: u64,
    secret: Option<&str>,
) -> bool {
    let parts = [campaign, retailer_id, order_id];
    let value = match secret {
        Some(key) => keyed_draw(key.as_bytes(), &parts),
        None => draw(&parts),
    };
    win_one_in > 0 && value.is_multiple_of(win_one_in)
}

/// One node of a tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    /// Unique within the tree.
    pub id: String,
    /// All must hold for the shopper to move to this node (none: always).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// What to show when the shopper reaches this node.
    #[serde(default)]
    pub experience: Option<Experience>,
    /// Candidate next nodes, tried in order.
    #[serde(default)]
    pub children: Vec<String>,
}

/// What a product condition matches: a product, a category or a brand (exactly one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductMatch {
    /// A product id.
    #[serde(default)]
    pub product_id: Option<String>,
    /// A category.
    #[serde(default)]
    pub category: Option<String>,
    /// A brand.
    #[serde(default)]
    pub brand: Option<String>,
}

/// A condition over hot and cold data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The basket holds at least `min_quantity` units of matching products.
    BasketContains {
        /// Which products.
        #[serde(flatten)]
        matches: ProductMatch,
        /// Units needed (default 1).
        #[serde(default = "one")]
        min_quantity: u32,
    },
    /// The basket is worth at least `cents`.
    BasketValueAtLeast {
        /// Threshold in cents.
        cents: i64,
    },
    /// A search of the session contains `term` (case-insensitive).
    Searched {
        /// The word looked for.
        term: String,
    },
    /// Matching products (or pages of a category) were viewed at least `min_count` times in the
    /// session.
    Viewed {
        /// Which products.
        #[serde(flatten)]
        matches: ProductMatch,
        /// Views needed (default 1).
        #[serde(default = "one")]
        min_count: u32,
    },
    /// The shopper bought matching products in at least `min_orders` earlier, non-cancelled
    /// orders.
    BoughtBefore {
        /// Which products.
        #[serde(flatten)]
        matches: ProductMatch,
        /// Orders needed (default 1).
        #[serde(default = "one")]
        min_orders: u32,
    },
    /// The event is a paid order.
    OrderPaid {},
}

fn one() -> u32 {
    1
}

/// The four kinds of shopper experience.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperienceKind {
    /// Recommend a product.
    ProductRecommendation,
    /// A promotion personalized in products, generosity and threshold.
    PersonalizedPromotion,
    /// A game with a prize (win your basket back).
    GamifiedPromotion,
    /// A nudge to reach a basket threshold.
    TensionCart,
    /// The shopper won a gamified promotion's draw ([`wins_game`]): decided by the graph for
    /// the order that played, never by a tree node. Its params say which game
    /// ([`GAME_DECISION_PARAM`]), which order and the prize in cents.
    GameWon,
}

impl ExperienceKind {
    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperienceKind::ProductRecommendation => "product_recommendation",
            ExperienceKind::PersonalizedPromotion => "personalized_promotion",
            ExperienceKind::GamifiedPromotion => "gamified_promotion",
            ExperienceKind::TensionCart => "tension_cart",
            ExperienceKind::GameWon => "game_won",
        }
    }
}

/// An experience with its personalized parameters (free-form JSON object, as the builder
/// computed them: which product, what discount, what threshold...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Experience {
    /// The kind.
    pub kind: ExperienceKind,
    /// Its parameters, as a JSON object serialized to a string-keyed map.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, ParamValue>,
}

/// A parameter value: a string, an integer or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// An integer (cents, percents, counts).
    Int(i64),
    /// A string (ids, messages).
    Text(String),
    /// A list of strings (product ids).
    List(Vec<String>),
}

/// Which event made a decision fire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CausedBy {
    /// The event's id.
    pub event_id: String,
    /// Its partition of `shopper-events`.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When the shopper acted.
    pub occurred_at: Timestamp,
}

/// How decisions (and dead letters) reach `experience-decisions`: the guarantee storefronts
/// get (`[kafka] delivery`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Kafka transactions: a `read_committed` reader sees each decision once, never one a
    /// crash left half-written. Each decision waits for its transaction's commit.
    #[default]
    ExactlyOnce,
    /// An idempotent producer, no transactions: each decision is sent as soon as it is made.
    /// After a crash, decisions made since the last progress record are sent again, with the
    /// same `decision_id` (the storefront drops a `decision_id` it has already seen).
    AtLeastOnce,
}

/// A decision, as written to `experience-decisions` (key = `shopper_id`) and ClickHouse.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// Deterministic id: a digest of tree, version, node and causing event.
    pub decision_id: String,
    /// The retailer.
    pub retailer_id: String,
    /// The shopper.
    pub shopper_id: String,
    /// The session of the causing event, if any.
    pub session_id: Option<String>,
    /// What to show.
    pub experience: Experience,
    /// The tree.
    pub tree_id: String,
    /// Its version.
    pub tree_version: u64,
    /// The node reached.
    pub node_id: String,
    /// The conditions that held, in words.
    pub reasons: Vec<String>,
    /// The event that caused it.
    pub caused_by: CausedBy,
    /// The graph's logical time of the decision (broker milliseconds).
    pub time: u64,
    /// Wall-clock instant the decision was made (not part of its identity).
    pub decided_at: Timestamp,
    /// The shopper is in the campaign's holdout group ([`held_out`]): the decision is
    /// recorded for analysts (`experience_decisions.campaign_group = 'held_out'`) and never
    /// sent to `experience-decisions`, so the topic's records never carry this field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held_out: bool,
    /// A frequency cap of the tree stopped it ([`FrequencyCap`]): recorded for analysts
    /// (`experience_decisions.capped = 1`), never sent to `experience-decisions`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
    /// The campaign's budget at the retailer was spent: recorded for analysts
    /// (`experience_decisions.over_budget = 1`), never sent to `experience-decisions`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub over_budget: bool,
    /// The tree's [`ExperienceTree::budget_cents`] when the decision was made: what the
    /// budget operator checks it against, on the deciding worker. Not serialized (storefronts
    /// and analysts do not see it).
    #[serde(skip)]
    pub budget_cents: Option<u64>,
}

impl Decision {
    /// What the decision spends of its campaign's budget: its experience's `cost_cents`
    /// param (0 when absent or negative).
    pub fn cost_cents(&self) -> u64 {
        match self.experience.params.get(COST_PARAM) {
            Some(ParamValue::Int(c)) => u64::try_from(*c).unwrap_or(0),
            _ => 0,
        }
    }
}

impl ExperienceTree {
    /// Checks the tree: tree, retailer and shopper ids that are identifiers ([`crate::ids`]),
    /// unique node ids, a root that exists, children that exist, and
    /// each product match naming exactly one of product, category or brand.
    pub fn check(&self) -> Result<(), String> {
        for (name, id) in [
            ("tree_id", &self.tree_id),
            ("retailer_id", &self.retailer_id),
            ("shopper_id", &self.shopper_id),
        ] {
            if let Some(why) = crate::ids::id_problem(id) {
                return Err(format!("{name} {why}"));
            }
        }
        if self.holdout_basis_points > BASIS_POINTS {
            return Err(format!(
                "holdout_basis_points {} is above {BASIS_POINTS}",
                self.holdout_basis_points
            ));
        }
        for cap in &self.caps {
            if cap.per_session.is_none() && cap.per_day.is_none() {
                return Err("a cap must set per_session or per_day".into());
            }
            if cap.per_session == Some(0) || cap.per_day == Some(0) {
                return Err("a cap of 0 would stop every decision: remove the experience".into());
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if n.experience.as_ref().map(|e| e.kind) == Some(ExperienceKind::GameWon) {
                return Err(format!(
                    "node {:?}: game_won is decided by the graph for a game's winner, not by a node",
                    n.id
                ));
            }
            if !ids.insert(n.id.as_str()) {
                return Err(format!("node id {:?} appears twice", n.id));
            }
        }
        if !ids.contains(self.root.as_str()) {
            return Err(format!("root {:?} is not a node", self.root));
        }
        for n in &self.nodes {
            for c in &n.children {
                if !ids.contains(c.as_str()) {
                    return Err(format!("node {:?} has an unknown child {c:?}", n.id));
                }
            }
            for cond in &n.conditions {
                let m = match cond {
                    Condition::BasketContains { matches, .. }
                    | Condition::Viewed { matches, .. }
                    | Condition::BoughtBefore { matches, .. } => matches,
                    _ => continue,
                };
                let named = [&m.product_id, &m.category, &m.brand]
                    .iter()
                    .filter(|x| x.is_some())
                    .count();
                if named != 1 {
                    return Err(format!(
                        "node {:?}: a condition must name exactly one of product_id, category, brand",
                        n.id
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_checks() {
        let json = r#"{"tree_id":"autumn-pasta","version":3,"retailer_id":"retailer-00","shopper_id":"cust-0000042",
          "root":"start","nodes":[
           {"id":"start","children":["pasta"]},
           {"id":"pasta","conditions":[{"basket_contains":{"category":"pasta"}}],
            "experience":{"kind":"product_recommendation","params":{"product_id":"r00-pasta-sauce-0003"}},
            "children":["threshold"]},
           {"id":"threshold","conditions":[{"basket_value_at_least":{"cents":4000}}],
            "experience":{"kind":"tension_cart","params":{"threshold_cents":5000,"reward_cents":500}}}]}"#;
        let tree: ExperienceTree = serde_json::from_str(json).unwrap();
        tree.check().unwrap();
        assert_eq!(
            tree.nodes[1].conditions,
            vec![Condition::BasketContains {
                matches: ProductMatch {
                    product_id: None,
                    category: Some("pasta".into()),
                    brand: None
                },
                min_quantity: 1
            }]
        );
        assert_eq!(
            tree.nodes[2].experience.as_ref().unwrap().params["threshold_cents"],
            ParamValue::Int(5000)
        );
        let again: ExperienceTree =
            serde_json::from_str(&serde_json::to_string(&tree).unwrap()).unwrap();
        assert_eq!(again, tree);
    }

    #[test]
    fn check_refuses_broken_shapes() {
        let mut tree = ExperienceTree {
            tree_id: "t".into(),
            version: 1,
            retailer_id: "r".into(),
            shopper_id: "s".into(),
            root: "a".into(),
            nodes: vec![Node {
                id: "a".into(),
                conditions: vec![],
                experience: None,
                children: vec!["b".into()],
            }],
            holdout_basis_points: 0,
            caps: vec![],
            budget_cents: None,
            draw_secret: None,
        };
        assert_eq!(
            tree.check().unwrap_err(),
            "node \"a\" has an unknown child \"b\""
        );
        tree.nodes[0].children.clear();
        tree.root = "z".into();
        assert_eq!(tree.check().unwrap_err(), "root \"z\" is not a node");
        tree.root = "a".into();
        tree.holdout_basis_points = 10_001;
        assert_eq!(
            tree.check().unwrap_err(),
            "holdout_basis_points 10001 is above 10000"
        );
        tree.holdout_basis_points = 10_000;
        assert_eq!(tree.check(), Ok(()));
        tree.caps = vec![FrequencyCap {
            kind: None,
            per_session: None,
            per_day: None,
        }];
        assert_eq!(
            tree.check().unwrap_err(),
            "a cap must set per_session or per_day"
        );
        tree.caps[0].per_day = Some(0);
        assert_eq!(
            tree.check().unwrap_err(),
            "a cap of 0 would stop every decision: remove the experience"
        );
        tree.caps[0].per_day = Some(1);
        assert_eq!(tree.check(), Ok(()));
        let text = serde_json::to_string(&tree).unwrap();
        assert!(text.ends_with(r#""caps":[{"per_day":1}]}"#), "{text}");
        assert_eq!(serde_json::from_str::<ExperienceTree>(&text).unwrap(), tree);
    }

    #[test]
    fn the_holdout_share_travels_only_when_set() {
        let json = r#"{"tree_id":"t","version":1,"retailer_id":"r","shopper_id":"s","root":"a",
          "nodes":[{"id":"a"}]}"#;
        let mut tree: ExperienceTree = serde_json::from_str(json).unwrap();
        assert_eq!(tree.holdout_basis_points, 0);
        assert!(!serde_json::to_string(&tree).unwrap().contains("holdout"));
        tree.holdout_basis_points = 1_000;
        let text = serde_json::to_string(&tree).unwrap();
        assert!(text.ends_with(r#","holdout_basis_points":1000}"#), "{text}");
        assert_eq!(serde_json::from_str::<ExperienceTree>(&text).unwrap(), tree);
    }

    /// The draw's value for known inputs: pinned, so that no change of the digest, the byte
    /// layout or the modulo can move a shopper between groups unnoticed (the groups of every
    /// running campaign would change at the next restart).
    #[test]
    fn the_draw_is_pinned_and_monotone_in_the_share() {
        let draws: Vec<u16> = ["cust-0", "cust-1", "cust-2"]
            .iter()
            .map(|s| holdout_draw("autumn-pasta", "retailer-00", s))
            .collect();
        assert_eq!(draws, PINNED_DRAWS);
        for (i, s) in ["cust-0", "cust-1", "cust-2"].iter().enumerate() {
            assert!(!held_out("autumn-pasta", "retailer-00", s, draws[i]));
            assert!(held_out("autumn-pasta", "retailer-00", s, draws[i] + 1));
        }
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(holdout_draw("c", "ab", "x"), holdout_draw("c", "a", "bx"));
    }

    /// The game's draw, pinned: the digests modulo 3 of orders `o-1` to `o-8` of
    /// `pasta-and-sauce` at `retailer-00`, computed independently in Python
    /// (`int.from_bytes(hashlib.sha256(b"pasta-and-sauce\x1fretailer-00\x1fo-1\x1f").digest()[:8], "big") % 3`),
    /// are 2, 1, 0, 1, 0, 1, 1, 1: `o-3` and `o-5` win one in 3. A change of the digest would
    /// change which orders of a running campaign won at the next replay.
    /// The keyed draw's winners among `o-1` to `o-8`, one in 3 (Python's `hmac`).
    const KEYED_WINNERS: [usize; 1] = [1];

    #[test]
    fn the_game_draw_is_pinned_and_wins_about_one_in_n() {
        let winners = |secret: Option<&str>| -> Vec<usize> {
            (1..=8)
                .filter(|i| {
                    wins_game(
                        "pasta-and-sauce",
                        "retailer-00",
                        &format!("o-{i}"),
                        3,
                        secret,
                    )
                })
                .collect()
        };
        assert_eq!(winners(None), [3, 5]);
        // Keyed: `int.from_bytes(hmac.new(b"s3cret", b"pasta-and-sauce\x1fretailer-00\x1fo-1\x1f",
        // "sha256").digest()[:8], "big") % 3` in Python.
        assert_eq!(winners(Some("s3cret")), KEYED_WINNERS);
        assert!((1..=8).all(|i| wins_game("c", "r", &format!("o-{i}"), 1, None)));
        assert!(!(1..=8).any(|i| wins_game("c", "r", &format!("o-{i}"), 0, None)));
        // One in 20 over 100,000 orders, within 4 standard deviations.
        let n = 100_000u32;
        let won = (0..n)
            .filter(|i| {
                wins_game(
                    "pasta-and-sauce",
                    "retailer-00",
                    &format!("o-{i}"),
                    20,
                    None,
                )
            })
            .count() as f64;
        let (mean, sd) = (f64::from(n) / 20.0, (f64::from(n) * 0.05 * 0.95).sqrt());
        assert!((won - mean).abs() < 4.0 * sd, "{won} of {n}");
    }

    #[test]
    fn a_node_cannot_carry_game_won() {
        let json = r#"{"tree_id":"t","version":1,"retailer_id":"r","shopper_id":"s","root":"a",
          "nodes":[{"id":"a","experience":{"kind":"game_won","params":{}}}]}"#;
        let tree: ExperienceTree = serde_json::from_str(json).unwrap();
        assert!(tree.check().unwrap_err().contains("game_won"));
    }

    // Computed independently: `int.from_bytes(hashlib.sha256(b"autumn-pasta\x1fretailer-00\x1fcust-0\x1f").digest()[:8], "big") % 10000` in Python.
    const PINNED_DRAWS: [u16; 3] = [9407, 9235, 5937];

    /// Over 200,000 shoppers, each share holds out its share within 4 standard deviations, and
    /// two campaigns' groups are independent (the shoppers held out by both are the product
    /// of the shares, within 4 standard deviations).
    #[test]
    fn the_draw_holds_out_the_share_independently_per_campaign() {
        let n = 200_000u32;
        let shoppers: Vec<String> = (0..n).map(|i| format!("cust-{i:07}")).collect();
        for bp in [100u16, 1_000, 5_000] {
            let p = f64::from(bp) / 10_000.0;
            let held = shoppers
                .iter()
                .filter(|s| held_out("autumn-pasta", "retailer-00", s, bp))
                .count() as f64;
            let sd = (f64::from(n) * p * (1.0 - p)).sqrt();
            assert!(
                (held - f64::from(n) * p).abs() < 4.0 * sd,
                "{bp} bp: {held} of {n}"
            );
        }
        let both = shoppers
            .iter()
            .filter(|s| {
                held_out("autumn-pasta", "retailer-00", s, 1_000)
                    && held_out("coffee-break", "retailer-00", s, 1_000)
            })
            .count() as f64;
        let sd = (f64::from(n) * 0.01 * 0.99).sqrt();
        assert!(
            (both - f64::from(n) * 0.01).abs() < 4.0 * sd,
            "both: {both}"
        );
    }
}
