//! One shopper's state machine: what their events did (basket, session, purchases, recent ids)
//! and where they stand in their tree. Pure (no timely): the operator in [`super`] routes,
//! orders and stashes, and calls it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use basketflow_ingest::kafka_source::Millis;
use basketflow_operators::FastMap;
use serde::{Deserialize, Serialize};

use basketflow_vocab::{
    held_out, wins_game, CausedBy, Condition, Decision, Event, EventBody, Experience,
    ExperienceKind, ExperienceTree, FrequencyCap, OrderStatus, ParamValue, ProductMatch, Timestamp,
    GAME_DECISION_PARAM,
};

/// The contract's horizons as the tree state applies them (the read models' rules 1 and 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizons {
    /// `graph.dedup_horizon_ms`: a copy of an `event_id` read within it after the first copy
    /// is a duplicate.
    pub dedup_ms: u64,
    /// `graph.settlement_ms`: a cancellation read within it after the order's payment takes
    /// the order out of the purchase history; a later one changes nothing (the order has
    /// settled). Likewise a payment read within it after a cancellation of its order.
    pub settlement_ms: u64,
}

impl Horizons {
    /// Horizons no time reaches: duplicates and cancellations are judged forever.
    pub const FOREVER: Horizons = Horizons {
        dedup_ms: u64::MAX,
        settlement_ms: u64::MAX,
    };
}

/// True while something read at `read` is within `horizon` at `now`.
fn within(read: Millis, horizon: u64, now: Millis) -> bool {
    read.saturating_add(horizon) > now
}

/// An [`id_digest`] as kept in the state: its little-endian bytes (24 bytes with a read time
/// instead of the 32 a `u128`'s alignment takes; bincode writes the same 16 bytes for both).
type IdDigest = [u8; 16];

/// Up to this many remembered ids, a shopper's duplicates are found by a scan (most shoppers:
/// no index to keep); beyond, through an index.
const SCANNED_IDS: usize = 128;

/// A basket line as the tree sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    units: i64,
    category: String,
    brand: Option<String>,
    unit_price_cents: i64,
}

/// Lines of a paid order, for the purchase history: (product, category, brand).
type OrderItems = Vec<(String, String, Option<String>)>;

/// What the conditions of one shopper's tree read, and where the shopper is in it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Shopper {
    basket: BTreeMap<String, Line>,
    session: Option<String>,
    searches: Vec<String>,
    product_views: BTreeMap<String, u32>,
    category_views: BTreeMap<String, u32>,
    product_orders: BTreeMap<String, u32>,
    category_orders: BTreeMap<String, u32>,
    brand_orders: BTreeMap<String, u32>,
    /// Paid orders within settlement: their payment's read time and items.
    orders: BTreeMap<String, (Millis, OrderItems)>,
    /// The same orders' ids with that read time, in read order (what settles next first).
    order_ids: VecDeque<(Millis, String)>,
    /// Cancellations read within settlement (of orders paid or not), in read order.
    cancelled: VecDeque<(Millis, String)>,
    /// The shopper's event ids read within the de-duplication horizon, as (read time,
    /// [`id_digest`]'s bytes), in read order: the first copy of each.
    recent: VecDeque<(Millis, IdDigest)>,
    /// Once `recent` outgrows [`SCANNED_IDS`]: each digest of it with its latest read time,
    /// so that a shopper with many events in the horizon (a bot, a replaying tracker) costs
    /// one lookup per event, not a scan. Not checkpointed: built again when needed.
    #[serde(skip)]
    recent_index: Option<Box<FastMap<IdDigest, Millis>>>,
    #[serde(with = "tree_as_json")]
    tree: Option<Arc<ExperienceTree>>,
    node: String,
    /// The decisions the tree's frequency caps count.
    shown: Shown,
    /// The last event [`Shopper::apply`] applied was the first payment of its order within
    /// settlement (the order a game may draw); not checkpointed: it is set by each event
    /// before [`Shopper::step`] reads it.
    #[serde(skip)]
    new_order: bool,
}

/// Milliseconds in a day: the caps' day is `time / DAY_MS` (UTC, logical time).
const DAY_MS: u64 = 86_400_000;

/// Where [`Shown`] counts every kind together.
const ALL_KINDS: usize = 4;

/// The counters' slot of `kind`.
fn slot(kind: ExperienceKind) -> usize {
    match kind {
        ExperienceKind::ProductRecommendation => 0,
        ExperienceKind::PersonalizedPromotion => 1,
        // A win is never capped nor counted (its game was): it shares the game's slot.
        ExperienceKind::GamifiedPromotion | ExperienceKind::GameWon => 2,
        ExperienceKind::TensionCart => 3,
    }
}

