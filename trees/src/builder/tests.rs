//! Unit tests of the builder: exact trees for known cold data, campaign choice, determinism.

use basketflow_vocab::Timestamp;
use serde_json::{json, Value};

use super::*;
use crate::campaigns::parse_campaigns;
use crate::campaigns::tests::CAMPAIGN;

fn sales(retailer: &str, product: &str, category: &str, q: i64, rev: i64, o: i64) -> ProductSales {
    ProductSales {
        retailer_id: retailer.into(),
        product_id: product.into(),
        category: category.into(),
        quantity: q,
        revenue_cents: rev,
        orders: o,
    }
}

fn bought(retailer: &str, shopper: &str, product: &str, q: i64, o: i64) -> ShopperPurchase {
    ShopperPurchase {
        retailer_id: retailer.into(),
        shopper_id: shopper.into(),
        product_id: product.into(),
        quantity: q,
        orders: o,
        // The builder does not read it.
        last_purchase_at: Timestamp::MIN,
    }
}

fn pair(retailer: &str, a: &str, b: &str, n: i64) -> ProductAffinity {
    ProductAffinity {
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

fn affinities() -> Vec<ProductAffinity> {
    vec![
        pair("r1", "r1-pasta-1", "r1-sauce-3", 4),
        pair("r1", "r1-pasta-1", "r1-sauce-2", 2),
        // Not a complement: dropped.
        pair("r1", "r1-milk-1", "r1-pasta-1", 9),
        pair("r1", "r1-pasta-2", "r1-sauce-2", 3),
    ]
}

fn purchases() -> Vec<ShopperPurchase> {
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

/// Every retailer's shopper's outcome, in shopper then retailer order (rows grouped by
/// retailer and shopper like the I/O part does).
fn build_all(b: &Builder, rows: &[ShopperPurchase]) -> Vec<(String, ShopperOutcome)> {
    let mut by_shopper: BTreeMap<(String, String), Vec<ShopperPurchase>> = BTreeMap::new();
    for r in rows {
        by_shopper
            .entry((r.shopper_id.clone(), r.retailer_id.clone()))
            .or_default()
            .push(r.clone());
    }
    by_shopper
        .into_iter()
        .map(|((s, r), rows)| {
            let outcome = b.build(&r, &s, &rows);
            if let Some(t) = &outcome.tree {
                t.tree.check().unwrap();
                assert_eq!(
                    (t.tree.retailer_id.as_str(), t.tree.shopper_id.as_str()),
                    (r.as_str(), s.as_str())
                );
            }
            (s, outcome)
        })
        .collect()
}

fn tree_of(b: &Builder, shopper: &str) -> ExperienceTree {
    let rows: Vec<ShopperPurchase> = purchases()
        .into_iter()
        .filter(|r| r.shopper_id == shopper)
        .collect();
    let tree = b.build("r1", shopper, &rows).tree.unwrap().tree;
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
fn each_retailer_s_shopper_gets_the_first_campaign_targeting_their_retailer() {
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
    // The same shopper ids at two retailers are different shoppers: each gets a tree at their
    // own retailer, from their own rows.
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
            ("erin", "everywhere", "r1", 1),
            ("erin", "r2-only", "r2", 2),
            ("fred", "everywhere", "r1", 1),
            ("fred", "r2-only", "r2", 2),
            ("gina", "everywhere", "r1", 1),
        ]
    );
    // Another retailer's rows never shape a shopper's tree: erin at r1 alone gets the same
    // tree as erin at r1 among every row.
    let alone: Vec<ShopperPurchase> = rows
        .iter()
        .filter(|r| r.retailer_id == "r1")
        .cloned()
        .collect();
    assert_eq!(b.build("r1", "erin", &alone), b.build("r1", "erin", &rows));
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
    let out = b.build("r1", "alice", &purchases());
    assert_eq!(out.tree, None);
    assert_eq!(out.candidates, 1);
}
