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
}

impl ExperienceKind {
    /// The kind's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperienceKind::ProductRecommendation => "product_recommendation",
            ExperienceKind::PersonalizedPromotion => "personalized_promotion",
            ExperienceKind::GamifiedPromotion => "gamified_promotion",
            ExperienceKind::TensionCart => "tension_cart",
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
        let mut ids = std::collections::BTreeSet::new();
        for n in &self.nodes {
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
        };
        assert_eq!(
            tree.check().unwrap_err(),
            "node \"a\" has an unknown child \"b\""
        );
        tree.nodes[0].children.clear();
        tree.root = "z".into();
        assert_eq!(tree.check().unwrap_err(), "root \"z\" is not a node");
    }
}
