//! A private stack: `scripts/stack` run in a directory of its own, on ports of its own, for
//! tests that stop and start the broker or ClickHouse (the shared stack must not be disturbed:
//! other tests use it). Stopped and removed when its guard is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::names::unique;
use crate::stack::Stack;

/// The repository's `scripts/stack`.
fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack")
}

/// The ports of a private stack.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The broker's listener.
    pub kafka: u16,
    /// The broker's controller listener.
    pub kafka_controller: u16,
    /// ClickHouse's HTTP interface.
    pub clickhouse_http: u16,
    /// ClickHouse's native interface.
    pub clickhouse_tcp: u16,
}

/// `scripts/stack` in a fresh directory on [`Ports`] of its own: `scripts/stack down` and the
/// directory removed when the guard is dropped, also when the test fails.
#[derive(Debug)]
pub struct PrivateStack {
    dir: PathBuf,
    env: Vec<(String, String)>,
    stack: Stack,
}

impl PrivateStack {
    /// A private stack named after `name` (its directory, under the temporary directory) on
    /// `ports`, the broker with `kafka_heap` of heap (`256M`); not started: see
    /// [`PrivateStack::script`].
    pub fn new(name: &str, ports: Ports, kafka_heap: &str) -> PrivateStack {
        let dir = std::env::temp_dir().join(unique(name));
        std::fs::create_dir_all(&dir).expect("creating the private stack's directory");
        let env = [
            ("BASKETFLOW_STACK_DIR", dir.display().to_string()),
            ("KAFKA_PORT", ports.kafka.to_string()),
            ("KAFKA_CONTROLLER_PORT", ports.kafka_controller.to_string()),
            ("CLICKHOUSE_HTTP_PORT", ports.clickhouse_http.to_string()),
            ("CLICKHOUSE_TCP_PORT", ports.clickhouse_tcp.to_string()),
            ("KAFKA_HEAP", kafka_heap.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec();
        let stack = Stack::at(
            &format!("127.0.0.1:{}", ports.kafka),
            &format!("http://127.0.0.1:{}", ports.clickhouse_http),
        );
        PrivateStack { dir, env, stack }
    }

    /// Its directory (`BASKETFLOW_STACK_DIR`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its addresses (what a test creates there goes with the whole stack).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// Runs `scripts/stack <args>` on it (`up`, `up kafka`, `down clickhouse`, ...), which
    /// must succeed.
    pub fn script(&self, args: &[&str]) {
        let started = Instant::now();
        let ok = self.run(args).expect("running scripts/stack");
        assert!(
            ok,
            "scripts/stack {args:?} failed for {}",
            self.dir.display()
        );
        println!("scripts/stack {args:?}: {:?}", started.elapsed());
    }

    fn run(&self, args: &[&str]) -> std::io::Result<bool> {
        Command::new(script_path())
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .status()
            .map(|s| s.success())
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        // Removed whole: nothing to delete topic by topic.
        self.stack.keep_everything();
        // Never panics: a drop may run while a failed test unwinds.
        if !matches!(self.run(&["down"]), Ok(true)) {
            eprintln!(
                "scripts/stack down failed for the private stack in {}",
                self.dir.display()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
