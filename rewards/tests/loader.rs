//! Integration: the loader against the real broker and ClickHouse (`scripts/stack up`), as its
//! own ClickHouse user (written into the shared stack's `users.d/`, removed at the end):
//! retention deletes the contacts older than their retailer's period and audits it, a contact
//! read already past its period is dropped, and bad messages on the topic are counted and
//! skipped; a loader left running stores what arrives, serves its counts on `/metrics`, applies
//! retention periodically and stops when asked. (Erasure, the collector and the PII scans:
//! `basketflow/tests/rewards.rs`.)

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use basketflow_rewards::loader::{self, LoaderCounts, LoaderSettings};
use basketflow_rewards::store::{Erased, StoredContact};
use basketflow_rewards::users;
use basketflow_testkit::kafka::test_producer;
use basketflow_testkit::stack::{brokers, clickhouse_url};
use basketflow_testkit::{produce, unique_suffix, Stack};
use basketflow_vocab::privacy::Retention;

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

/// This host only: the default `[rewards] networks`.
fn local() -> Vec<String> {
    users::DEFAULT_NETWORKS
        .iter()
        .map(|n| n.to_string())
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn contact(id: &str, retailer: &str) -> String {
    format!(
        r#"{{"contact_id":"{id}","retailer_id":"{retailer}","shopper_id":"s1","email":"{id}@shop.example","campaign_id":"game","submitted_at":"2026-12-04T10:00:00Z"}}"#
    )
}

fn sorted(text: String) -> Vec<String> {
    let mut rows: Vec<String> = text.lines().map(String::from).collect();
    rows.sort();
    rows
}

#[test]
fn retention_deletes_old_contacts_and_bad_messages_are_skipped() {
    let stack = Stack::shared();
    let suffix = unique_suffix();
    let contacts_topic = format!("it-rewards-loader-contacts-{suffix}");
    let privacy_topic = format!("it-rewards-loader-privacy-{suffix}");
    stack.topics().delete_later(contacts_topic.clone());
    stack.create_topic(&privacy_topic, 1, "delete");
    let database = stack.database(format!("bf_rewards_loader_{suffix}"));
    let (user, password) = (format!("rw_loader_{suffix}"), format!("pw-{suffix}"));

    let file = users::write_users_file(
        &clickhouse_config_dir(),
        &user,
        &password,
        &database,
        &local(),
    )
    .expect("writing the users file");
    let _file = Remove(file);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = users::wait_until_known(
                &clickhouse_url(),
                &database,
                &user,
                &password,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
            store.migrate().await.unwrap();
        });

    // A period of a minute, r2's own of a day.
    let retention = |default_ms: u64| Retention {
        default_ms,
        per_retailer_ms: [("r2".to_string(), 86_400_000)].into_iter().collect(),
    };
    let settings = |default_ms: u64| LoaderSettings {
        brokers: brokers(),
        contacts_topic: contacts_topic.clone(),
        privacy_topic: privacy_topic.clone(),
        clickhouse_url: clickhouse_url(),
        database: database.clone(),
        user: user.clone(),
        password: password.clone(),
        retention: retention(default_ms),
        exit_when_caught_up: true,
        metrics_listen: None,
    };
    let load = |default_ms: u64| {
        loader::run(&settings(default_ms), Arc::new(AtomicBool::new(false))).unwrap()
    };
    // The first run creates the topic.
    assert_eq!(load(60_000), LoaderCounts::default());

    let producer = test_producer(&brokers());
    let send = |messages: &[(&str, String)]| {
        let pairs: Vec<(&[u8], &[u8])> = messages
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect();
        produce(&producer, &contacts_topic, pairs.into_iter(), None);
    };
    send(&[
        ("r1\u{1f}s1", contact("c1", "r1")),
        ("r2\u{1f}s1", contact("c2", "r2")),
        ("r1\u{1f}s1", "not json".to_string()),
        (
            "r1\u{1f}s1",
            contact("c3", "r1").replace("\"campaign_id\"", "\"phone\":\"1\",\"campaign_id\""),
        ),
    ]);
    assert_eq!(
        load(60_000),
        LoaderCounts {
            contacts_stored: 2,
            contacts_invalid: 2,
            ..LoaderCounts::default()
        }
    );
    let view = || {
        sorted(stack.clickhouse(&format!(
            "SELECT retailer_id, contact_id, shopper_id, email FROM {database}.reward_contacts \
             FORMAT TabSeparated"
        )))
    };
    assert_eq!(
        view(),
        ["r1\tc1\ts1\tc1@shop.example", "r2\tc2\ts1\tc2@shop.example"]
    );

    // c4 arrives; once it and c1 are older than 1 s (broker time), a run with a period of 1 s
    // deletes c1 at start (r2's own period keeps c2) and drops c4 as it reads it.
    send(&[("r1\u{1f}s1", contact("c4", "r1"))]);
    let sent = now_ms();
    let deadline = Instant::now() + Duration::from_secs(30);
    while now_ms() < sent + 1_500 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        load(1_000),
        LoaderCounts {
            contacts_expired: 1,
            rows_expired: 1,
            ..LoaderCounts::default()
        }
    );
    assert_eq!(view(), ["r2\tc2\ts1\tc2@shop.example"]);
    let audit = sorted(stack.clickhouse(&format!(
        "SELECT request_id, retailer_id, kind, rows_removed FROM {database}.rewards_audit \
         FORMAT TabSeparated"
    )));
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert!(
        audit[0].starts_with("retention-") && audit[0].ends_with("\tr1\tretention\t1"),
        "{audit:?}"
    );
}

