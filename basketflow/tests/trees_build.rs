//! Integration: `basketflow trees build` against the real ClickHouse and Kafka of
//! `scripts/stack up`. Known cold data goes into a fresh database through the ClickHouse sink
//! (versions, a deletion, an uncommitted version, a progress row), so the analyst views hold
//! exactly what the test says; the built binary then publishes the trees on a topic of its own,
//! and the test reads the topic back and checks every (key, tree) published, the summary, and
//! that `--dry-run` prints the same trees. A missing topic must fail loudly.
//!
//! Needs the broker at `$BASKETFLOW_BROKERS` (default 127.0.0.1:9092) and ClickHouse HTTP at
//! `$BASKETFLOW_CLICKHOUSE_URL` (default http://127.0.0.1:8123). The database
//! (`bf_trees_<unique suffix>`) is dropped and the topic deleted at the end, also on failure.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use basketflow_sinks::clickhouse::versions::{Batch, Version};
use basketflow_sinks::clickhouse::ClickHouseStore;
use basketflow_testkit::kafka::{read_text_pairs, Topics};
use basketflow_testkit::stack::{brokers, clickhouse_url};
use basketflow_testkit::Database;
use basketflow_vocab::read_models::{ProductAffinity, ShopperPurchase, SoldProductDaily};
use basketflow_vocab::{tree_key, ExperienceTree, Timestamp};
use serde_json::{json, Value};

fn version<R>(row: R, time: u64) -> Version<R> {
    Version {
        row,
        deleted: false,
        time,
    }
}

fn sold(
    day: i32,
    product: &str,
    category: &str,
    q: i64,
    rev: i64,
    orders: i64,
) -> SoldProductDaily {
    SoldProductDaily {
        day,
        retailer_id: format!("retailer-{}", &product[1..3]),
        product_id: product.into(),
        category: category.into(),
        quantity: q,
        revenue_cents: rev,
        orders,
    }
}

fn bought(shopper: &str, product: &str, quantity: i64, orders: i64) -> ShopperPurchase {
    ShopperPurchase {
        retailer_id: format!("retailer-{}", &product[1..3]),
        shopper_id: shopper.into(),
        product_id: product.into(),
        quantity,
        orders,
        last_purchase_at: Timestamp::parse_rfc3339("2026-09-15T10:00:00Z").unwrap(),
    }
}

fn pair(a: &str, b: &str, n: i64) -> ProductAffinity {
    assert!(a < b);
    ProductAffinity {
        retailer_id: format!("retailer-{}", &a[1..3]),
        product_a: a.into(),
        product_b: b.into(),
        orders_together: n,
    }
}

/// The cold data: committed through time 10.
fn batch() -> Batch {
    let day = 20_600; // 2026-05-26
    let mut purchases = vec![
        // cust-001: a loyal regular of pasta who buys sauce-0002.
        version(bought("cust-001", "r00-pasta-0001", 6, 5), 5),
        version(bought("cust-001", "r00-pasta-sauce-0002", 3, 3), 5),
        version(bought("cust-001", "r00-milk-0001", 4, 2), 5),
        // cust-002: pasta only, two products tied (the smaller id is the favourite).
        version(bought("cust-002", "r00-pasta-0001", 2, 2), 5),
        version(bought("cust-002", "r00-pasta-0002", 2, 2), 5),
        // cust-003: never bought pasta or sauce.
        version(bought("cust-003", "r00-milk-0001", 1, 1), 5),
        // cust-004: only at retailer-01 (coffee).
        version(bought("cust-004", "r01-coffee-0001", 3, 3), 5),
        // cust-005: a shopper id at both retailers: two shoppers, one tree each.
        version(bought("cust-005", "r00-milk-0001", 1, 1), 5),
        version(bought("cust-005", "r01-coffee-0001", 1, 1), 5),
        // cust-006: bought, then the order was cancelled (deleted): not active.
        version(bought("cust-006", "r00-pasta-0001", 1, 1), 3),
        // cust-007: a version after the committed time: invisible in the views.
        version(bought("cust-007", "r00-pasta-0001", 1, 1), 20),
        // cust-001 again at time 8: one more milk order; the views show the newest version.
        version(bought("cust-001", "r00-milk-0001", 4, 2), 8),
    ];
    purchases.push(Version {
        row: bought("cust-006", "r00-pasta-0001", 0, 0),
        deleted: true,
        time: 6,
    });
    Batch {
        through: 20,
        sold_products_daily: vec![
            version(sold(day, "r00-pasta-0001", "pasta", 6, 900, 5), 5),
            version(sold(day + 1, "r00-pasta-0001", "pasta", 4, 600, 3), 5),
            version(sold(day, "r00-pasta-0002", "pasta", 4, 800, 4), 5),
            version(
                sold(day, "r00-pasta-sauce-0001", "pasta-sauce", 20, 5000, 12),
                5,
            ),
            version(
                sold(day, "r00-pasta-sauce-0002", "pasta-sauce", 5, 1500, 5),
                5,
            ),
            version(
                sold(day, "r00-pasta-sauce-0003", "pasta-sauce", 6, 1800, 6),
                5,
            ),
            version(sold(day, "r00-milk-0001", "milk", 30, 3000, 20), 5),
            version(sold(day, "r01-coffee-0001", "coffee", 10, 5490, 10), 5),
            version(sold(day, "r01-milk-0001", "milk", 8, 872, 8), 5),
            version(sold(day, "r01-milk-0002", "milk", 2, 218, 2), 5),
        ],
        shopper_purchases: purchases,
        product_affinities: vec![
            version(pair("r00-pasta-0001", "r00-pasta-sauce-0003", 4), 5),
            version(pair("r00-pasta-0001", "r00-pasta-sauce-0002", 2), 5),
            version(pair("r00-milk-0001", "r00-pasta-0001", 9), 5),
            version(pair("r00-pasta-0002", "r00-pasta-sauce-0002", 3), 5),
            version(pair("r01-coffee-0001", "r01-milk-0002", 2), 5),
        ],
        ..Batch::default()
    }
}

