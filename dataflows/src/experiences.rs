//! Experience trees: each shopper's events move them along their tree; nodes with an
//! experience emit decisions.
//!
//! # State
//! Per `(retailer_id, shopper_id)`, a [`Shopper`] holds what the conditions read:
//! - the basket as the shopper's events built it, in arrival order: adds minus removes since
//!   the last paid order, lines at zero dropped;
//! - the current session's searches and views (reset when `session_id` changes);
//! - the purchase history: per product, category and brand, the number of paid orders that
//!   contained it; a cancellation (before or after the payment, of one of the shopper's last
//!   64 orders) takes the order out;
//! - the last 256 `event_id`s, so a duplicate never moves the shopper twice;
//! - the tree and the shopper's node in it.
//!
//! State is kept for every shopper seen (a tree may arrive after their first events) and is
//! bounded per shopper by the distinct products they bought, never by the number of events.
//! A shopper without an event for their retailer's retention period loses all but their tree;
//! an erased shopper loses everything, and their id stays erased ([`crate::privacy`]).
//!
//! # Order and determinism
//! Events and trees are routed by `shopper_id`. The operator acts only on *complete* times
//! (both input frontiers have passed them), in time order; within a time, tree updates first
//! (a tree published at broker time `t` governs the shopper's events from `t` on), then events
//! in arrival order. All of a shopper's events come from one partition and one reading worker,
//! and timely's channels are FIFO, so the order is the partition's offset order whatever the
//! cluster shape: the same input gives the same decisions on 1 worker or many processes.
//!
//! # Moving along the tree
//! After an event updates the state, the children of the shopper's node are tried in order;
//! the first whose conditions all hold becomes the node (one step per event). If it carries an
//! experience, a [`Decision`] is emitted, with the conditions that held as readable reasons.
//! The journey starts again at the root when a new session starts and after a paid order (once
//! the order's own step is taken), so a shopper meets their tree on every visit.
//! `decision_id` is a digest of tree, version, node and event: a replay yields the same ids.
//!
//! # Tree changes
//! A new version of the same `tree_id` keeps the shopper on the node of the same id if it still
//! exists, otherwise puts them back at the root; a different `tree_id` starts at its root; a
//! null tree message removes the shopper's tree (no more decisions until a new one comes).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use basketflow_ingest::kafka_source::{Millis, SourceMessage};
use basketflow_vocab::{
    CausedBy, Condition, Decision, Event, EventBody, ExperienceTree, OrderStatus, ProductMatch,
    Timestamp,
};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::{Concat, Map};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

use crate::privacy::{Erasure, Retention};
use crate::wire::WireEvent;

/// How many recent event ids a shopper's state remembers for de-duplication.
pub const RECENT_EVENT_IDS: usize = 256;

/// How many recent orders a shopper's state can still take back on a cancellation.
pub const RECENT_ORDERS: usize = 64;

/// An event with where it was read, as the tree operator needs it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionedEvent {
    /// The event.
    pub event: WireEvent,
    /// Its partition of `shopper-events`.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// A basket line as the tree sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Line {
    units: i64,
    category: String,
    brand: Option<String>,
    unit_price_cents: i64,
}

/// Lines of a paid order, for the purchase history: (product, category, brand).
type OrderItems = Vec<(String, String, Option<String>)>;

/// What the conditions of one shopper's tree read, and where the shopper is in it.
#[derive(Debug, Default)]
pub struct Shopper {
    basket: BTreeMap<String, Line>,
    session: Option<String>,
    searches: Vec<String>,
    product_views: BTreeMap<String, u32>,
    category_views: BTreeMap<String, u32>,
    product_orders: BTreeMap<String, u32>,
    category_orders: BTreeMap<String, u32>,
    brand_orders: BTreeMap<String, u32>,
    orders: BTreeMap<String, OrderItems>,
    order_ids: VecDeque<String>,
    cancelled: VecDeque<String>,
    recent: VecDeque<String>,
    tree: Option<Arc<ExperienceTree>>,
    node: String,
}

fn bump(map: &mut BTreeMap<String, u32>, key: &str, by: i32) {
    let n = map.entry(key.to_string()).or_default();
    *n = n.saturating_add_signed(by);
    if *n == 0 {
        map.remove(key);
    }
}

