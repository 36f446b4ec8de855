//! The runbook's alerts, `deploy/prometheus/alerts.yml`, are valid Prometheus rules, and each
//! fires when, and only when, its unit tests in `alerts.test.yml` say: checked by `promtool`
//! (Debian's `prometheus` package; `scripts/stack install` installs it). That the rules use the
//! names `basketflow run` exposes is checked beside the exposition, in `src/metrics.rs`.

use std::path::PathBuf;
use std::process::Command;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(rules_dir().join(file)).expect("deploy/prometheus is in the tree")
}

/// Runs `promtool args` in `deploy/prometheus`; its output, once it succeeded.
fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): run scripts/stack install, which installs Debian's \
                 prometheus package (it ships promtool)"
            )
        });
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool {} ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// The names after `key:` on the lines of `yaml` (no YAML parser needed for this).
fn values_of(yaml: &str, key: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn the_alert_rules_pass_promtool_check() {
    let alerts = values_of(&read("alerts.yml"), "alert:");
    let text = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{text}"
    );
}

#[test]
fn the_alerts_fire_as_their_unit_tests_say() {
    let text = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_alert_has_a_unit_test() {
    let tested = values_of(&read("alerts.test.yml"), "alertname:");
    for alert in values_of(&read("alerts.yml"), "alert:") {
        assert!(
            tested.contains(&alert),
            "{alert} has no case in alerts.test.yml"
        );
    }
}
