//! The pure tree builder: the active campaigns ([`Plan`]s) and the cold data's rows in, one
//! [`ExperienceTree`] per retailer's shopper out. No I/O: the caller reads the rows (`cold_data`)
//! and publishes the trees (`publish`); everything here is unit-tested exactly
//! (`builder/tests.rs`).
//!
//! A campaign is active when `start <= now < end` (`--now`, default: the current time). A shopper
//! is a retailer's shopper: retailers are tenants, and the same `shopper_id` at two retailers
//! is two people, each with their own tree, built from their own retailer's data only. A
//! shopper is active for a campaign when they have at least one purchase (a `shopper_purchases`
//! row) and the campaign targets their retailer. The topic holds one tree per retailer and
//! shopper, so a shopper gets the tree of the first active campaign of the file that targets
//! their retailer; shoppers who had other candidates are counted as `shadowed` in the summary.
//!
//! # The shopper's figures (from the cold data of their retailer)
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
use std::collections::BTreeMap;

use basketflow_vocab::read_models::{ProductAffinity, ShopperPurchase};
use basketflow_vocab::{
    Condition, Experience, ExperienceKind, ExperienceTree, Node, ParamValue, ProductMatch,
    COST_PARAM,
};

use crate::campaigns::{Audience, Plan};

/// The figures of one product at one retailer in one category: `sold_products_daily` summed
/// over its days (the builder's view of the catalog; not a row of the read model, which is per
/// day).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProductSales {
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
pub enum RecommendationReason {
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
pub struct BuiltTree {
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
pub struct ShopperOutcome {
    /// The tree, if an active campaign targets the shopper and enables something for them.
    pub tree: Option<BuiltTree>,
    /// How many active campaigns target the shopper's retailer (more than one: the first wins,
    /// the shopper is counted as shadowed).
    pub candidates: usize,
}

/// The pure tree builder: active campaigns plus catalog figures; one shopper's purchases in,
/// their tree out.
pub struct Builder {
    plans: Vec<Plan>,
    version: u64,
    catalogs: BTreeMap<String, RetailerCatalog>,
}

/// A shopper's figures at one retailer.
struct Profile<'a> {
    retailer: &'a str,
    catalog: &'a RetailerCatalog,
    /// Their rows there, by product id.
    rows: Vec<&'a ShopperPurchase>,
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
fn favourites<'a>(rows: impl Iterator<Item = &'a ShopperPurchase>) -> Vec<&'a ShopperPurchase> {
    let mut v: Vec<&ShopperPurchase> = rows.collect();
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
    pub fn add_affinity(&mut self, a: &ProductAffinity) {
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

    fn profile<'a>(&'a self, retailer: &'a str, rows: &'a [ShopperPurchase]) -> Profile<'a> {
        let catalog = self.catalog(retailer);
        let rows: Vec<&ShopperPurchase> = rows
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
        let mut nodes = parts.assemble();
        if nodes.len() == 1 {
            return None;
        }
        if plan.budget_cents.is_some() {
            for exp in nodes.iter_mut().filter_map(|n| n.experience.as_mut()) {
                let cost = cost_of(exp, usual_rounded);
                if cost > 0 {
                    exp.params
                        .insert(COST_PARAM.to_owned(), ParamValue::Int(cost));
                }
            }
        }
        let tree = ExperienceTree {
            tree_id: c.id.clone(),
            version: self.version,
            retailer_id: p.retailer.to_owned(),
            shopper_id: shopper_id.to_owned(),
            root: "start".into(),
            holdout_basis_points: plan.holdout_basis_points,
            caps: plan.caps.clone(),
            budget_cents: plan.budget_cents,
            // The game's secret travels only when the tree plays the game.
            draw_secret: nodes
                .iter()
                .any(|n| {
                    n.experience
                        .as_ref()
                        .is_some_and(|e| e.kind == ExperienceKind::GamifiedPromotion)
                })
                .then(|| c.gamified.draw_secret.clone())
                .flatten(),
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

    /// The tree of `retailer_id`'s shopper `shopper_id`, whose `shopper_purchases` rows are
    /// `rows` (rows of other retailers or shoppers are ignored: a shopper id names a person at
    /// one retailer only, and another retailer's shopper with the same id is another person,
    /// with their own tree).
    pub fn build(
        &self,
        retailer_id: &str,
        shopper_id: &str,
        rows: &[ShopperPurchase],
    ) -> ShopperOutcome {
        let mine: Vec<ShopperPurchase> = rows
            .iter()
            .filter(|r| r.retailer_id == retailer_id && r.shopper_id == shopper_id)
            .cloned()
            .collect();
        let candidates: Vec<usize> = if mine.iter().any(|r| r.orders > 0) {
            self.plans
                .iter()
                .enumerate()
                .filter(|(_, plan)| plan.targets(retailer_id))
                .map(|(i, _)| i)
                .collect()
        } else {
            Vec::new()
        };
        let Some(&first) = candidates.first() else {
            return ShopperOutcome {
                tree: None,
                candidates: 0,
            };
        };
        let profile = self.profile(retailer_id, &mine);
        ShopperOutcome {
            tree: self.tree(first, shopper_id, &profile),
            candidates: candidates.len(),
        }
    }
}

/// What a shown experience spends of its campaign's budget (`cost_cents`): the tension cart's
/// reward, the promotion's discount on the shopper's usual basket (`usual_cents`, rounded up),
/// the game's expected prize (maximum prize / `win_one_in`, rounded up); a recommendation
/// costs nothing.
pub fn cost_of(exp: &Experience, usual_cents: i64) -> i64 {
    let int = |k: &str| match exp.params.get(k) {
        Some(ParamValue::Int(v)) => *v,
        _ => 0,
    };
    match exp.kind {
        // A win was paid for by its game's expected prize.
        ExperienceKind::ProductRecommendation | ExperienceKind::GameWon => 0,
        ExperienceKind::TensionCart => int("reward_cents"),
        ExperienceKind::PersonalizedPromotion => {
            (int("discount_percent").saturating_mul(usual_cents) + 99) / 100
        }
        ExperienceKind::GamifiedPromotion => {
            let one_in = int("win_one_in").max(1);
            (int("max_prize_cents") + one_in - 1) / one_in
        }
    }
}

#[cfg(test)]
mod tests;