impl Shopper {
    /// Installs `tree` (or removes the tree when `None`), keeping the shopper's node when the
    /// new version of the same tree still has it.
    pub fn set_tree(&mut self, tree: Option<Arc<ExperienceTree>>) {
        match &tree {
            Some(new) => {
                let keep = self.tree.as_ref().is_some_and(|old| {
                    old.tree_id == new.tree_id && new.nodes.iter().any(|n| n.id == self.node)
                });
                if !keep {
                    self.node = new.root.clone();
                }
            }
            None => self.node.clear(),
        }
        self.tree = tree;
    }

    /// Drops everything the shopper's events built (basket, session, purchase history,
    /// recent ids), keeping the tree and starting again at its root (retention).
    pub fn forget_all_but_the_tree(&mut self) {
        let tree = self.tree.take();
        *self = Shopper::default();
        self.set_tree(tree);
    }

    /// The shopper's current node id (empty without a tree).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Applies one event to the state. Returns false for a duplicate (already applied).
    pub fn apply(&mut self, event: &Event) -> bool {
        if self.recent.iter().any(|id| *id == event.event_id) {
            return false;
        }
        if self.recent.len() == RECENT_EVENT_IDS {
            self.recent.pop_front();
        }
        self.recent.push_back(event.event_id.clone());
        if event.session_id != self.session {
            self.session = event.session_id.clone();
            self.searches.clear();
            self.product_views.clear();
            self.category_views.clear();
            // A new visit: the journey starts again at the root.
            if let Some(tree) = &self.tree {
                self.node.clone_from(&tree.root);
            }
        }
        match &event.body {
            EventBody::PageViewed {
                product_id,
                category,
                ..
            } => {
                if let Some(p) = product_id {
                    bump(&mut self.product_views, p, 1);
                }
                if let Some(c) = category {
                    bump(&mut self.category_views, c, 1);
                }
            }
            EventBody::SearchPerformed { query, .. } => {
                if self.searches.len() == 32 {
                    self.searches.remove(0);
                }
                self.searches.push(query.to_lowercase());
            }
            EventBody::ProductAdded(c) | EventBody::ProductRemoved(c) => {
                let sign = if matches!(event.body, EventBody::ProductAdded(_)) {
                    1
                } else {
                    -1
                };
                let line = self.basket.entry(c.product.product_id.clone()).or_default();
                line.units += sign * i64::from(c.quantity);
                line.category.clone_from(&c.product.category);
                line.brand.clone_from(&c.product.brand);
                line.unit_price_cents = c.product.unit_price_cents;
                if line.units <= 0 {
                    self.basket.remove(&c.product.product_id);
                }
            }
            EventBody::OrderPaid {
                order_id, lines, ..
            } => {
                self.basket.clear();
                if !self.orders.contains_key(order_id) && !self.cancelled.contains(order_id) {
                    let items: OrderItems = lines
                        .iter()
                        .map(|l| (l.product_id.clone(), l.category.clone(), l.brand.clone()))
                        .collect();
                    self.count_order(&items, 1);
                    self.orders.insert(order_id.clone(), items);
                    // Remember the items of the last orders only, for a later cancellation.
                    self.order_ids.push_back(order_id.clone());
                    if self.order_ids.len() > RECENT_ORDERS {
                        if let Some(old) = self.order_ids.pop_front() {
                            self.orders.remove(&old);
                        }
                    }
                }
            }
            EventBody::OrderStatusChanged {
                order_id,
                status: OrderStatus::Cancelled,
            } => {
                if let Some(items) = self.orders.remove(order_id) {
                    self.count_order(&items, -1);
                }
                if self.cancelled.len() == 64 {
                    self.cancelled.pop_front();
                }
                self.cancelled.push_back(order_id.clone());
            }
            EventBody::OrderStatusChanged { .. } | EventBody::LinkClicked { .. } => {}
        }
        true
    }

    /// Counts an order once per distinct product, category and brand.
    fn count_order(&mut self, items: &OrderItems, by: i32) {
        let mut products: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
        let mut categories: Vec<&str> = items.iter().map(|i| i.1.as_str()).collect();
        let mut brands: Vec<&str> = items.iter().filter_map(|i| i.2.as_deref()).collect();
        for list in [&mut products, &mut categories, &mut brands] {
            list.sort_unstable();
            list.dedup();
        }
        for p in products {
            bump(&mut self.product_orders, p, by);
        }
        for c in categories {
            bump(&mut self.category_orders, c, by);
        }
        for b in brands {
            bump(&mut self.brand_orders, b, by);
        }
    }

