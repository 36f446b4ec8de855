//! Integration: reward contacts live apart, and are erased with their shopper. Against the real
//! broker and ClickHouse (`scripts/stack up`), with the binary's commands:
//!
//! * `rewards provision` writes the loader's user into the server's `users.d/` (the shared
//!   stack's configuration directory, `$BASKETFLOW_STACK_DIR/clickhouse`; the file is removed
//!   at the end): it reads and writes its database and is refused the graph's;
//! * `collect` serves events and reward contacts with keys of separate scopes (an event key
//!   cannot post a contact, a reward key cannot post events);
//! * `rewards run` stores the contacts; `privacy erase` makes it delete the shopper's rows
//!   (exact counts), produce a tombstone for the shopper's key and audit the request; a contact
//!   posted after the erasure is never stored, also when the loader replays everything;
//! * the graph runs on the same traffic: no table or view of any database on the server but a
//!   rewards store's contacts (`reward_contacts_log`, `reward_contacts`), and no topic of the
//!   run but the contacts one, holds an email address, and those two do.
//!
//! Retention and bad messages: `rewards/tests/loader.rs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use basketflow_testkit::clickhouse::query_as;
use basketflow_testkit::{free_port, unique_suffix, Stack};
use serde_json::{json, Value};
use support::{basketflow, run_caught_up, spawn, TestRun};

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

/// Removes a file when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sha256_hex(key: &str) -> String {
    basketflow_rewards::users::password_sha256_hex(key)
}

/// The rewards part of a test: its topic, database, user and password.
struct Rewards {
    topic: String,
    database: String,
    user: String,
    password: String,
}

impl Rewards {
    fn new(stack: &Stack, name: &str) -> Rewards {
        let suffix = unique_suffix();
        let r = Rewards {
            topic: format!("it-{name}-contacts-{suffix}"),
            database: stack.database(format!("bf_rewards_{name}_{suffix}")),
            user: format!("rw_{name}_{suffix}"),
            password: format!("pw-{suffix}"),
        };
        stack.topics().delete_later(r.topic.clone());
        r
    }

    fn section(&self) -> String {
        format!(
            "[rewards]\ntopic = \"{}\"\ndatabase = \"{}\"\nuser = \"{}\"\npassword = \"{}\"\n\
             metrics_listen = \"127.0.0.1:0\"\n",
            self.topic, self.database, self.user, self.password
        )
    }

