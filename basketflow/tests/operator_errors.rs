//! Operator errors end `basketflow run` with one line and exit status 3, not a panic.
//!
//! Started on a namespace whose events topic did not exist, `basketflow run` used to panic on a
//! worker thread ("cannot read ...: UnknownTopicOrPartition") with a backtrace note. Each test
//! starts the binary against the real broker (`$BASKETFLOW_BROKERS`, default 127.0.0.1:9092)
//! with one thing wrong and checks the exit status, the one line on stderr that says what to do,
//! and that nothing panicked. Topics a test creates are deleted when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use basketflow_testkit::kafka::Topics;
use basketflow_testkit::stack::brokers;
use basketflow_testkit::unique;

/// Exit status of an operator error (README, "Operations").
const OPERATOR_ERROR: i32 = 3;

/// A configuration in `dir` reading `events` and `trees`, writing to ClickHouse at `clickhouse`.
fn config(dir: &Path, events: &str, trees: &str, clickhouse: &str) -> PathBuf {
    let path = dir.join("basketflow.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\nevents_topic = \"{events}\"\ntrees_topic = \"{trees}\"\n\
             [clickhouse]\nurl = \"{clickhouse}\"\ndatabase = \"{}\"\n\
             [metrics]\nlisten = \"off\"\n",
            brokers(),
            unique("db").replace('-', "_"),
        ),
    )
    .unwrap();
    path
}

/// Runs `basketflow run --config config` to its end (killed and failed after 90 s).
fn run(config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_basketflow"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting basketflow run");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "basketflow run did not exit within 90 s; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Asserts an operator error: status 3, exactly one line on stderr, containing `expected`, and
/// no panic.
fn assert_refused(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(OPERATOR_ERROR), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got:\n{stderr}");
    assert!(lines[0].contains("level=error"), "{}", lines[0]);
    assert!(
        lines[0].contains(expected),
        "expected {expected:?} in {}",
        lines[0]
    );
}

#[test]
fn a_missing_events_topic_is_one_line_naming_it_and_exit_status_3() {
    let dir = tempdir("missing-events");
    let events = unique("missing-events");
    let trees = unique("missing-trees");
    let out = run(&config(&dir, &events, &trees, "http://127.0.0.1:8123"));
    assert_refused(
        &out,
        &format!(
            "topic {events} does not exist on {}: create it with scripts/stack up or set \
             kafka.events_topic",
            brokers()
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_trees_topic_names_its_own_key() {
    let dir = tempdir("missing-trees");
    let events = unique("events");
    let trees = unique("missing-trees");
    let topics = Topics::new(&brokers());
    topics.create(&events, 2, &[]);
    let out = run(&config(&dir, &events, &trees, "http://127.0.0.1:8123"));
    assert_refused(
        &out,
        &format!(
            "topic {trees} does not exist on {}: create it with scripts/stack up or set \
             kafka.trees_topic",
            brokers()
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_clickhouse_is_one_line_and_exit_status_3() {
    let dir = tempdir("no-clickhouse");
    let events = unique("events");
    let trees = unique("trees");
    let topics = Topics::new(&brokers());
    topics.create(&events, 2, &[]);
    topics.create(&trees, 2, &[]);
    // A port nothing listens on: bound, then released.
    let port = basketflow_testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = run(&config(&dir, &events, &trees, &url));
    assert_refused(&out, &format!("cannot use ClickHouse at {url}: "));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("check that it is up (scripts/stack up) and clickhouse.url"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("basketflow-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