    fn basket_units(&self, m: &ProductMatch) -> i64 {
        self.basket
            .iter()
            .filter(|(p, l)| {
                m.product_id.as_deref() == Some(p.as_str())
                    || m.category.as_deref() == Some(l.category.as_str())
                    || (m.brand.is_some() && m.brand == l.brand)
            })
            .map(|(_, l)| l.units)
            .sum()
    }

    fn basket_value(&self) -> i64 {
        self.basket
            .values()
            .map(|l| l.units.saturating_mul(l.unit_price_cents))
            .sum()
    }

    /// Whether `condition` holds after `event`; if so, why, in words.
    pub fn holds(&self, condition: &Condition, event: &Event) -> Option<String> {
        fn what(m: &ProductMatch) -> String {
            match (&m.product_id, &m.category, &m.brand) {
                (Some(p), _, _) => format!("product {p}"),
                (_, Some(c), _) => format!("category {c}"),
                (_, _, Some(b)) => format!("brand {b}"),
                _ => "nothing".into(),
            }
        }
        match condition {
            Condition::BasketContains {
                matches,
                min_quantity,
            } => {
                let units = self.basket_units(matches);
                (units >= i64::from(*min_quantity)).then(|| {
                    format!(
                        "basket contains {}: {units} units (>= {min_quantity})",
                        what(matches)
                    )
                })
            }
            Condition::BasketValueAtLeast { cents } => {
                let value = self.basket_value();
                (value >= *cents).then(|| format!("basket value {value} cents (>= {cents})"))
            }
            Condition::Searched { term } => {
                let term_lc = term.to_lowercase();
                self.searches
                    .iter()
                    .find(|q| q.contains(&term_lc))
                    .map(|q| format!("searched {q:?} (contains {term:?})"))
            }
            Condition::Viewed { matches, min_count } => {
                let views = match (&matches.product_id, &matches.category) {
                    (Some(p), _) => self.product_views.get(p).copied().unwrap_or(0),
                    (_, Some(c)) => self.category_views.get(c).copied().unwrap_or(0),
                    _ => 0,
                };
                (views >= *min_count).then(|| {
                    format!(
                        "viewed {} {views} times this session (>= {min_count})",
                        what(matches)
                    )
                })
            }
            Condition::BoughtBefore {
                matches,
                min_orders,
            } => {
                let orders = match (&matches.product_id, &matches.category, &matches.brand) {
                    (Some(p), _, _) => self.product_orders.get(p),
                    (_, Some(c), _) => self.category_orders.get(c),
                    (_, _, Some(b)) => self.brand_orders.get(b),
                    _ => None,
                }
                .copied()
                .unwrap_or(0);
                (orders >= *min_orders).then(|| {
                    format!(
                        "bought {} in {orders} orders (>= {min_orders})",
                        what(matches)
                    )
                })
            }
            Condition::OrderPaid {} => match &event.body {
                EventBody::OrderPaid { order_id, .. } => Some(format!("paid order {order_id}")),
                _ => None,
            },
        }
    }

    /// Tries the children of the current node after `event`; moves to the first whose
    /// conditions hold. Returns the decision if that node carries an experience.
    pub fn step(&mut self, event: &Event, position: (i32, i64), time: Millis) -> Option<Decision> {
        let decision = self.advance(event, position, time);
        // A paid order ends the journey: the next one starts at the root.
        if let (EventBody::OrderPaid { .. }, Some(tree)) = (&event.body, &self.tree) {
            self.node.clone_from(&tree.root);
        }
        decision
    }