    /// `basketflow rewards provision`: the users file (removed when the guard is dropped).
    fn provision(&self, config: &Path) -> Remove {
        let guard = Remove(
            clickhouse_config_dir()
                .join("users.d")
                .join(format!("basketflow-rewards-{}.xml", self.database)),
        );
        let out = basketflow()
            .args(["rewards", "provision", "--config"])
            .arg(config)
            .arg("--clickhouse-config-dir")
            .arg(clickhouse_config_dir())
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rewards provision: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["user"], self.user.as_str());
        assert_eq!(printed["database"], self.database.as_str());
        assert!(guard.0.exists());
        guard
    }

    /// Runs `basketflow rewards run --exit-when-caught-up` and returns its counts.
    fn load(&self, config: &Path, env: &[(&str, &str)]) -> Value {
        let out = basketflow()
            .args(["rewards", "run", "--exit-when-caught-up", "--config"])
            .arg(config)
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rewards run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "rewards run printed no counts ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `basketflow rewards export`: the contact ids and emails it lists.
    fn export(&self, config: &Path, shopper: &str) -> Vec<(String, String)> {
        let out = basketflow()
            .args([
                "rewards",
                "export",
                "--retailer",
                "r1",
                "--shopper",
                shopper,
                "--config",
            ])
            .arg(config)
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rewards export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["shopper_id"], shopper);
        doc["reward_contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["contact_id"].as_str().unwrap().to_string(),
                    c["email"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// `sql` as the rewards user.
    fn query(&self, sql: &str) -> Result<String, String> {
        query_as(
            &basketflow_testkit::stack::clickhouse_url(),
            &self.user,
            &self.password,
            sql,
        )
    }

    /// The `reward_contacts` view: `retailer, contact, shopper, email`, sorted.
    fn contacts(&self, stack: &Stack) -> Vec<String> {
        let mut rows: Vec<String> = stack
            .clickhouse(&format!(
                "SELECT retailer_id, contact_id, shopper_id, email FROM {}.reward_contacts \
                 FORMAT TabSeparated",
                self.database
            ))
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        rows
    }

    fn log_rows(&self, stack: &Stack) -> u64 {
        stack
            .clickhouse(&format!(
                "SELECT count() FROM {}.reward_contacts_log",
                self.database
            ))
            .trim()
            .parse()
            .unwrap()
    }

    /// `rewards_audit`: `request_id, retailer, kind, rows`, sorted.
    fn audit(&self, stack: &Stack) -> Vec<String> {
        let mut rows: Vec<String> = stack
            .clickhouse(&format!(
                "SELECT request_id, retailer_id, kind, rows_removed FROM {}.rewards_audit \
                 FORMAT TabSeparated",
                self.database
            ))
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        rows
    }
}

/// The records of `topic` (key, JSON payload or `None` for a tombstone), in order.
fn keyed_records(stack: &Stack, topic: &str) -> Vec<(String, Option<Value>)> {
    stack
        .read_to_end(topic)
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                r.payload
                    .as_ref()
                    .map(|p| serde_json::from_slice(p).unwrap()),
            )
        })
        .collect()
}

/// The topic forgets an erased shopper: `keys` keys start with `prefix` (retailer U+001F
/// shopper U+001F), the last record of each is a tombstone (so compaction removes every earlier
/// one), and no record after the last of those tombstones carries one of `emails`.
fn assert_erased_on_topic(
    records: &[(String, Option<Value>)],
    prefix: &str,
    emails: &[&str],
    keys: usize,
) {
    let theirs: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with(prefix))
        .collect();
    assert_eq!(theirs.len(), keys, "{theirs:?}");
    for key in &theirs {
        let last = records.iter().rev().find(|(k, _)| k == key).unwrap();
        assert_eq!(last.1, None, "the last record of {key:?} is a tombstone");
    }
    let last_tombstone = records
        .iter()
        .rposition(|(k, p)| k.starts_with(prefix) && p.is_none())
        .expect("a tombstone");
    for (k, p) in &records[last_tombstone + 1..] {
        let text = p.as_ref().map(Value::to_string).unwrap_or_default();
        assert!(
            !emails.iter().any(|e| text.contains(e)),
            "{k:?} after the last tombstone carries an erased email: {text}"
        );
    }
}

/// Counts of a loader run, the ones not listed being 0.
fn counts(pairs: &[(&str, u64)]) -> Value {
    let mut c = json!({
        "contacts_stored": 0, "contacts_invalid": 0, "contacts_of_erased_shoppers": 0,
        "contacts_expired": 0, "tombstones_read": 0, "tombstones_produced": 0, "erasures_applied": 0,
        "erasures_already_applied": 0, "requests_invalid": 0, "rows_erased": 0, "rows_expired": 0,
    });
    for (k, v) in pairs {
        assert!(c.get(*k).is_some(), "no count {k}");
        c[*k] = json!(v);
    }
    c
}

/// An HTTP answer: status and body.
fn post(url: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--data-binary",
        body,
    ]);
    for (name, value) in headers {
        curl.arg("-H").arg(format!("{name}: {value}"));
    }
    let out = curl.arg(url).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (status.parse().unwrap(), value)
}

fn contact(id: &str, shopper: &str, email: &str) -> String {
    json!({
        "contact_id": id, "retailer_id": "r1", "shopper_id": shopper, "email": email,
        "campaign_id": "win-your-basket", "order_id": format!("o-{shopper}"),
        "submitted_at": "2026-12-04T10:00:00Z",
    })
    .to_string()
}