/// The decisions of the shopper's campaign that counted toward its frequency caps (those not
/// capped), per kind ([`slot`]) and in all ([`ALL_KINDS`]), in the current session and on
/// `day`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Shown {
    /// The day `per_day` counts (logical ms / [`DAY_MS`]).
    day: u64,
    per_day: [u32; 5],
    per_session: [u32; 5],
}

impl Shown {
    /// True when a cap of `caps` stops a decision of `kind` at `time`.
    fn capped(&self, caps: &[FrequencyCap], kind: ExperienceKind, time: Millis) -> bool {
        let same_day = self.day == time / DAY_MS;
        caps.iter().any(|cap| {
            if cap.kind.is_some_and(|k| k != kind) {
                return false;
            }
            let i = cap.kind.map_or(ALL_KINDS, slot);
            let today = if same_day { self.per_day[i] } else { 0 };
            cap.per_session.is_some_and(|n| self.per_session[i] >= n)
                || cap.per_day.is_some_and(|n| today >= n)
        })
    }

    /// Counts a decision of `kind` at `time`.
    fn count(&mut self, kind: ExperienceKind, time: Millis) {
        let day = time / DAY_MS;
        if self.day != day {
            self.day = day;
            self.per_day = [0; 5];
        }
        for i in [slot(kind), ALL_KINDS] {
            self.per_day[i] = self.per_day[i].saturating_add(1);
            self.per_session[i] = self.per_session[i].saturating_add(1);
        }
    }
}

/// A tree in a checkpoint: its JSON (the tree's serde is JSON-shaped: flattened and untagged
/// variants, which `bincode` cannot read back).
mod tree_as_json {
    use std::sync::Arc;

    use basketflow_vocab::ExperienceTree;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        tree: &Option<Arc<ExperienceTree>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let json = tree
            .as_ref()
            .map(|t| serde_json::to_vec(&**t).expect("a tree serializes"));
        json.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Arc<ExperienceTree>>, D::Error> {
        let json: Option<Vec<u8>> = Deserialize::deserialize(d)?;
        json.map(|j| {
            serde_json::from_slice(&j)
                .map(Arc::new)
                .map_err(D::Error::custom)
        })
        .transpose()
    }
}

/// The digest the tree state keeps of an `event_id` ([`crate::digest::digest128`]): 16
/// bytes where the id was a `String` (24 bytes plus its length).
pub fn id_digest(event_id: &str) -> u128 {
    crate::digest::digest128(&[event_id.as_bytes()])
}

fn bump(map: &mut BTreeMap<String, u32>, key: &str, by: i32) {
    // Found by the borrowed key: a known key (most page views) is not cloned.
    match map.get_mut(key) {
        Some(n) => {
            *n = n.saturating_add_signed(by);
            if *n == 0 {
                map.remove(key);
            }
        }
        None => {
            let n = 0u32.saturating_add_signed(by);
            if n != 0 {
                map.insert(key.to_string(), n);
            }
        }
    }
}

