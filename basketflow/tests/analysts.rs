//! Integration: analysts see only their retailer. Traffic of several retailers (one reusing
//! the others' ids) through the graph into ClickHouse; then `basketflow analysts provision`
//! gives two retailers a user and a copy each. On the real server (18.16), each user must read
//! exactly its retailer's rows of every analyst view, also after more traffic and an erasure
//! (the copies follow the writer), and be refused everything else: the main database, the
//! other copy, table functions, settings, writes, subqueries on the main database. A retailer
//! taken out of the access file loses its copy and its user.
//!
//! Needs `scripts/stack up`: the server's configuration directory is `$BASKETFLOW_STACK_DIR/
//! clickhouse` (default `<repo>/.stack/clickhouse`), where the command writes its `users.d`
//! file (removed at the end, also on failure).

mod support;

use std::path::{Path, PathBuf};

use basketflow_sinks::clickhouse::schema::{PER_SHOPPER_TABLES, VIEWS};
use basketflow_testkit::clickhouse::query_as;
use basketflow_testkit::Stack;
use support::{basketflow, run_caught_up, GraphStack, TestRun, Traffic};

/// The shared stack's ClickHouse configuration directory.
fn clickhouse_config_dir() -> PathBuf {
    let stack = std::env::var("BASKETFLOW_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.stack"));
    let dir = stack.join("clickhouse");
    assert!(
        dir.join("config.xml").exists(),
        "no ClickHouse configuration in {}: run scripts/stack up",
        dir.display()
    );
    dir
}

