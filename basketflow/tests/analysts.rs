//! Integration: analysts see only their retailer. Traffic of several retailers (one of them
//! reusing the others' ids) through the graph into ClickHouse; then `basketflow analysts
//! provision` gives two retailers a user each. On the real server (18.16), each user must read
//! exactly its retailer's rows of every analyst view, none of another retailer's, and be
//! refused the storage tables, `progress`, the unfiltered views, the filtered views of the
//! internal database, the other retailer's database, table functions and settings.
//!
//! Needs `scripts/stack up`: the server's configuration directory is `$BASKETFLOW_STACK_DIR/
//! clickhouse` (default `<repo>/.stack/clickhouse`), where the command writes its `users.d` and
//! `config.d` files (removed at the end, also on failure).

mod support;

use std::path::{Path, PathBuf};

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

/// The server's native port, from its configuration.
fn native_port(dir: &Path) -> u16 {
    let config = std::fs::read_to_string(dir.join("config.xml")).unwrap();
    let start = config.find("<tcp_port>").expect("a tcp_port") + "<tcp_port>".len();
    let end = start + config[start..].find("</tcp_port>").unwrap();
    config[start..end].trim().parse().unwrap()
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

/// Removes the files the command wrote when dropped.
struct Remove(Vec<PathBuf>);

impl Drop for Remove {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Rows of a TabSeparated answer, sorted.
fn sorted(text: &str) -> Vec<String> {
    let mut rows: Vec<String> = text.lines().map(String::from).collect();
    rows.sort();
    rows
}

#[test]
fn each_retailer_s_analysts_read_their_rows_of_every_view_and_nothing_else() {
    let stack = Stack::shared();
    let run = TestRun::create(&stack, "analysts", 8, &[("cleanup.policy", "compact")], "");
    let (db, suffix) = (&run.database, basketflow_testkit::unique_suffix());
    let traffic =
        Traffic::generate(20_261_203, 6_000, 400).with_copying_retailer("retailer-copy", 2);
    traffic.produce_trees(&stack, &run.trees);
    stack.produce(&run.events, &traffic.messages);
    run_caught_up(&run.config);

    // Two retailers get analysts; the others get nothing.
    let ch_dir = clickhouse_config_dir();
    let file = format!("basketflow-access-{db}.xml");
    let _files = Remove(vec![
        ch_dir.join("users.d").join(&file),
        ch_dir.join("config.d").join(&file),
    ]);
    let analysts = [
        (
            "retailer-00",
            format!("an_a_{suffix}"),
            format!("pa-{suffix}"),
        ),
        (
            "retailer-copy",
            format!("an_b_{suffix}"),
            format!("pb-{suffix}"),
        ),
    ];
    let tenants = stack.database(format!("{db}_tenants"));
    let mut access = format!(
        "clickhouse_config_dir = \"{}\"\nnative_address = \"127.0.0.1:{}\"\n",
        ch_dir.display(),
        native_port(&ch_dir)
    );
    for (retailer, user, password) in &analysts {
        stack.database(user.clone());
        access.push_str(&format!(
            "\n[[retailer]]\nretailer_id = \"{retailer}\"\nuser = \"{user}\"\ndatabase = \
             \"{user}\"\npassword_sha256_hex = \"{}\"\n",
            sha256_hex(password)
        ));
    }
    let access_file = run.dir.join("access.toml");
    std::fs::write(&access_file, access).unwrap();
    let out = basketflow()
        .args(["analysts", "provision", "--config"])
        .arg(&run.config)
        .arg("--access")
        .arg(&access_file)
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "provision failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(summary["database"], serde_json::json!(db));

    let url = &stack.clickhouse_url;
    let views = [
        "sold_products_daily",
        "shopper_purchases",
        "product_affinities",
        "baskets",
        "order_lines",
        "experience_decisions",
        "privacy_audit",
    ];
    for (i, (retailer, user, password)) in analysts.iter().enumerate() {
        let as_user = |sql: &str| query_as(url, user, password, sql);
        for view in views {
            let want = sorted(&stack.clickhouse(&format!(
                "SELECT * FROM {db}.{view} WHERE retailer_id = '{retailer}' FORMAT TabSeparated"
            )));
            if view != "privacy_audit" {
                assert!(!want.is_empty(), "{retailer} should have rows in {view}");
            }
            let got = as_user(&format!("SELECT * FROM {user}.{view} FORMAT TabSeparated"))
                .unwrap_or_else(|e| panic!("{user} reading {view}: {e}"));
            assert_eq!(sorted(&got), want, "{user}: {view}");
            let count = |sql: &str| as_user(sql).unwrap().trim().to_string();
            assert_eq!(
                count(&format!(
                    "SELECT count() FROM {user}.{view} WHERE retailer_id != '{retailer}'"
                )),
                "0"
            );
            assert_eq!(
                summary["retailers"][i]["rows"][view],
                serde_json::json!(want.len())
            );
        }
        // Everything else is refused, each query valid (the default user runs it) and
        // refused for the right reason.
        let other = &analysts[1 - i].1;
        let denied = "Code: 291"; // access denied to a database
        let readonly = "Code: 164"; // forbidden in readonly mode
        for (sql, why) in [
            (
                format!("SELECT count() FROM {db}.sold_products_daily"),
                denied,
            ),
            (
                format!("SELECT count() FROM {db}.sold_products_daily_versions"),
                denied,
            ),
            (format!("SELECT count() FROM {db}.progress"), denied),
            (
                format!("SELECT count() FROM {tenants}.baskets__{user}"),
                denied,
            ),
            (format!("SELECT count() FROM {other}.baskets"), denied),
            (
                format!("SELECT count() FROM remote('127.0.0.1', {db}.progress)"),
                readonly,
            ),
            (
                format!("SELECT count() FROM {user}.baskets SETTINGS prefer_localhost_replica = 1"),
                readonly,
            ),
        ] {
            stack.clickhouse(&sql);
            let refused = as_user(&sql);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains(why)),
                "{user} on {sql}: {refused:?}"
            );
        }
        let write = as_user(&format!(
            "CREATE TABLE {user}.mine (x UInt8) ENGINE = Memory"
        ));
        assert!(
            write.as_ref().is_err_and(|e| e.contains(readonly)),
            "{write:?}"
        );
        // Only its own database is listed.
        assert_eq!(
            sorted(&as_user("SELECT name FROM system.databases FORMAT TabSeparated").unwrap()),
            sorted(&format!("{user}\nsystem\n"))
        );
    }
    // A wrong password is refused.
    assert!(query_as(url, &analysts[0].1, "wrong", "SELECT 1").is_err());
}