/// A scrape of `path` on `addr`: the body of the answer.
fn scrape(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn a_running_loader_serves_metrics_applies_retention_periodically_and_stops_on_request() {
    let stack = Stack::shared();
    let suffix = unique_suffix();
    let contacts_topic = format!("it-rewards-running-contacts-{suffix}");
    let privacy_topic = format!("it-rewards-running-privacy-{suffix}");
    stack.topics().delete_later(contacts_topic.clone());
    stack.create_topic(&privacy_topic, 1, "delete");
    let database = stack.database(format!("bf_rewards_running_{suffix}"));
    let (user, password) = (format!("rw_running_{suffix}"), format!("pw-{suffix}"));
    let file = users::write_users_file(
        &clickhouse_config_dir(),
        &user,
        &password,
        &database,
        &local(),
    )
    .expect("writing the users file");
    let _file = Remove(file);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(users::wait_until_known(
            &clickhouse_url(),
            &database,
            &user,
            &password,
            Duration::from_secs(30),
        ))
        .unwrap();

    let port = basketflow_testkit::free_port();
    let metrics = format!("127.0.0.1:{port}");
    let settings = LoaderSettings {
        brokers: brokers(),
        contacts_topic: contacts_topic.clone(),
        privacy_topic,
        clickhouse_url: clickhouse_url(),
        database: database.clone(),
        user,
        password,
        // 5 s: retention runs every 1.25 s; the contact is read within milliseconds.
        retention: Retention {
            default_ms: 5_000,
            per_retailer_ms: Default::default(),
        },
        exit_when_caught_up: false,
        metrics_listen: Some(metrics.clone()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let running = {
        let stop = stop.clone();
        std::thread::spawn(move || loader::run(&settings, stop))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        while !done() {
            assert!(Instant::now() < deadline, "waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for("the loader's health", &|| {
        scrape(&metrics, "/health").starts_with("HTTP/1.1 200")
    });
    let producer = test_producer(&brokers());
    let c1 = contact("c1", "r1");
    produce(
        &producer,
        &contacts_topic,
        [("r1\u{1f}s1".as_bytes(), c1.as_bytes())].into_iter(),
        None,
    );
    let count = |name: &str| {
        let text = scrape(&metrics, "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("basketflow_rewards_{name}_total ")))
            .map(|v| v.parse::<u64>().unwrap())
    };
    wait_for("the contact stored", &|| {
        count("contacts_stored") == Some(1)
    });
    let rows = || {
        stack
            .clickhouse(&format!("SELECT count() FROM {database}.reward_contacts"))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(rows(), 1);
    wait_for("retention", &|| count("rows_expired") == Some(1));
    assert_eq!(rows(), 0);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counts = running.join().unwrap().unwrap();
    assert_eq!(
        counts,
        LoaderCounts {
            contacts_stored: 1,
            rows_expired: 1,
            ..LoaderCounts::default()
        }
    );
}

/// A provisioned store of a fresh database, as its own user (the users file removed when the
/// guard is dropped).
/// Also returns the user and password.
fn provisioned_store(
    stack: &Stack,
    name: &str,
) -> (basketflow_rewards::RewardsStore, Remove, String, String) {
    let suffix = unique_suffix();
    let database = stack.database(format!("bf_rewards_{name}_{suffix}"));
    let (user, password) = (format!("rw_{name}_{suffix}"), format!("pw-{suffix}"));
    let file = users::write_users_file(
        &clickhouse_config_dir(),
        &user,
        &password,
        &database,
        &local(),
    )
    .expect("writing the users file");
    let guard = Remove(file);
    let store = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = users::wait_until_known(
                &clickhouse_url(),
                &database,
                &user,
                &password,
                Duration::from_secs(30),
            )
            .await
            .unwrap();
            store.migrate().await.unwrap();
            store
        });
    (store, guard, user, password)
}

fn stored(retailer: &str, shopper: &str, id: &str, offset: i64) -> StoredContact {
    let json = format!(
        r#"{{"contact_id":"{id}","retailer_id":"{retailer}","shopper_id":"{shopper}","email":"{id}@shop.example","campaign_id":"game","submitted_at":"2026-12-04T10:00:00Z"}}"#
    );
    StoredContact {
        contact: basketflow_rewards::RewardContact::parse(json.as_bytes()).unwrap(),
        received_ms: now_ms(),
        partition: 0,
        offset,
    }
}

/// Request ids are unique per retailer only (and `privacy erase --request-id` lets operators
/// choose them): two retailers' erasures with the same id both delete their shopper's
/// contacts and are both audited; a replay of either deletes nothing more and audits nothing
/// more.
#[test]
fn two_retailers_erasing_with_the_same_request_id_both_erase() {
    let stack = Stack::shared();
    let (store, _file, _, _) = provisioned_store(&stack, "sameid");
    let db = store.database().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(store.write(
        &[
            stored("r1", "s1", "c1", 0),
            stored("r2", "s2", "c2", 1),
            stored("r2", "s3", "c3", 2),
        ],
        &Default::default(),
    ))
    .unwrap();
    assert_eq!(
        rt.block_on(store.erase("req-1", "r1", "s1")).unwrap(),
        Erased::Applied(1)
    );
    assert_eq!(
        rt.block_on(store.erase("req-1", "r2", "s2")).unwrap(),
        Erased::Applied(1),
        "another retailer's request with the same id is applied"
    );
    let view = || {
        sorted(stack.clickhouse(&format!(
            "SELECT retailer_id, contact_id FROM {db}.reward_contacts FORMAT TabSeparated"
        )))
    };
    assert_eq!(view(), ["r2\tc3"]);
    // Replays: nothing left to delete, no second audit row.
    for (r, s) in [("r1", "s1"), ("r2", "s2")] {
        assert_eq!(
            rt.block_on(store.erase("req-1", r, s)).unwrap(),
            Erased::AlreadyAudited
        );
    }
    assert_eq!(view(), ["r2\tc3"]);
    let audit = sorted(stack.clickhouse(&format!(
        "SELECT request_id, retailer_id, kind, rows_removed FROM {db}.rewards_audit \
         FORMAT TabSeparated"
    )));
    assert_eq!(audit, ["req-1\tr1\terasure\t1", "req-1\tr2\terasure\t1"]);
}

/// The configs of `topic` that the broker reports, by name.
fn topic_configs_of(topic: &str) -> std::collections::BTreeMap<String, String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(admin.describe_configs(
            [&ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(30))),
        ))
        .unwrap()
        .into_iter()
        .next()
        .unwrap()
        .unwrap()
        .entries
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect()
}

/// A contacts topic that exists with other settings (here: delete only, the broker's retention)
/// gets the loader's at start: compacted, kept for the SHORTEST period, a segment rolled and
/// compacted within an hour.
#[test]
fn the_loader_sets_the_topic_s_retention_to_the_shortest_period() {
    let stack = Stack::shared();
    let (store, _file, user, password) = provisioned_store(&stack, "topiccfg");
    let suffix = unique_suffix();
    let contacts_topic = format!("it-rewards-topiccfg-contacts-{suffix}");
    let privacy_topic = format!("it-rewards-topiccfg-privacy-{suffix}");
    stack.create_topic(&contacts_topic, 1, "delete");
    stack.create_topic(&privacy_topic, 1, "delete");
    let before = topic_configs_of(&contacts_topic);
    assert_eq!(before["cleanup.policy"], "delete");
    let settings = LoaderSettings {
        brokers: brokers(),
        contacts_topic: contacts_topic.clone(),
        privacy_topic,
        clickhouse_url: clickhouse_url(),
        database: store.database().to_string(),
        user,
        password,
        retention: Retention {
            default_ms: 1095 * 86_400_000,
            per_retailer_ms: [("r2".to_string(), 30 * 86_400_000)].into_iter().collect(),
        },
        exit_when_caught_up: true,
        metrics_listen: None,
    };
    loader::run(&settings, Arc::new(AtomicBool::new(false))).unwrap();
    let after = topic_configs_of(&contacts_topic);
    assert_eq!(after["cleanup.policy"], "compact,delete");
    assert_eq!(after["retention.ms"], (30u64 * 86_400_000).to_string());
    assert_eq!(after["segment.ms"], "3600000");
    assert_eq!(after["max.compaction.lag.ms"], "3600000");
    assert_eq!(after["message.timestamp.type"], "LogAppendTime");
}
