//! `basketflow config check` and `basketflow config example`, run as a user runs them.
//!
//! Needs nothing but the binary. Every child starts without the caller's `BASKETFLOW_*`
//! variables, so that a developer's environment cannot change the answers.

use std::path::PathBuf;
use std::process::{Command, Output};

use basketflow_testkit::clear_basketflow_env;

/// Runs `basketflow config <args>` in `dir` with exactly the `BASKETFLOW_*` variables `vars`.
fn config(dir: &std::path::Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_basketflow"));
    command.arg("config").args(args).current_dir(dir);
    clear_basketflow_env(&mut command)
        .envs(vars.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running basketflow config")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory holding `basketflow.toml` = `body`.
fn dir_with(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "basketflow-config-cli-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("basketflow.toml"), body).unwrap();
    dir
}

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../basketflow.example.toml")
}

#[test]
fn the_example_checks_and_is_what_config_example_prints() {
    let example = example_path();
    let dir = std::env::temp_dir();
    let out = config(&dir, &["check", "--config", example.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("ok: {}\n[kafka]\n", example.display())),
        "{stdout}"
    );
    assert!(stdout.contains("\n[collector]\n"), "{stdout}");

    let printed = config(&dir, &["example"], &[]);
    assert!(printed.status.success());
    assert_eq!(
        text(&printed.stdout),
        std::fs::read_to_string(&example).unwrap()
    );
}

#[test]
fn a_typo_is_refused_with_its_key() {
    let dir = dir_with("typo", "[graph]\nflush_intervall_ms = 100\n");
    let out = config(&dir, &["check"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "invalid configuration basketflow.toml:\n  unknown key graph.flush_intervall_ms \
             (did you mean graph.flush_interval_ms?)\n"
        )
    );
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn an_override_shows_in_the_effective_configuration() {
    let dir = dir_with(
        "override",
        "[graph]\nflush_interval_ms = 100\n[clickhouse]\npassword = \"from-file\"\n\
         [[collector.stream_secrets]]\nid = \"r1\"\nsecret = \"stream-secret-from-file-0123456789\"\n",
    );
    let out = config(
        &dir,
        &["check", "--config", "basketflow.toml"],
        &[
            ("BASKETFLOW_GRAPH_FLUSH_INTERVAL_MS", "500"),
            ("BASKETFLOW_CLICKHOUSE_PASSWORD", "from-env"),
            // Not configuration: the scripts' and tests' own variables.
            ("BASKETFLOW_BROKERS", "elsewhere:9092"),
            ("BASKETFLOW_STACK_DIR", "/nowhere"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "ok: basketflow.toml\n\
             # clickhouse.password from BASKETFLOW_CLICKHOUSE_PASSWORD\n\
             # graph.flush_interval_ms from BASKETFLOW_GRAPH_FLUSH_INTERVAL_MS\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\nflush_interval_ms = 500\n"), "{stdout}");
    assert!(stdout.contains("\npassword = \"***\"\n"), "{stdout}");
    assert!(stdout.contains("\nsecret = \"***\"\n"), "{stdout}");
    assert!(!stdout.contains("from-env") && !stdout.contains("from-file"));
    assert!(
        stdout.contains("\nbrokers = \"127.0.0.1:9092\"\n"),
        "{stdout}"
    );
}

#[test]
fn a_bad_variable_is_refused_with_its_name() {
    let dir = dir_with("badenv", "");
    let out = config(
        &dir,
        &["check"],
        &[
            ("BASKETFLOW_GRAPH_TICK_MS", "0"),
            ("BASKETFLOW_CLUSTER_PROCESSES", "2"),
            ("BASKETFLOW_CLUSTER_PROCESS", "3"),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "invalid configuration basketflow.toml:\n  \
         BASKETFLOW_GRAPH_TICK_MS (graph.tick_ms): must be at least 1, got 0\n  \
         BASKETFLOW_CLUSTER_PROCESS (cluster.process): 3 is not below cluster.processes (2)\n"
    );

    let out = config(&dir, &["check"], &[("BASKETFLOW_GRAPH_TIK_MS", "5")]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "invalid configuration basketflow.toml:\n  BASKETFLOW_GRAPH_TIK_MS: unknown key \
         graph.tik_ms (did you mean BASKETFLOW_GRAPH_TICK_MS?)\n"
    );
}

#[test]
fn a_missing_file_is_an_error_only_when_named() {
    let dir =
        std::env::temp_dir().join(format!("basketflow-config-cli-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("basketflow.toml"));
    let out = config(&dir, &["check"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: no basketflow.toml; built-in defaults\n"));

    let out = config(&dir, &["check", "--config", "missing.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("reading the configuration missing.toml: "),
        "{}",
        text(&out.stderr)
    );
}