    fn advance(&mut self, event: &Event, position: (i32, i64), time: Millis) -> Option<Decision> {
        let tree = self.tree.clone()?;
        let here = tree.nodes.iter().find(|n| n.id == self.node)?;
        for child_id in &here.children {
            let Some(child) = tree.nodes.iter().find(|n| &n.id == child_id) else {
                continue;
            };
            let reasons: Option<Vec<String>> = child
                .conditions
                .iter()
                .map(|c| self.holds(c, event))
                .collect();
            let Some(reasons) = reasons else { continue };
            self.node.clone_from(&child.id);
            let experience = child.experience.clone()?;
            return Some(Decision {
                decision_id: decision_id(&tree.tree_id, tree.version, &child.id, &event.event_id),
                retailer_id: event.retailer_id.clone(),
                shopper_id: event.shopper_id.clone(),
                session_id: event.session_id.clone(),
                experience,
                tree_id: tree.tree_id.clone(),
                tree_version: tree.version,
                node_id: child.id.clone(),
                reasons,
                caused_by: CausedBy {
                    event_id: event.event_id.clone(),
                    partition: position.0,
                    offset: position.1,
                    occurred_at: event.occurred_at,
                },
                time,
                decided_at: Timestamp::now(),
            });
        }
        None
    }
}

/// A deterministic decision id: 128-bit FNV-1a over tree, version, node and event, in hex.
pub fn decision_id(tree_id: &str, version: u64, node_id: &str, event_id: &str) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    let prime: u128 = 0x0000000001000000000000000000013b;
    for part in [
        tree_id.as_bytes(),
        &version.to_be_bytes(),
        node_id.as_bytes(),
        event_id.as_bytes(),
    ] {
        for &b in part.iter().chain([0xffu8].iter()) {
            h ^= u128::from(b);
            h = h.wrapping_mul(prime);
        }
    }
    format!("{h:032x}")
}

/// Worker routing for a shopper id (both inputs use it, so a shopper lives on one worker).
fn route(shopper_id: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    shopper_id.hash(&mut h);
    h.finish()
}

/// Counters of the tree operator.
#[derive(Debug, Default)]
pub struct TreeStats {
    /// Tree messages that did not parse or check (ignored).
    pub bad_trees: std::sync::atomic::AtomicU64,
    /// Decisions emitted.
    pub decisions: std::sync::atomic::AtomicU64,
}

/// What arrived at one time: tree messages, erasures and events, with a capability.
struct AtTime {
    cap: Capability<Millis>,
    trees: Vec<SourceMessage>,
    erasures: Vec<Erasure>,
    events: Vec<PositionedEvent>,
}

/// Inputs waiting for their time to complete.
type Stash = BTreeMap<Millis, AtTime>;

/// The stash entry for the time of an input batch, holding a capability for that time.
fn stash_at<'a>(
    stash: &'a mut Stash,
    cap: &timely::dataflow::operators::InputCapability<Millis>,
) -> &'a mut AtTime {
    let t = *cap.least().expect("an input batch has a time");
    stash.entry(t).or_insert_with(|| AtTime {
        cap: cap
            .retain_least(0)
            .expect("an input batch has a capability"),
        trees: Vec::new(),
        erasures: Vec::new(),
        events: Vec::new(),
    })
}

/// The tree operator's second input: tree messages and erasures, both routed by shopper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A message of `experience-trees`.
    Tree(SourceMessage),
    /// An erasure request.
    Erase(Erasure),
}

impl Control {
    fn shopper_id(&self) -> &[u8] {
        match self {
            Control::Tree(m) => m.key.as_deref().unwrap_or_default(),
            Control::Erase(e) => e.request.shopper_id.as_bytes(),
        }
    }
}

/// Per-shopper bookkeeping of the tree operator's retention: when the shopper's last event
/// was, and whether a check is scheduled.
#[derive(Debug, Default)]
struct Seen {
    last: Millis,
    scheduled: bool,
}