const CAMPAIGNS: &str = r#"
[[campaign]]
id = "autumn-pasta"
retailer = "retailer-00"
start = "2026-09-01"
end = "2026-11-30"
category = "pasta"
complement = "pasta-sauce"
holdout_share = 0.25
attribution_hours = 48
budget_cents = 100000
[[campaign.cap]]
per_session = 2
[[campaign.cap]]
kind = "personalized_promotion"
per_day = 1
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
max_products = 2
[campaign.gamified]
min_orders = 5
max_prize_cents = 400
draw_secret = "autumn-pasta-draw-secret"

[[campaign]]
id = "expired"
retailer = "all"
end = "2026-08-31"
category = "milk"
complement = "coffee"

[[campaign]]
id = "coffee-break"
retailer = "all"
start = 2026-01-01T00:00:00Z
category = "coffee"
complement = "milk"
experiences = ["product_recommendation", "tension_cart"]
[campaign.tension_cart]
round_cents = 1000
step_cents = 1000
announce_before_cents = 1500
reward_cents = 500
"#;

fn run_build(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "trees",
        "build",
        "--campaigns",
        "campaigns.toml",
        "--config",
        "basketflow.toml",
        "--now",
        "2026-10-01T00:00:00Z",
        "--version",
        "42",
        "--progress-every",
        "2",
    ];
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_basketflow"))
        .current_dir(dir)
        .args(&args)
        .output()
        .expect("running basketflow")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn params(tree: &Value, node: &str) -> Value {
    tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == node)
        .unwrap_or_else(|| panic!("no node {node} in {tree}"))["experience"]["params"]
        .clone()
}