impl Shopper {
    /// Installs `tree` (or removes the tree when `None`), keeping the shopper's node when the
    /// new version of the same tree still has it.
    pub fn set_tree(&mut self, tree: Option<Arc<ExperienceTree>>) {
        match &tree {
            Some(new) => {
                let same = self
                    .tree
                    .as_ref()
                    .is_some_and(|old| old.tree_id == new.tree_id);
                if !same {
                    // Another campaign: its caps count from zero.
                    self.shown = Shown::default();
                }
                let keep = same && new.nodes.iter().any(|n| n.id == self.node);
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

    /// When the horizons next pass something the state remembers (an event id, a paid order,
    /// a cancellation); `None` when it remembers none, or never forgets.
    pub fn next_expiry(&self, horizons: Horizons) -> Option<Millis> {
        let ids = self
            .recent
            .front()
            .map(|&(read, _)| (read, horizons.dedup_ms));
        let orders = self
            .order_ids
            .front()
            .map(|(read, _)| (*read, horizons.settlement_ms));
        let cancelled = self
            .cancelled
            .front()
            .map(|(read, _)| (*read, horizons.settlement_ms));
        [ids, orders, cancelled]
            .into_iter()
            .flatten()
            .map(|(read, horizon)| read.saturating_add(horizon))
            .filter(|&due| due != Millis::MAX)
            .min()
    }

    /// Forgets what the horizons have passed at `now`: event ids (a later copy counts again
    /// anyway), paid orders and cancellations past settlement (a later cancellation or
    /// payment changes nothing anyway). The purchase history keeps the settled orders.
    pub fn forget(&mut self, now: Millis, horizons: Horizons) {
        while let Some(&(read, digest)) = self.recent.front() {
            if within(read, horizons.dedup_ms, now) {
                break;
            }
            self.recent.pop_front();
            if let Some(index) = &mut self.recent_index {
                // Only when no later copy of it is still remembered.
                if index.get(&digest) == Some(&read) {
                    index.remove(&digest);
                }
            }
        }
        if self.recent.len() < SCANNED_IDS / 2 {
            self.recent_index = None;
        }
        while let Some((read, _)) = self.order_ids.front() {
            if within(*read, horizons.settlement_ms, now) {
                break;
            }
            let (read, id) = self.order_ids.pop_front().expect("present");
            // Only the order this entry was written for (a later payment of a cancelled id
            // wrote its own entry).
            if self.orders.get(&id).is_some_and(|(paid, _)| *paid == read) {
                self.orders.remove(&id);
            }
        }
        while self
            .cancelled
            .front()
            .is_some_and(|(read, _)| !within(*read, horizons.settlement_ms, now))
        {
            self.cancelled.pop_front();
        }
    }

    /// How many entries the horizons will forget: event ids, paid orders and cancellations.
    pub fn remembered(&self) -> usize {
        self.recent.len() + self.order_ids.len() + self.cancelled.len()
    }

    /// How many event ids the state remembers (the first copies read within the horizon).
    pub fn remembered_ids(&self) -> usize {
        self.recent.len()
    }

    /// True when the shopper has a tree (their state must then be kept).
    pub fn has_tree(&self) -> bool {
        self.tree.is_some()
    }

    /// The shopper's current node id (empty without a tree).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Applies one event read at `at` to the state. Returns false for a duplicate: a copy of
    /// an `event_id` whose first copy was read within the de-duplication horizon before (the
    /// read models' rule 1); a copy read later counts again. A paid order stays in the
    /// purchase history unless a cancellation of it is read within settlement of its payment
    /// (or was read within settlement before it).
    ///
    /// Events must come in read-time order. What the horizons judge stays in the state until
    /// [`Shopper::forget`] drops what they have passed; every verdict reads the times, so it
    /// is the same whether or not that has run.
    pub fn apply(&mut self, event: &Event, at: Millis, horizons: Horizons) -> bool {
        let digest: IdDigest = id_digest(&event.event_id).to_le_bytes();
        if self.recent.len() > SCANNED_IDS && self.recent_index.is_none() {
            let mut index = FastMap::default();
            index.extend(self.recent.iter().map(|&(read, d)| (d, read)));
            self.recent_index = Some(Box::new(index));
        }
        // The latest copy of the id decides: `within` holds for it if it holds for any.
        let duplicate = match &self.recent_index {
            Some(index) => index
                .get(&digest)
                .is_some_and(|&read| within(read, horizons.dedup_ms, at)),
            None => self
                .recent
                .iter()
                .any(|&(read, d)| d == digest && within(read, horizons.dedup_ms, at)),
        };
        if duplicate {
            return false;
        }
        self.recent.push_back((at, digest));
        if let Some(index) = &mut self.recent_index {
            index.insert(digest, at);
        }
        self.new_order = false;
        if event.session_id != self.session {
            self.session = event.session_id.clone();
            self.searches.clear();
            self.product_views.clear();
            self.category_views.clear();
            self.shown.per_session = [0; 5];
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
                let settlement = horizons.settlement_ms;
                // An entry past settlement is as good as forgotten (whether or not `forget`
                // has run): the payment counts as a new order, as it would after.
                let open = (self.orders.get(order_id))
                    .is_some_and(|(paid, _)| within(*paid, settlement, at));
                let cancelled = self
                    .cancelled
                    .iter()
                    .any(|(read, id)| id == order_id && within(*read, settlement, at));
                if !open && !cancelled {
                    let items: OrderItems = lines
                        .iter()
                        .map(|l| (l.product_id.clone(), l.category.clone(), l.brand.clone()))
                        .collect();
                    self.count_order(&items, 1);
                    // Kept within settlement, for a cancellation read in it.
                    self.orders.insert(order_id.clone(), (at, items));
                    self.order_ids.push_back((at, order_id.clone()));
                    self.new_order = true;
                }
            }
            EventBody::OrderStatusChanged {
                order_id,
                status: OrderStatus::Cancelled,
            } => {
                let settlement = horizons.settlement_ms;
                if let Some((paid, _)) = self.orders.get(order_id) {
                    if within(*paid, settlement, at) {
                        let (_, items) = self.orders.remove(order_id).expect("present");
                        self.count_order(&items, -1);
                    }
                }
                self.cancelled.push_back((at, order_id.clone()));
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

    /// As [`Shopper::step`], followed by the game's win when the decision is a gamified
    /// promotion shown for an order's first payment and the order wins its draw ([`prize`]).
    pub fn step_with_prize(
        &mut self,
        event: &Event,
        position: (i32, i64),
        time: Millis,
    ) -> impl Iterator<Item = Decision> {
        let decision = self.step(event, position, time);
        let secret = self.tree.as_ref().and_then(|t| t.draw_secret.as_deref());
        let won = decision
            .as_ref()
            .filter(|_| self.new_order)
            .and_then(|game| prize(game, event, secret));
        decision.into_iter().chain(won)
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
            let capped = self.shown.capped(&tree.caps, experience.kind, time);
            if !capped {
                self.shown.count(experience.kind, time);
            }
            return Some(Decision {
                decision_id: decision_id(
                    &event.retailer_id,
                    &event.shopper_id,
                    &tree.tree_id,
                    tree.version,
                    &child.id,
                    &event.event_id,
                ),
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
                held_out: held_out(
                    &tree.tree_id,
                    &event.retailer_id,
                    &event.shopper_id,
                    tree.holdout_basis_points,
                ),
                capped,
                over_budget: false,
                budget_cents: tree.budget_cents,
            });
        }
        None
    }
}

/// The win of `game`, a gamified promotion decided for the paid order `event`, if the order
/// wins the campaign's draw ([`wins_game`] with the game's `win_one_in` param and the tree's
/// `draw_secret`): a
/// [`ExperienceKind::GameWon`] decision at the game's time, for the same shopper, tree and
/// node, whose params name the game ([`GAME_DECISION_PARAM`]), the order, and the prize: the
/// order's total, at most the game's `max_prize_cents`. Only a game the shopper was shown
/// plays: a held-out or capped game draws nothing. The win costs nothing: its game's cost (the
/// expected prize) paid for it, so it follows its game's budget verdict
/// ([`super::budget`]), and it carries the game's budget only when the game claimed on it.
pub fn prize(game: &Decision, event: &Event, secret: Option<&str>) -> Option<Decision> {
    if game.experience.kind != ExperienceKind::GamifiedPromotion || game.held_out || game.capped {
        return None;
    }
    let EventBody::OrderPaid {
        order_id,
        total_cents,
        ..
    } = &event.body
    else {
        return None;
    };
    let int = |k: &str| match game.experience.params.get(k) {
        Some(ParamValue::Int(v)) => Some(*v),
        _ => None,
    };
    let one_in = u64::try_from(int("win_one_in")?).ok()?;
    if !wins_game(&game.tree_id, &game.retailer_id, order_id, one_in, secret) {
        return None;
    }
    let prize_cents = int("max_prize_cents")
        .map_or(*total_cents, |max| max.min(*total_cents))
        .max(0);
    let mut params = std::collections::BTreeMap::from([
        (
            GAME_DECISION_PARAM.to_owned(),
            ParamValue::Text(game.decision_id.clone()),
        ),
        ("order_id".to_owned(), ParamValue::Text(order_id.clone())),
        ("prize_cents".to_owned(), ParamValue::Int(prize_cents)),
    ]);
    if let Some(what) = game.experience.params.get("prize") {
        params.insert("prize".to_owned(), what.clone());
    }
    Some(Decision {
        decision_id: decision_id(
            &game.retailer_id,
            &game.shopper_id,
            &game.tree_id,
            game.tree_version,
            &format!("{}#won", game.node_id),
            &game.caused_by.event_id,
        ),
        experience: Experience {
            kind: ExperienceKind::GameWon,
            params,
        },
        reasons: vec![format!(
            "order {order_id} won the draw of {} (one in {one_in})",
            game.tree_id
        )],
        budget_cents: game.budget_cents.filter(|_| game.cost_cents() > 0),
        decided_at: Timestamp::now(),
        ..game.clone()
    })
}

/// A deterministic decision id: 128-bit FNV-1a over retailer, shopper, tree, version, node
/// and event, in hex (each part ends with a byte `0xff`, which UTF-8 text never holds, so
/// parts cannot run into each other).
///
/// Retailer and shopper are part of it because ids are unique per retailer only: two
/// retailers may use the same tree id, node ids and event ids for two shoppers with the same
/// id, and their decisions are still two decisions.
pub fn decision_id(
    retailer_id: &str,
    shopper_id: &str,
    tree_id: &str,
    version: u64,
    node_id: &str,
    event_id: &str,
) -> String {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    let prime: u128 = 0x0000000001000000000000000000013b;
    for part in [
        retailer_id.as_bytes(),
        shopper_id.as_bytes(),
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