/// The tree operator: shoppers' events, tree messages and erasures in, decisions out (at the
/// time of the event that caused them).
///
/// Within a complete time: erasures first (the shopper's state is dropped and the id stays
/// erased: later trees and events of it are ignored, see [`crate::privacy`]), then trees,
/// then retention (a shopper without an event for their retailer's period loses their state
/// but keeps their tree), then events.
pub fn decide<'scope>(
    events: Stream<'scope, Millis, Vec<PositionedEvent>>,
    trees: Stream<'scope, Millis, Vec<SourceMessage>>,
    erasures: Stream<'scope, Millis, Vec<Erasure>>,
    retention: Retention,
    stats: Arc<TreeStats>,
) -> Stream<'scope, Millis, Vec<Decision>> {
    let controls = trees
        .map(Control::Tree)
        .concat(erasures.map(Control::Erase));
    let mut stash: Stash = BTreeMap::new();
    let mut shoppers: HashMap<(String, String), Shopper> = HashMap::new();
    let mut erased: HashSet<(String, String)> = HashSet::new();
    let mut seen: HashMap<(String, String), Seen> = HashMap::new();
    let mut checks: BTreeMap<Millis, Vec<(String, String)>> = BTreeMap::new();
    events.binary_frontier(
        controls,
        Exchange::new(|e: &PositionedEvent| route(e.event.0.shopper_id.as_bytes())),
        Exchange::new(|c: &Control| route(c.shopper_id())),
        "ExperienceTrees",
        move |_cap, _info| {
            move |(events_in, events_frontier), (controls_in, controls_frontier), output| {
                events_in.for_each(|cap, data| {
                    stash_at(&mut stash, &cap).events.append(data);
                });
                controls_in.for_each(|cap, data| {
                    let at = stash_at(&mut stash, &cap);
                    for c in data.drain(..) {
                        match c {
                            Control::Tree(m) => at.trees.push(m),
                            Control::Erase(e) => at.erasures.push(e),
                        }
                    }
                });
                while let Some((&t, _)) = stash.first_key_value() {
                    if events_frontier.less_equal(&t) || controls_frontier.less_equal(&t) {
                        break;
                    }
                    let at = stash.remove(&t).expect("first key exists");
                    for e in at.erasures {
                        let key = e.shopper();
                        shoppers.remove(&key);
                        seen.remove(&key);
                        erased.insert(key);
                    }
                    for m in at.trees {
                        apply_tree(&mut shoppers, &erased, &m, &stats);
                    }
                    expire(&mut checks, &mut seen, &mut shoppers, &retention, t);
                    let mut session = output.session(&at.cap);
                    for pe in at.events {
                        let e = &pe.event.0;
                        let key = (e.retailer_id.clone(), e.shopper_id.clone());
                        if erased.contains(&key) {
                            continue;
                        }
                        let s = seen.entry(key.clone()).or_default();
                        s.last = t;
                        if !s.scheduled {
                            s.scheduled = true;
                            checks
                                .entry(t.saturating_add(retention.period_ms(&key.0)))
                                .or_default()
                                .push(key.clone());
                        }
                        let shopper = shoppers.entry(key).or_default();
                        if shopper.apply(e) {
                            if let Some(d) = shopper.step(e, (pe.partition, pe.offset), t) {
                                stats
                                    .decisions
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                session.give(d);
                            }
                        }
                    }
                }
            }
        },
    )
}

/// Retention of the tree state at time `t`: each shopper whose check is due and who has had no
/// event for their retailer's period loses all but their tree (and, without a tree, their
/// entry); a shopper seen since is checked again a period after their last event.
fn expire(
    checks: &mut BTreeMap<Millis, Vec<(String, String)>>,
    seen: &mut HashMap<(String, String), Seen>,
    shoppers: &mut HashMap<(String, String), Shopper>,
    retention: &Retention,
    t: Millis,
) {
    while let Some(entry) = checks.first_entry() {
        if *entry.key() > t {
            break;
        }
        for key in entry.remove() {
            let Some(s) = seen.get_mut(&key) else {
                continue;
            };
            let due = s.last.saturating_add(retention.period_ms(&key.0));
            if due > t {
                checks.entry(due).or_default().push(key);
                continue;
            }
            seen.remove(&key);
            if let Some(shopper) = shoppers.get_mut(&key) {
                shopper.forget_all_but_the_tree();
                if shopper.tree.is_none() {
                    shoppers.remove(&key);
                }
            }
        }
    }
}