fn event(id: &str, shopper: &str, body: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","retailer_id":"r1","shopper_id":"{shopper}","occurred_at":"2026-12-04T09:00:00Z",{body}}}"#
    )
}

fn paid(id: &str, shopper: &str) -> String {
    event(
        id,
        shopper,
        &format!(
            r#""type":"order_paid","order_id":"o-{shopper}","lines":[{{"product_id":"p1","category":"pasta","quantity":2,"unit_price_cents":199}}],"total_cents":398"#
        ),
    )
}

/// Waits (at most 60 s) until the collector at `base` answers `/health`.
fn wait_for_collector(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("curl")
            .args(["-sS", "--fail", &format!("{base}/health")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "the collector did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every email address in `text` (a row or a message), by the ingest's own rule.
fn has_email(text: &str) -> bool {
    basketflow_ingest::pii::looks_like_email(text)
}

/// The rows holding an email address in every table and view of every database of the server
/// (but `system`), except the contacts of a rewards store (`reward_contacts_log` and its view
/// `reward_contacts`, in a database holding the rewards schema: this test's, a local
/// `basketflow_rewards`, another test's). Tables dropped meanwhile (other tests') are skipped.
/// Also returns the tables it read (`db.table`), so that a scan that read nothing cannot pass.
fn emails_outside_reward_contacts(stack: &Stack) -> (Vec<String>, Vec<String>) {
    let tables = stack.clickhouse(
        "SELECT database, name FROM system.tables WHERE database != 'system' \
         AND engine NOT LIKE '%MaterializedView%' FORMAT TabSeparated",
    );
    let stores: Vec<&str> = tables
        .lines()
        .filter_map(|l| l.strip_suffix("\treward_contacts_log"))
        .collect();
    let url = basketflow_testkit::stack::clickhouse_url();
    let (mut found, mut read) = (Vec::new(), Vec::new());
    for line in tables.lines() {
        let (db, table) = line.split_once('\t').unwrap();
        if stores.contains(&db) && ["reward_contacts_log", "reward_contacts"].contains(&table) {
            continue;
        }
        let Ok(rows) = basketflow_testkit::clickhouse::query(
            &url,
            &format!("SELECT * FROM {db}.{table} FORMAT JSONEachRow"),
        ) else {
            continue; // dropped by its test meanwhile
        };
        read.push(format!("{db}.{table}"));
        found.extend(
            rows.lines()
                .filter(|r| has_email(r))
                .map(|r| format!("{db}.{table}: {r}")),
        );
    }
    (found, read)
}

#[test]
fn a_reward_contact_lives_apart_and_is_erased_with_its_shopper() {
    let stack = Stack::shared();
    let rewards = Rewards::new(&stack, "erase");
    let port = free_port();
    let (event_key, reward_key) = ("ek-tracker-r1", "rk-backend-r1");
    let extra = format!(
        "[collector]\nlisten = \"127.0.0.1:{port}\"\nauth = \"keys\"\n\
         [[collector.retailers]]\nid = \"r1\"\nkey_sha256 = \"{}\"\n\
         [[collector.reward_keys]]\nid = \"r1\"\nkey_sha256 = \"{}\"\n{}",
        sha256_hex(event_key),
        sha256_hex(reward_key),
        rewards.section()
    );
    let run = TestRun::create(
        &stack,
        "rewards",
        8,
        &[("cleanup.policy", "compact")],
        &extra,
    );
    let privacy_topic = format!("{}-privacy", run.events);
    stack.create_topic(&privacy_topic, 1, "delete");
    let config = run.config.clone();

    // The loader's user: its database only.
    let _users = rewards.provision(&config);
    assert_eq!(
        rewards
            .query(&format!(
                "SELECT count() FROM {}.reward_contacts",
                rewards.database
            ))
            .unwrap(),
        "0\n"
    );
    // The first run creates the topic (compacted, deleted after the retention period).
    assert_eq!(rewards.load(&config, &[]), counts(&[]));
    let described = Command::new("kcat")
        .args([
            "-b",
            &basketflow_testkit::stack::brokers(),
            "-L",
            "-t",
            &rewards.topic,
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&described.stdout).contains("with 1 partitions"));

    // The collector: events with the event key, contacts with the reward key, never crossed.
    let _collector = spawn(&["collect", "--config", config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    wait_for_collector(&base);
    let contacts_url = format!("{base}/v1/reward-contacts");
    let events_url = format!("{base}/v1/events");
    let bearer = |key: &str| format!("Bearer {key}");
    let (jane, max) = ("jane.doe@shop.example", "max+prize@shop.example");

    let c1 = contact("c1", "s1", jane);
    let (status, answer) = post(&contacts_url, &[("authorization", &bearer(event_key))], &c1);
    assert_eq!(status, 401, "an event key posts no contact: {answer}");
    assert_eq!(answer["error"], "unauthorized");
    let (status, answer) = post(
        &events_url,
        &[("authorization", &bearer(reward_key))],
        &paid("e1", "s1"),
    );
    assert_eq!(status, 401, "a reward key sends no event: {answer}");
    let (status, _) = post(&format!("{contacts_url}?key={reward_key}"), &[], &c1);
    assert_eq!(status, 401, "a reward key in the query string is not taken");

    let events = [
        paid("e1", "s1"),
        paid("e2", "s2"),
        event(
            "e3",
            "s1",
            &format!(
                r#""type":"page_viewed","url":"https://shop.example/","page_type":"home","email":"{jane}""#
            ),
        ),
    ];
    let (status, answer) = post(
        &events_url,
        &[("authorization", &bearer(event_key))],
        &format!("[{}]", events.join(",")),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["results"][2]["code"], "pii", "{answer}");

    // s1 has two contacts (two prizes): two keys, each kept by compaction.
    let jane2 = "jane.doe+second@shop.example";
    for (body, id) in [
        (&c1, "c1"),
        (&contact("c2", "s2", max), "c2"),
        (&contact("c4", "s1", jane2), "c4"),
    ] {
        let (status, answer) = post(&contacts_url, &[("x-api-key", reward_key)], body);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({"status": "accepted", "contact_id": id}));
    }
    let bad =
        contact("c9", "s1", jane).replace("\"campaign_id\"", "\"name\":\"Jane\",\"campaign_id\"");
    let (status, answer) = post(&contacts_url, &[("x-api-key", reward_key)], &bad);
    assert_eq!(
        (status, &answer["error"], &answer["field"]),
        (400, &json!("unknown_field"), &json!("name"))
    );

    // Stored, exactly.
    assert_eq!(
        rewards.load(&config, &[]),
        counts(&[("contacts_stored", 3)])
    );
    assert_eq!(
        rewards.contacts(&stack),
        [
            format!("r1\tc1\ts1\t{jane}"),
            format!("r1\tc2\ts2\t{max}"),
            format!("r1\tc4\ts1\t{jane2}")
        ]
    );
    assert_eq!(
        rewards.export(&config, "s1"),
        [
            ("c1".to_string(), jane.to_string()),
            ("c4".to_string(), jane2.to_string())
        ]
    );
    // Nothing new: the positions are durable.
    assert_eq!(rewards.load(&config, &[]), counts(&[]));
    assert_eq!(rewards.log_rows(&stack), 3);

    // The graph runs on the same traffic; the rewards user cannot touch its database.
    run_caught_up(&config);
    let graph_db = &run.database;
    for sql in [
        format!("SELECT count() FROM {graph_db}.order_lines"),
        format!("SELECT count() FROM {graph_db}.order_lines_versions"),
        format!(
            "INSERT INTO {graph_db}.privacy_audit_log SELECT * FROM {graph_db}.privacy_audit_log"
        ),
        format!("CREATE TABLE {graph_db}.stolen (email String) ENGINE = Memory"),
        format!(
            "SELECT count() FROM {}.reward_contacts WHERE shopper_id IN \
             (SELECT shopper_id FROM {graph_db}.order_lines)",
            rewards.database
        ),
    ] {
        let refused = rewards.query(&sql).expect_err(&sql);
        assert!(
            refused.contains("Access denied to database"),
            "{sql}: {refused}"
        );
    }
    assert_eq!(
        stack.clickhouse(&format!(
            "SELECT count() FROM {graph_db}.order_lines WHERE shopper_id = 's1'"
        )),
        "1\n",
        "the graph has the shopper's order"
    );

    // The erasure: the contacts are gone, a tombstone per contact key is on the topic, the
    // audit has it.
    let out = basketflow()
        .args([
            "privacy",
            "erase",
            "--retailer",
            "r1",
            "--shopper",
            "s1",
            "--config",
        ])
        .arg(&config)
        .env_remove("BASKETFLOW_CLICKHOUSE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let request: Value = serde_json::from_slice(&out.stdout).unwrap();
    let request_id = request["request_id"].as_str().unwrap().to_string();
    assert_eq!(
        rewards.load(&config, &[]),
        counts(&[
            ("erasures_applied", 1),
            ("rows_erased", 2),
            ("tombstones_produced", 2)
        ])
    );
    assert_eq!(rewards.contacts(&stack), [format!("r1\tc2\ts2\t{max}")]);
    assert_eq!(rewards.log_rows(&stack), 1);
    assert_eq!(rewards.export(&config, "s1"), []);
    assert_eq!(
        rewards.audit(&stack),
        [format!("{request_id}\tr1\terasure\t2")]
    );
    let on_topic = stack.read_to_end(&rewards.topic);
    let keyed = keyed_records(&stack, &rewards.topic);
    assert_eq!(
        keyed
            .iter()
            .map(|(k, p)| (k.as_str(), p.as_ref().map(|p| p["contact_id"].clone())))
            .collect::<Vec<_>>(),
        [
            ("r1\u{1f}s1\u{1f}c1", Some(json!("c1"))),
            ("r1\u{1f}s2\u{1f}c2", Some(json!("c2"))),
            ("r1\u{1f}s1\u{1f}c4", Some(json!("c4"))),
            ("r1\u{1f}s1\u{1f}c1", None),
            ("r1\u{1f}s1\u{1f}c4", None),
        ],
        "the contacts with their keys (one per contact), then the erasure's tombstones"
    );
    assert_erased_on_topic(&keyed, "r1\u{1f}s1\u{1f}", &[jane, jane2], 2);

    // A contact of the erased shopper posted later is accepted by the collector (it cannot
    // know) and never stored.
    let (status, _) = post(
        &contacts_url,
        &[("x-api-key", reward_key)],
        &contact("c3", "s1", jane),
    );
    assert_eq!(status, 200);
    assert_eq!(
        rewards.load(&config, &[]),
        counts(&[
            ("contacts_of_erased_shoppers", 1),
            ("tombstones_read", 2),
            ("tombstones_produced", 1)
        ])
    );
    assert_eq!(rewards.contacts(&stack), [format!("r1\tc2\ts2\t{max}")]);
    // ... and does not outlive the erasure in Kafka: the loader tombstoned its key when it
    // dropped it (else the newest record of that key, c3, would win over compaction).
    assert_erased_on_topic(
        &keyed_records(&stack, &rewards.topic),
        "r1\u{1f}s1\u{1f}",
        &[jane, jane2],
        3,
    );

    // A replay of everything (positions lost) brings nothing of the shopper back and does not
    // apply the erasure twice.
    stack.clickhouse(&format!(
        "TRUNCATE TABLE {}.loader_positions",
        rewards.database
    ));
    assert_eq!(
        rewards.load(&config, &[]),
        counts(&[
            ("contacts_stored", 1),
            ("contacts_of_erased_shoppers", 3),
            ("tombstones_read", 3),
            ("tombstones_produced", 3),
            ("erasures_already_applied", 1),
        ])
    );
    assert_erased_on_topic(
        &keyed_records(&stack, &rewards.topic),
        "r1\u{1f}s1\u{1f}",
        &[jane, jane2],
        3,
    );
    assert_eq!(rewards.contacts(&stack), [format!("r1\tc2\ts2\t{max}")]);
    assert_eq!(
        rewards.log_rows(&stack),
        2,
        "c2 twice: the view shows it once"
    );
    assert_eq!(rewards.audit(&stack).len(), 1);

    // The graph applies the erasure too; then the PII scans: the emails are in the rewards
    // database and topic, nowhere else.
    run_caught_up(&config);
    assert_eq!(
        stack.clickhouse(&format!(
            "SELECT count() FROM {graph_db}.order_lines WHERE shopper_id = 's1'"
        )),
        "0\n"
    );
    let in_rewards = stack.clickhouse(&format!(
        "SELECT * FROM {}.reward_contacts_log FORMAT JSONEachRow",
        rewards.database
    ));
    assert!(
        in_rewards.contains(max) && !in_rewards.contains(jane) && !in_rewards.contains(jane2),
        "{in_rewards}"
    );
    let (found, read) = emails_outside_reward_contacts(&stack);
    assert_eq!(found, Vec::<String>::new());
    for table in [
        format!("{graph_db}.order_lines_versions"),
        format!("{graph_db}.privacy_audit_log"),
        format!("{}.rewards_audit", rewards.database),
        format!("{}.erasing", rewards.database),
    ] {
        assert!(read.contains(&table), "the scan read {table}: {read:?}");
    }
    assert!(on_topic.iter().any(|r| r
        .payload
        .as_ref()
        .is_some_and(|p| has_email(&String::from_utf8_lossy(p)))));
    for topic in [
        &run.events,
        &run.decisions,
        &run.rejected,
        &run.trees,
        &privacy_topic,
        &format!("{}-progress", run.decisions),
    ] {
        for r in stack.read_to_end(topic) {
            for bytes in [&r.key, &r.payload].into_iter().flatten() {
                assert!(
                    !has_email(&String::from_utf8_lossy(bytes)),
                    "{topic} holds an email address"
                );
            }
        }
    }
}

/// `rewards provision` refuses an empty password (anyone reaching ClickHouse would read every
/// email) unless told `--insecure-local`; nothing is written when it refuses. The user it
/// writes may connect from this host only, by default.
#[test]
fn provision_refuses_an_empty_password_unless_insecure_local() {
    let stack = Stack::shared();
    let mut rewards = Rewards::new(&stack, "nopw");
    rewards.password = String::new();
    let dir = std::env::temp_dir().join(format!("bf-rewards-nopw-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("basketflow.toml");
    std::fs::write(&config, rewards.section()).unwrap();
    let file = clickhouse_config_dir()
        .join("users.d")
        .join(format!("basketflow-rewards-{}.xml", rewards.database));
    let _guard = Remove(file.clone());
    let provision = |extra: &[&str]| {
        basketflow()
            .args(["rewards", "provision", "--config"])
            .arg(&config)
            .arg("--clickhouse-config-dir")
            .arg(clickhouse_config_dir())
            .args(extra)
            .env_remove("BASKETFLOW_CLICKHOUSE_URL")
            .env_remove("BASKETFLOW_REWARDS_PASSWORD")
            .output()
            .unwrap()
    };
    let out = provision(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an empty password was accepted");
    assert!(
        stderr.contains("password is empty") && stderr.contains("--insecure-local"),
        "{stderr}"
    );
    assert!(!file.exists(), "nothing written when refused");

    let out = provision(&["--insecure-local"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(&file).unwrap();
    assert!(
        xml.contains("<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"),
        "{xml}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