fn node_ids(tree: &Value) -> Vec<String> {
    tree["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The node ids of an autumn-pasta tree with or without the game.
fn pasta_ids(loyal: bool) -> Vec<String> {
    let mut ids = vec!["start".to_owned()];
    let chain = |prefix: &str| {
        let mut v = vec![format!("{prefix}basket"), format!("{prefix}basket/tension")];
        if loyal {
            v.push(format!("{prefix}basket/tension/paid"));
            v.push(format!("{prefix}basket/paid"));
        }
        v
    };
    ids.extend(chain(""));
    for branch in ["searched:pasta", "viewed:pasta"] {
        ids.push(branch.to_owned());
        ids.extend(chain(&format!("{branch}/")));
        if loyal {
            ids.push(format!("{branch}/paid"));
        }
    }
    if loyal {
        ids.push("paid".into());
    }
    ids
}

async fn scenario(database: String, dir: std::path::PathBuf) {
    let suffix = database.trim_start_matches("bf_trees_").to_owned();
    let topic = format!("test-trees-{suffix}");
    let topics = Topics::new(&brokers());
    topics.create(&topic, 4, &[("cleanup.policy", "compact")]);
    std::fs::write(
        dir.join("basketflow.toml"),
        format!(
            "[kafka]\nbrokers = \"{}\"\ntrees_topic = \"{topic}\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n",
            brokers(),
            clickhouse_url()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("campaigns.toml"), CAMPAIGNS).unwrap();

    // Publish.
    let out = run_build(&dir, &[]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "trees build failed: {stderr}");
    assert!(
        stderr.contains("trees: 2/6 shoppers") && stderr.contains("trees: 4/6 shoppers"),
        "progress lines missing: {stderr}"
    );
    let stdout = text(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["version"], 42);
    assert_eq!(summary["topic"], json!(topic));
    assert_eq!(
        summary["campaigns_active"],
        json!(["autumn-pasta", "coffee-break"])
    );
    assert_eq!(
        summary["campaigns_skipped"],
        json!([{"id": "expired", "reason": "ended at 2026-09-01T00:00:00Z"}])
    );
    // Retailer and shopper: cust-005 is a shopper at each retailer.
    assert_eq!(summary["shoppers"], 6);
    assert_eq!(summary["trees"], 6);
    // Every retailer-00 shopper could also have had coffee-break.
    assert_eq!(summary["shadowed"], 4);
    assert_eq!(summary["delivered"], 6);
    assert_eq!(summary["delivery_failures"], 0);
    assert_eq!(
        summary["by_campaign"],
        json!({
            "autumn-pasta": {"trees": 4, "loyal": 1,
                "recommendation": {"best_seller": 2, "bought_before": 1, "bought_together": 1},
                "segments": {"new": 2, "occasional": 1, "regular": 1}},
            "coffee-break": {"trees": 2, "loyal": 0,
                "recommendation": {"bought_together": 2}, "segments": {}},
        })
    );

    // What the topic holds: one tree per shopper, key = retailer_id U+001F shopper_id.
    let published = read_text_pairs(&brokers(), &topic);
    let trees: BTreeMap<(String, String), Value> = published
        .iter()
        .map(|(k, v)| {
            let tree: ExperienceTree = serde_json::from_str(v).unwrap();
            tree.check().unwrap();
            assert_eq!(k, &tree_key(&tree.retailer_id, &tree.shopper_id));
            assert_eq!(tree.version, 42);
            (
                (tree.retailer_id.clone(), tree.shopper_id.clone()),
                serde_json::from_str(v).unwrap(),
            )
        })
        .collect();
    assert_eq!(trees.len(), published.len(), "a shopper published twice");
    let keys: Vec<(&str, &str)> = trees
        .keys()
        .map(|(r, s)| (r.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("retailer-00", "cust-001"),
            ("retailer-00", "cust-002"),
            ("retailer-00", "cust-003"),
            ("retailer-00", "cust-005"),
            ("retailer-01", "cust-004"),
            ("retailer-01", "cust-005"),
        ]
    );
    let at = |r: &str, s: &str| &trees[&(format!("retailer-{r}"), s.to_string())];
    for s in ["cust-001", "cust-002", "cust-003", "cust-005"] {
        assert_eq!(at("00", s)["tree_id"], json!("autumn-pasta"));
        assert_eq!(at("00", s)["holdout_basis_points"], json!(2_500));
        assert_eq!(at("00", s)["budget_cents"], json!(100_000));
        assert_eq!(
            at("00", s)["caps"],
            json!([{"per_session": 2}, {"kind": "personalized_promotion", "per_day": 1}])
        );
    }

    // The campaigns, for campaign_uplift: autumn-pasta at its retailer; coffee-break ("all")
    // at the retailer it built trees at (retailer-00's shoppers all had autumn-pasta).
    let store = ClickHouseStore::connect(&clickhouse_url(), &database, "default", "")
        .await
        .unwrap();
    let campaigns = || async {
        store
            .client()
            .query(&format!(
                "SELECT campaign_id, retailer_id, trees_version, category, \
                 arrayStringConcat(products, ','), \
                 holdout_basis_points, attribution_seconds FROM {database}.campaigns \
                 ORDER BY campaign_id, retailer_id"
            ))
            .fetch_all::<(String, String, u64, String, String, u16, u32)>()
            .await
            .unwrap()
    };
    let want_campaigns = vec![
        (
            "autumn-pasta".to_owned(),
            "retailer-00".to_owned(),
            42,
            "pasta".to_owned(),
            String::new(),
            2_500,
            48 * 3600,
        ),
        (
            "coffee-break".to_owned(),
            "retailer-01".to_owned(),
            42,
            "coffee".to_owned(),
            String::new(),
            0,
            168 * 3600,
        ),
    ];
    assert_eq!(campaigns().await, want_campaigns);
    assert_eq!(summary["campaign_rows_recorded"], 2);
    for s in ["cust-004", "cust-005"] {
        assert_eq!(at("01", s)["tree_id"], json!("coffee-break"));
    }

    // cust-001: 5 orders, spend 6 x 150 + 3 x 300 + 4 x 100 = 2200 -> 440 -> 500 -> 1000.
    // autumn-pasta has a budget: each costly experience names its cost (the tension cart's
    // reward; the promotion's discount on the usual basket rounded, 5% of 500; the game's
    // maximum prize over win_one_in, 400 / 20); a recommendation costs nothing.
    let t = at("00", "cust-001");
    assert_eq!(node_ids(t), pasta_ids(true));
    assert_eq!(
        params(t, "basket"),
        json!({"product_id": "r00-pasta-sauce-0002", "reason": "bought_before"})
    );
    assert_eq!(
        params(t, "viewed:pasta/basket/tension"),
        json!({"threshold_cents": 1000, "reward_cents": 300, "cost_cents": 300})
    );
    assert_eq!(
        params(t, "searched:pasta"),
        json!({"category": "pasta", "discount_percent": 5, "cost_cents": 25,
               "product_ids": ["r00-pasta-0001", "r00-pasta-0002"], "segment": "regular"})
    );
    assert_eq!(
        params(t, "paid"),
        json!({"prize": "basket_back", "max_prize_cents": 400, "win_one_in": 20, "cost_cents": 20})
    );
    // The game's secret travels in the tree that plays it (never in the decisions' params).
    assert_eq!(t["draw_secret"], json!("autumn-pasta-draw-secret"));
    // cust-002: favourite pasta-0001, bought with sauce-0003 in 4 orders.
    let t = at("00", "cust-002");
    assert_eq!(node_ids(t), pasta_ids(false));
    assert_eq!(t.get("draw_secret"), None, "no game, no secret");
    assert_eq!(
        params(t, "searched:pasta/basket"),
        json!({"product_id": "r00-pasta-sauce-0003", "reason": "bought_together"})
    );
    assert_eq!(
        params(t, "basket/tension"),
        json!({"threshold_cents": 1000, "reward_cents": 300, "cost_cents": 300})
    );
    assert_eq!(params(t, "viewed:pasta")["discount_percent"], 14);
    // cust-003 and cust-005 (shadowed coffee-break): the best-selling sauce, the maximum discount.
    for s in ["cust-003", "cust-005"] {
        let t = at("00", s);
        assert_eq!(node_ids(t), pasta_ids(false));
        assert_eq!(
            params(t, "basket"),
            json!({"product_id": "r00-pasta-sauce-0001", "reason": "best_seller"})
        );
        assert_eq!(params(t, "basket/tension")["threshold_cents"], 1000);
        assert_eq!(
            params(t, "viewed:pasta"),
            json!({"category": "pasta", "discount_percent": 20, "cost_cents": 100,
                   "product_ids": ["r00-pasta-0001", "r00-pasta-0002"], "segment": "new"})
        );
    }
    // cust-004, the whole tree: coffee-0001 goes with milk-0002 (not the best-selling milk);
    // spend 3 x 549 over 3 orders -> 549 -> 1000 -> threshold 2000, announced at 500.
    let mut cust_005 = at("01", "cust-005").clone();
    cust_005["shopper_id"] = json!("cust-004");
    assert_eq!(
        &cust_005,
        at("01", "cust-004"),
        "cust-005 at retailer-01 (one coffee order of 549) gets cust-004's tree, from \
         retailer-01's data only"
    );
    assert_eq!(
        at("01", "cust-004"),
        &json!({"tree_id": "coffee-break", "version": 42, "retailer_id": "retailer-01",
               "shopper_id": "cust-004", "root": "start", "nodes": [
            {"id": "start", "conditions": [], "experience": null, "children": ["basket"]},
            {"id": "basket",
             "conditions": [{"basket_contains": {"product_id": null, "category": "coffee",
                                                 "brand": null, "min_quantity": 1}}],
             "experience": {"kind": "product_recommendation",
                            "params": {"product_id": "r01-milk-0002", "reason": "bought_together"}},
             "children": ["basket/tension"]},
            {"id": "basket/tension", "conditions": [{"basket_value_at_least": {"cents": 500}}],
             "experience": {"kind": "tension_cart",
                            "params": {"reward_cents": 500, "threshold_cents": 2000}},
             "children": []}]})
    );

    // --dry-run prints exactly the published trees, in shopper order, and publishes nothing.
    let out = run_build(&dir, &["--dry-run"]);
    assert!(
        out.status.success(),
        "dry run failed: {}",
        text(&out.stderr)
    );
    let printed: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let values: Vec<String> = published.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(printed, values);
    assert_eq!(read_text_pairs(&brokers(), &topic).len(), 6);
    let dry: Value = serde_json::from_str(text(&out.stderr).lines().last().unwrap()).unwrap();
    assert_eq!(
        (dry["dry_run"].clone(), dry["trees"].clone()),
        (json!(true), json!(6))
    );
    let logged: u64 = store
        .client()
        .query(&format!("SELECT count() FROM {database}.campaigns_log"))
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(logged, 2, "a dry run records no campaign");

    // --limit stops after that many shoppers.
    let out = run_build(&dir, &["--dry-run", "--limit", "2"]);
    assert!(
        out.status.success(),
        "limited run failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), &printed[..2]);

    // Only the first campaign (retailer-00): the queries filter on the retailer; retailer-01's
    // shoppers get nothing, the others the same trees as before.
    let first = &CAMPAIGNS[..CAMPAIGNS.find("[[campaign]]\nid = \"expired\"").unwrap()];
    std::fs::write(dir.join("campaigns.toml"), first).unwrap();
    let out = run_build(&dir, &["--dry-run"]);
    assert!(
        out.status.success(),
        "retailer-00 run failed: {}",
        text(&out.stderr)
    );
    let want: Vec<&str> = values
        .iter()
        .filter(|v| !v.contains("\"retailer_id\":\"retailer-01\""))
        .map(|v| v.as_str())
        .collect();
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), want);
    let only: Value = serde_json::from_str(text(&out.stderr).lines().last().unwrap()).unwrap();
    assert_eq!(
        (only["shoppers"].clone(), only["shadowed"].clone()),
        (json!(4), json!(0))
    );
    // Another holdout share for a campaign already published: refused, nothing published.
    std::fs::write(
        dir.join("campaigns.toml"),
        CAMPAIGNS.replace("holdout_share = 0.25", "holdout_share = 0.3"),
    )
    .unwrap();
    let out = run_build(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "campaign autumn-pasta was published with holdout_share 0.25 at retailer-00; 0.3 now"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(read_text_pairs(&brokers(), &topic).len(), 6);

    // No campaign active: a loud failure that says which ended when, and nothing published.
    let expired = &CAMPAIGNS[CAMPAIGNS.find("[[campaign]]\nid = \"expired\"").unwrap()
        ..CAMPAIGNS
            .find("[[campaign]]\nid = \"coffee-break\"")
            .unwrap()];
    std::fs::write(dir.join("campaigns.toml"), expired).unwrap();
    let out = run_build(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "no campaign of campaigns.toml is active at 2026-10-01T00:00:00Z (expired ended at \
             2026-09-01T00:00:00Z)"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(read_text_pairs(&brokers(), &topic).len(), 6);
    std::fs::write(dir.join("campaigns.toml"), CAMPAIGNS).unwrap();

    // A topic that does not exist: a loud failure, not an auto-created uncompacted topic.
    let config = std::fs::read_to_string(dir.join("basketflow.toml")).unwrap();
    std::fs::write(
        dir.join("basketflow.toml"),
        config.replace(&topic, &format!("{topic}-missing")),
    )
    .unwrap();
    let out = run_build(&dir, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_build_publishes_one_exact_personalized_tree_per_active_shopper() {
    let database = Database::fresh(&clickhouse_url(), "bf_trees");
    let sink = ClickHouseStore::connect(&clickhouse_url(), &database, "default", "")
        .await
        .expect("connecting to ClickHouse; is the stack up? run scripts/stack up");
    sink.migrate().await.unwrap();
    let mut batch = batch();
    // Versions through 10 are committed; cust-007's version (time 20) stays uncommitted.
    let late: Vec<_> = batch
        .shopper_purchases
        .iter()
        .filter(|v| v.time > 10)
        .cloned()
        .collect();
    batch.shopper_purchases.retain(|v| v.time <= 10);
    batch.through = 10;
    sink.write_batch(&batch).await.unwrap();
    sink.write_versions(&Batch {
        through: 20,
        shopper_purchases: late,
        ..Batch::default()
    })
    .await
    .unwrap();

    let dir = std::env::temp_dir().join(database.name());
    std::fs::create_dir_all(&dir).unwrap();
    scenario(database.to_string(), dir.clone()).await;
    let _ = std::fs::remove_dir_all(&dir);
}