fn apply_tree(
    shoppers: &mut HashMap<(String, String), Shopper>,
    erased: &HashSet<(String, String)>,
    m: &SourceMessage,
    stats: &TreeStats,
) {
    let shopper_id = String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned();
    if m.payload.is_empty() {
        // A null value: the shopper no longer has a tree, at any retailer.
        for ((_, s), state) in shoppers.iter_mut() {
            if *s == shopper_id {
                state.set_tree(None);
            }
        }
        return;
    }
    let tree: ExperienceTree = match serde_json::from_slice(&m.payload) {
        Ok(tree) => tree,
        Err(e) => {
            stats
                .bad_trees
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::warn!(partition = m.partition, offset = m.offset; "experience trees: not a tree, skipped: {e}");
            return;
        }
    };
    if let Err(e) = tree.check().and_then(|()| {
        (tree.shopper_id == shopper_id)
            .then_some(())
            .ok_or_else(|| {
                format!(
                    "key {shopper_id:?} is not the tree's shopper {:?}",
                    tree.shopper_id
                )
            })
    }) {
        stats
            .bad_trees
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::warn!(partition = m.partition, offset = m.offset; "experience trees: invalid tree, skipped: {e}");
        return;
    }
    let key = (tree.retailer_id.clone(), tree.shopper_id.clone());
    if erased.contains(&key) {
        return;
    }
    shoppers
        .entry(key)
        .or_default()
        .set_tree(Some(Arc::new(tree)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use basketflow_vocab::{
        BasketChange, Experience, ExperienceKind, Node, OrderLine, ParamValue, Product,
    };
    use timely::dataflow::operators::capture::{Capture, Event as CaptureEvent};
    use timely::dataflow::operators::Input;

    fn tree(version: u64) -> ExperienceTree {
        let experience = |kind, k: &str, v: ParamValue| Experience {
            kind,
            params: [(k.to_string(), v)].into_iter().collect(),
        };
        ExperienceTree {
            tree_id: "autumn-pasta".into(),
            version,
            retailer_id: "r".into(),
            shopper_id: "s".into(),
            root: "start".into(),
            nodes: vec![
                Node {
                    id: "start".into(),
                    conditions: vec![],
                    experience: None,
                    children: vec!["pasta".into(), "loyal".into()],
                },
                Node {
                    id: "pasta".into(),
                    conditions: vec![Condition::BasketContains {
                        matches: ProductMatch {
                            product_id: None,
                            category: Some("pasta".into()),
                            brand: None,
                        },
                        min_quantity: 1,
                    }],
                    experience: Some(experience(
                        ExperienceKind::ProductRecommendation,
                        "product_id",
                        ParamValue::Text("sauce-1".into()),
                    )),
                    children: vec!["threshold".into()],
                },
                Node {
                    id: "threshold".into(),
                    conditions: vec![Condition::BasketValueAtLeast { cents: 1000 }],
                    experience: Some(experience(
                        ExperienceKind::TensionCart,
                        "threshold_cents",
                        ParamValue::Int(1500),
                    )),
                    children: vec![],
                },
                Node {
                    id: "loyal".into(),
                    conditions: vec![
                        Condition::OrderPaid {},
                        Condition::BoughtBefore {
                            matches: ProductMatch {
                                product_id: None,
                                category: None,
                                brand: Some("acme".into()),
                            },
                            min_orders: 2,
                        },
                    ],
                    experience: Some(experience(
                        ExperienceKind::GamifiedPromotion,
                        "prize",
                        ParamValue::Text("basket".into()),
                    )),
                    children: vec![],
                },
            ],
        }
    }

    fn event(id: &str, body: EventBody) -> Event {
        Event {
            event_id: id.into(),
            retailer_id: "r".into(),
            shopper_id: "s".into(),
            session_id: Some("x".into()),
            occurred_at: Timestamp(1_000_000),
            body,
        }
    }

    fn add(id: &str, product: &str, category: &str, cents: i64) -> Event {
        event(
            id,
            EventBody::ProductAdded(BasketChange {
                product: Product {
                    product_id: product.into(),
                    category: category.into(),
                    brand: Some("acme".into()),
                    unit_price_cents: cents,
                },
                quantity: 1,
            }),
        )
    }

    fn paid(id: &str, order: &str) -> Event {
        event(
            id,
            EventBody::OrderPaid {
                order_id: order.into(),
                lines: vec![OrderLine {
                    product_id: "p".into(),
                    category: "pasta".into(),
                    brand: Some("acme".into()),
                    quantity: 1,
                    unit_price_cents: 100,
                }],
                total_cents: 100,
            },
        )
    }

    /// Per event: the node reached, and the decision's node and reasons if one fired.
    type Step = (String, Option<(String, Vec<String>)>);

    /// Applies events in order; returns a [`Step`] per event.
    fn walk(s: &mut Shopper, events: &[Event]) -> Vec<Step> {
        events
            .iter()
            .map(|e| {
                let d = if s.apply(e) {
                    s.step(e, (0, 0), 7)
                } else {
                    None
                };
                (s.node().to_string(), d.map(|d| (d.node_id, d.reasons)))
            })
            .collect()
    }

    #[test]
    fn events_move_the_shopper_and_nodes_with_experiences_decide() {
        let mut s = Shopper::default();
        s.set_tree(Some(Arc::new(tree(1))));
        let got = walk(
            &mut s,
            &[
                add("e1", "rice-1", "rice", 200),
                add("e2", "pasta-1", "pasta", 300),
                add("e2", "pasta-1", "pasta", 300),
                add("e3", "wine-1", "wine", 800),
                add("e4", "wine-2", "wine", 800),
            ],
        );
        assert_eq!(
            got,
            vec![
                ("start".into(), None),
                (
                    "pasta".into(),
                    Some((
                        "pasta".into(),
                        vec!["basket contains category pasta: 1 units (>= 1)".into()]
                    ))
                ),
                ("pasta".into(), None), // the duplicate e2 changes nothing
                (
                    "threshold".into(),
                    Some((
                        "threshold".into(),
                        vec!["basket value 1300 cents (>= 1000)".into()]
                    ))
                ),
                ("threshold".into(), None), // a leaf: the shopper stays
            ]
        );
    }

    #[test]
    fn purchase_history_counts_orders_and_forgets_cancelled_ones() {
        let mut s = Shopper::default();
        s.set_tree(Some(Arc::new(tree(1))));
        let cancel = event(
            "c1",
            EventBody::OrderStatusChanged {
                order_id: "o1".into(),
                status: OrderStatus::Cancelled,
            },
        );
        let got = walk(
            &mut s,
            &[paid("e1", "o1"), cancel, paid("e2", "o2"), paid("e3", "o3")],
        );
        assert_eq!(got[0], ("start".into(), None)); // one acme order: not yet loyal
        assert_eq!(got[2], ("start".into(), None)); // o1 cancelled, o2 paid: still one
        assert_eq!(
            got[3],
            (
                "start".into(), // the paid order ends the journey: back at the root
                Some((
                    "loyal".into(),
                    vec![
                        "paid order o3".into(),
                        "bought brand acme in 2 orders (>= 2)".into()
                    ]
                ))
            )
        );
        // A cancellation that comes before its payment keeps the order out of the history.
        let mut s = Shopper::default();
        let early = event(
            "c9",
            EventBody::OrderStatusChanged {
                order_id: "o9".into(),
                status: OrderStatus::Cancelled,
            },
        );
        s.apply(&early);
        s.apply(&paid("e9", "o9"));
        assert!(s
            .holds(
                &Condition::BoughtBefore {
                    matches: ProductMatch {
                        product_id: Some("p".into()),
                        category: None,
                        brand: None
                    },
                    min_orders: 1
                },
                &early
            )
            .is_none());
    }

    #[test]
    fn a_new_version_keeps_the_node_a_new_tree_restarts() {
        let mut s = Shopper::default();
        s.set_tree(Some(Arc::new(tree(1))));
        walk(&mut s, &[add("e1", "pasta-1", "pasta", 300)]);
        assert_eq!(s.node(), "pasta");
        s.set_tree(Some(Arc::new(tree(2))));
        assert_eq!(s.node(), "pasta");
        let mut other = tree(1);
        other.tree_id = "winter".into();
        s.set_tree(Some(Arc::new(other)));
        assert_eq!(s.node(), "start");
        s.set_tree(None);
        assert_eq!(
            walk(&mut s, &[add("e2", "pasta-2", "pasta", 1)]),
            vec![(String::new(), None)]
        );
    }

    #[test]
    fn decision_ids_are_stable_digests() {
        let a = decision_id("t", 1, "n", "e");
        assert_eq!(a, decision_id("t", 1, "n", "e"));
        assert_eq!(a.len(), 32);
        assert_ne!(a, decision_id("t", 2, "n", "e"));
        assert_ne!(
            decision_id("ab", 1, "c", "e"),
            decision_id("a", 1, "bc", "e")
        );
    }

    /// The operator on `workers` workers: trees at time 1, events at times 2 and 3, and the
    /// shopper erased at `erase_at` (if any).
    fn run_operator(workers: usize) -> Vec<(String, String, u64)> {
        run_operator_erasing(workers, None, Retention::default())
    }

    fn run_operator_erasing(
        workers: usize,
        erase_at: Option<u64>,
        retention: Retention,
    ) -> Vec<(String, String, u64)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        timely::execute(timely::Config::process(workers), move |worker| {
            let tx = tx.lock().unwrap().clone();
            let retention = retention.clone();
            let (mut events_in, mut trees_in, mut erasures_in) =
                worker.dataflow::<u64, _, _>(|scope| {
                    let (ei, events) = scope.new_input::<Vec<PositionedEvent>>();
                    let (ti, trees) = scope.new_input::<Vec<SourceMessage>>();
                    let (xi, erasures) = scope.new_input::<Vec<Erasure>>();
                    decide(
                        events,
                        trees,
                        erasures,
                        retention.clone(),
                        Arc::new(TreeStats::default()),
                    )
                    .capture_into(tx);
                    (ei, ti, xi)
                });
            if let (Some(t), 0) = (erase_at, worker.index()) {
                erasures_in.advance_to(t);
                erasures_in.send(Erasure {
                    request: basketflow_vocab::ErasureRequest {
                        request_id: "q".into(),
                        retailer_id: "r".into(),
                        shopper_id: "s".into(),
                        requested_at: Timestamp(0),
                    },
                    partition: 0,
                    offset: 0,
                });
            }
            if worker.index() == 0 {
                trees_in.advance_to(1);
                trees_in.send(SourceMessage {
                    partition: 0,
                    offset: 0,
                    time: 1,
                    key: Some(b"s".to_vec()),
                    payload: serde_json::to_vec(&tree(1)).unwrap(),
                });
                events_in.advance_to(2);
                let pe = |e: Event, offset| PositionedEvent {
                    event: WireEvent::from(e),
                    partition: 3,
                    offset,
                };
                events_in.send(pe(add("e1", "pasta-1", "pasta", 300), 10));
                events_in.advance_to(3);
                events_in.send(pe(add("e2", "wine-1", "wine", 900), 11));
            }
        })
        .unwrap();
        let mut got: Vec<(String, String, u64)> = rx
            .try_iter()
            .flat_map(|e| match e {
                CaptureEvent::Messages(_, data) => data
                    .into_iter()
                    .map(|d: Decision| (d.decision_id, d.node_id, d.time))
                    .collect(),
                CaptureEvent::Progress(_) => Vec::new(),
            })
            .collect();
        got.sort();
        got
    }

    #[test]
    fn the_operator_decides_the_same_on_one_and_two_workers() {
        let mut want = vec![
            (
                decision_id("autumn-pasta", 1, "pasta", "e1"),
                "pasta".to_string(),
                2,
            ),
            (
                decision_id("autumn-pasta", 1, "threshold", "e2"),
                "threshold".to_string(),
                3,
            ),
        ];
        want.sort();
        assert_eq!(run_operator(1), want);
        assert_eq!(run_operator(2), want);
    }

    #[test]
    fn an_erased_shopper_decides_nothing_from_the_erasure_on() {
        let first = (
            decision_id("autumn-pasta", 1, "pasta", "e1"),
            "pasta".to_string(),
            2,
        );
        // Erased at 3, the time of e2: e2 no longer moves the shopper.
        assert_eq!(
            run_operator_erasing(1, Some(3), Retention::default()),
            vec![first.clone()]
        );
        assert_eq!(
            run_operator_erasing(2, Some(3), Retention::default()),
            vec![first]
        );
        // Erased at 1, with the tree: nothing at all.
        assert_eq!(
            run_operator_erasing(2, Some(1), Retention::default()),
            vec![]
        );
    }

    #[test]
    fn retention_forgets_the_basket_of_a_shopper_without_events_for_the_period() {
        // A period of 1 ms: at time 3 the basket built at 2 is gone, so the wine alone (900
        // cents) does not reach the threshold of 1000, and the pasta node is not re-entered.
        let short = Retention {
            default_ms: 1,
            per_retailer_ms: Default::default(),
        };
        let mut got = run_operator_erasing(1, None, short);
        got.sort();
        assert_eq!(
            got,
            vec![(
                decision_id("autumn-pasta", 1, "pasta", "e1"),
                "pasta".to_string(),
                2,
            )]
        );
    }
}
