//! The `generate` binary as a shell uses it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// `generate --out - | head -1`: the reader closing its end stops the generator cleanly
/// (exit 0, no backtrace), and its summary counts what it generated, not what was asked.
#[test]
fn a_reader_that_stops_reading_stops_the_generator_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_generate"))
        .args(["--events", "1000000", "--out", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("generate starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    // The reader is dropped here: its end of the pipe closes.
    let out = child.wait_with_output().expect("generate ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(first.starts_with("{\"event_id\":"), "{first}");
    let summary: serde_json::Value =
        serde_json::from_str(stderr.lines().last().expect("a summary")).expect("JSON");
    let generated = summary["messages"].as_u64().expect("messages");
    assert!((1..1_000_000).contains(&generated), "{summary}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}