/// SHA-256 of `password`, hex (as `sha256sum` prints it).
fn sha256_hex(password: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(password.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum runs");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Removes the file the command wrote when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Rows of a TabSeparated answer, sorted.
fn sorted(text: &str) -> Vec<String> {
    let mut rows: Vec<String> = text.lines().map(String::from).collect();
    rows.sort();
    rows
}

/// Every analyst view.
fn views() -> impl Iterator<Item = &'static str> {
    VIEWS.iter().map(|(name, _)| *name)
}

/// One retailer's analyst: retailer, user (also its copy's database), password.
struct Analyst {
    retailer: String,
    user: String,
    password: String,
}

impl Analyst {
    fn query(&self, url: &str, sql: &str) -> Result<String, String> {
        query_as(url, &self.user, &self.password, sql)
    }
}

/// Writes the access file for `analysts` and runs `basketflow analysts provision`, waiting at
/// most `wait_seconds` for the copies to be filled; its exit status and JSON.
fn provision(run: &TestRun, analysts: &[&Analyst], wait_seconds: u64) -> (i32, serde_json::Value) {
    let mut access = format!(
        "clickhouse_config_dir = \"{}\"\n",
        clickhouse_config_dir().display()
    );
    for a in analysts {
        access.push_str(&format!(
            "\n[[retailer]]\nretailer_id = \"{}\"\nuser = \"{}\"\ndatabase = \"{}\"\n\
             password_sha256_hex = \"{}\"\n",
            a.retailer,
            a.user,
            a.user,
            sha256_hex(&a.password)
        ));
    }
    let file = run.dir.join("access.toml");
    std::fs::write(&file, access).unwrap();
    let out = basketflow()
        .args(["analysts", "provision", "--config"])
        .arg(&run.config)
        .arg("--access")
        .arg(&file)
        .args(["--wait-seconds", &wait_seconds.to_string()])
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .output()
        .unwrap();
    let status = out.status.code().expect("an exit status");
    assert!(
        status == 0 || status == 2,
        "provision failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    (status, json)
}

/// Every view, read by each analyst, is the main view's rows of its retailer.
fn assert_each_reads_its_rows(stack: &Stack, db: &str, analysts: &[&Analyst], when: &str) {
    for a in analysts {
        for view in views() {
            let want = sorted(&stack.clickhouse(&format!(
                "SELECT * FROM {db}.{view} WHERE retailer_id = '{}' FORMAT TabSeparated",
                a.retailer
            )));
            if view != "privacy_audit" {
                assert!(
                    !want.is_empty(),
                    "{} should have rows in {view}",
                    a.retailer
                );
            }
            let got = a
                .query(
                    &stack.clickhouse_url,
                    &format!("SELECT * FROM {}.{view} FORMAT TabSeparated", a.user),
                )
                .unwrap_or_else(|e| panic!("{} reading {view}: {e}", a.user));
            assert_eq!(sorted(&got), want, "{} {when}: {view}", a.user);
        }
    }
}

#[test]
fn each_retailer_s_analysts_read_their_rows_of_every_view_and_nothing_else() {
    let stack = Stack::shared();
    // Orders settle 1 ms after their payment is read, so that the cancellations sent below
    // are late inputs and `late_events` has rows of every retailer too.
    let run = TestRun::create(
        &stack,
        "analysts",
        8,
        &[("cleanup.policy", "compact")],
        "[graph]\nsettlement_ms = 1\n",
    );
    let (db, suffix) = (&run.database, basketflow_testkit::unique_suffix());
    let url = stack.clickhouse_url.clone();
    let traffic = Traffic::generate(20_261_203, 6_000, 400)
        .with_copying_retailer("retailer-copy", 2)
        // Games that one paid order in 2 wins: every retailer has rows in game_winners.
        .with_game(2, 5_000);
    let (first, second) = traffic.messages.split_at(traffic.messages.len() / 2);
    traffic.produce_trees(&stack, &run.trees);
    stack.produce(&run.events, first);
    run_caught_up(&run.config);
    // The test's trees are campaign "it": record it for every retailer with decisions, as
    // `trees build` records its campaigns, so that `campaigns` and `campaign_uplift` have rows
    // of every retailer too.
    stack.clickhouse(&format!(
        "INSERT INTO {db}.campaigns_log SELECT DISTINCT 'it', retailer_id, 1, 'pasta', \
         emptyArrayString(), 0, 86400, now() FROM {db}.experience_decisions"
    ));
    // One paid order of each retailer cancelled long after it settled (read by the next run).
    let paid = stack.clickhouse(&format!(
        "SELECT retailer_id, any(order_id), any(shopper_id) FROM {db}.order_lines \
         WHERE shopper_id != '' GROUP BY retailer_id FORMAT TabSeparated"
    ));
    let cancellations: Vec<(String, Vec<u8>)> = paid
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let (retailer, order, shopper) = (f[0], f[1], f[2]);
            let event = basketflow_testkit::events::ev_at(
                retailer,
                &format!("late-cancel-{order}"),
                shopper,
                "2026-12-03T10:00:00Z",
                basketflow_testkit::events::cancelled(order),
            );
            (shopper.to_string(), serde_json::to_vec(&event).unwrap())
        })
        .collect();
    assert!(
        cancellations.len() >= 3,
        "paid orders of every retailer: {paid}"
    );
    let pairs: Vec<(&[u8], &[u8])> = cancellations
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
        .collect();
    stack.produce_pairs(&run.events, &pairs);

    let _file = Remove(
        clickhouse_config_dir()
            .join("users.d")
            .join(format!("basketflow-analysts-{db}.xml")),
    );
    let a = Analyst {
        retailer: "retailer-00".into(),
        user: format!("an_a_{suffix}"),
        password: format!("pa-{suffix}"),
    };
    let b = Analyst {
        retailer: "retailer-copy".into(),
        user: format!("an_b_{suffix}"),
        password: format!("pb-{suffix}"),
    };
    let c = Analyst {
        retailer: stack
            .clickhouse(&format!(
                "SELECT min(retailer_id) FROM {db}.sold_products_daily \
                 WHERE retailer_id NOT IN ('retailer-00', 'retailer-copy')"
            ))
            .trim()
            .to_string(),
        user: format!("an_c_{suffix}"),
        password: format!("pc-{suffix}"),
    };
    assert!(!c.retailer.is_empty(), "the traffic has a third retailer");
    for x in [&a, &b, &c] {
        stack.database(x.user.clone()); // dropped with the stack
    }
    // Provisioned while the graph is down: registered, not filled, no user yet (status 2).
    let (status, summary) = provision(&run, &[&a, &b], 1);
    assert_eq!(status, 2, "{summary}");
    assert_eq!(summary["copies"][0]["filled"], serde_json::json!(false));
    assert_eq!(summary["copies"][1]["filled"], serde_json::json!(false));
    let unknown = a.query(&url, "SELECT 1");
    assert!(
        unknown.as_ref().is_err_and(|e| e.contains("Code: 192")),
        "no user before the copy is filled: {unknown:?}"
    );
    // The graph's writer fills them when it starts; then the users are written.
    run_caught_up(&run.config);
    let (status, summary) = provision(&run, &[&a, &b], 60);
    assert_eq!(status, 0, "{summary}");
    assert_eq!(summary["database"], serde_json::json!(db));
    for (i, x) in [&a, &b].iter().enumerate() {
        assert_eq!(summary["copies"][i]["filled"], serde_json::json!(true));
        for view in views() {
            let n: usize = stack
                .clickhouse(&format!(
                    "SELECT count() FROM {db}.{view} WHERE retailer_id = '{}'",
                    x.retailer
                ))
                .trim()
                .parse()
                .unwrap();
            assert_eq!(summary["copies"][i]["rows"][view], serde_json::json!(n));
        }
    }
    assert_each_reads_its_rows(&stack, db, &[&a, &b], "after the fill");

    // More traffic and an erasure of one of a's shoppers: the copies follow the writer.
    let victim = stack
        .clickhouse(&format!(
            "SELECT shopper_id FROM {db}.shopper_purchases WHERE retailer_id = 'retailer-00' \
             ORDER BY shopper_id LIMIT 1"
        ))
        .trim()
        .to_string();
    assert!(!victim.is_empty());
    let out = basketflow()
        .args(["privacy", "erase", "--retailer", "retailer-00", "--shopper"])
        .arg(&victim)
        .arg("--config")
        .arg(&run.config)
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.produce(&run.events, second);
    run_caught_up(&run.config);
    assert_each_reads_its_rows(&stack, db, &[&a, &b], "after more traffic and an erasure");
    for table in PER_SHOPPER_TABLES {
        assert_eq!(
            stack
                .clickhouse(&format!(
                    "SELECT count() FROM {}.{table} WHERE shopper_id = '{victim}'",
                    a.user
                ))
                .trim(),
            "0",
            "the erased shopper in {}.{table}",
            a.user
        );
    }
    assert_eq!(
        a.query(
            &url,
            &format!("SELECT count() FROM {}.privacy_audit", a.user)
        )
        .unwrap()
        .trim(),
        "1",
        "the erasure's audit row is in a's copy"
    );
    assert_eq!(
        b.query(
            &url,
            &format!("SELECT count() FROM {}.privacy_audit", b.user)
        )
        .unwrap()
        .trim(),
        "0",
        "and not in b's"
    );
    // The erasure's mutations name no shopper: every user reads its own database's mutations
    // (a's copy has the erasure's; b's none, the shopper is not b's).
    let a_mutations = a
        .query(
            &url,
            &format!(
                "SELECT count() FROM system.mutations WHERE database = '{}'",
                a.user
            ),
        )
        .unwrap();
    assert_ne!(a_mutations.trim(), "0", "a sees its copy's mutations");
    for x in [&a, &b] {
        assert_eq!(
            x.query(
                &url,
                &format!(
                    "SELECT count() FROM system.mutations WHERE position(command, '{victim}') > 0"
                )
            )
            .unwrap()
            .trim(),
            "0",
            "{} finds the erased shopper in system.mutations",
            x.user
        );
    }
    assert_eq!(
        stack
            .clickhouse(&format!(
                "SELECT count() FROM system.mutations WHERE position(command, '{victim}') > 0"
            ))
            .trim(),
        "0",
        "no statement names the erased shopper"
    );

    // A retailer added while the graph runs: its writer fills the copy between two batches.
    let graph = support::spawn(&["run", "--config", run.config.to_str().unwrap()]);
    let (status, summary) = provision(&run, &[&a, &b, &c], 120);
    assert_eq!(status, 0, "{summary}");
    assert_eq!(summary["copies"][2]["filled"], serde_json::json!(true));
    assert_each_reads_its_rows(&stack, db, &[&a, &b, &c], "c added while the graph runs");
    drop(graph);

    // Everything else is refused, each query valid (the default user runs it) and refused for
    // the right reason.
    let denied = "Code: 291"; // access denied to a database
    let readonly = "Code: 164"; // forbidden in readonly mode
    for (x, other) in [(&a, &b), (&b, &a)] {
        let me = &x.user;
        for (sql, why) in [
            (
                format!("SELECT count() FROM {db}.sold_products_daily"),
                denied,
            ),
            (format!("SELECT count() FROM {db}.baskets_versions"), denied),
            (format!("SELECT count() FROM {db}.progress"), denied),
            (
                format!("SELECT count() FROM {db}.copy__{me}__baskets_versions"),
                denied,
            ),
            (
                format!("SELECT count() FROM {}.baskets", other.user),
                denied,
            ),
            (
                format!(
                    "SELECT count() FROM {me}.baskets WHERE shopper_id IN \
                     (SELECT shopper_id FROM {db}.baskets)"
                ),
                denied,
            ),
            (
                format!("SELECT count() FROM remote('127.0.0.1', {db}.progress)"),
                readonly,
            ),
            (
                format!("SELECT count() FROM {me}.baskets SETTINGS max_threads = 1"),
                readonly,
            ),
            (
                format!("INSERT INTO {me}.progress (time) VALUES (1)"),
                readonly,
            ),
        ] {
            if !sql.starts_with("INSERT") {
                stack.clickhouse(&sql);
            }
            let refused = x.query(&url, &sql);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(why)),
                "{me} on {sql}: {refused:?}"
            );
        }
        assert_eq!(
            sorted(
                &x.query(
                    &url,
                    "SELECT name FROM system.databases FORMAT TabSeparated"
                )
                .unwrap()
            ),
            sorted(&format!("{me}\nsystem\n")),
            "{me} lists only its own database"
        );
    }
    assert!(a.query(&url, "SELECT 1").is_ok());
    assert!(query_as(&url, &a.user, "wrong", "SELECT 1").is_err());

    // The copies' progress tells their committed time, not the platform's volumes or offsets.
    for x in [&a, &b, &c] {
        assert_eq!(
            stack
                .clickhouse(&format!(
                    "SELECT countIf(note != '' OR positions != ''), count() > 0 FROM {}.progress",
                    x.user
                ))
                .trim(),
            "0\t1",
            "{}.progress",
            x.user
        );
    }
    // A new copy may not take a database that exists with tables.
    let taken = stack.database(format!("an_d_{suffix}"));
    stack.clickhouse(&format!("CREATE DATABASE {taken}"));
    stack.clickhouse(&format!("CREATE TABLE {taken}.t (x UInt8) ENGINE = Memory"));
    let d = Analyst {
        retailer: "retailer-00".into(),
        user: taken.clone(),
        password: "pd".into(),
    };
    let file = run.dir.join("taken.toml");
    std::fs::write(
        &file,
        format!(
            "clickhouse_config_dir = \"{}\"\n[[retailer]]\nretailer_id = \"retailer-00\"\n\
             user = \"{}\"\ndatabase = \"{}\"\npassword_sha256_hex = \"{}\"\n",
            clickhouse_config_dir().display(),
            d.user,
            d.user,
            sha256_hex(&d.password)
        ),
    )
    .unwrap();
    let refused = basketflow()
        .args(["analysts", "provision", "--config"])
        .arg(&run.config)
        .arg("--access")
        .arg(&file)
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains(&format!("database \"{taken}\" exists and holds tables")),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // a is taken out of the file while the graph is down: its user goes at once (before its
    // copy), the copy is marked, and the writer takes it out when the graph runs.
    let (status, summary) = provision(&run, &[&b, &c], 1);
    assert_eq!(status, 2, "{summary}");
    assert_eq!(summary["removed"], serde_json::json!([a.user.clone()]));
    assert_eq!(
        summary["removal_pending"],
        serde_json::json!([a.user.clone()])
    );
    let gone = a.query(&url, "SELECT 1");
    assert!(
        gone.as_ref().is_err_and(|e| e.contains("Code: 192")),
        "a's user is gone before its copy: {gone:?}"
    );
    assert!(b.query(&url, "SELECT 1").is_ok(), "b keeps its user");
    run_caught_up(&run.config);
    let (status, summary) = provision(&run, &[&b, &c], 60);
    assert_eq!(status, 0, "{summary}");
    assert_eq!(summary["removal_pending"], serde_json::json!([]));
    assert_eq!(
        stack
            .clickhouse(&format!(
                "SELECT count() FROM system.databases WHERE name = '{}'",
                a.user
            ))
            .trim(),
        "0"
    );
    assert_eq!(
        stack
            .clickhouse(&format!(
                "SELECT count() FROM system.tables WHERE database = '{db}' AND \
                 startsWith(name, 'copy__{}__')",
                a.user
            ))
            .trim(),
        "0",
        "a's feeders are dropped"
    );
    assert_each_reads_its_rows(&stack, db, &[&b, &c], "after a was taken out");
}
