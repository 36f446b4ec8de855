//! Loading: a TOML file, the `BASKETFLOW_<SECTION>_<KEY>` overlay, every problem by key.
//!
//! serde does the checking. The types refuse unknown fields (`deny_unknown_fields`) and
//! `serde_path_to_error` names the key of each refusal; the loader records it, takes the key
//! out and deserializes again, so that every bad key is reported, not only the first. The keys
//! of each section (for the environment and "did you mean") are the field names its
//! `Deserialize` implementation asks for (`serde_introspect`).
//!
//! Order of the report: keys and sections that do not exist (sorted), then variables that name
//! no key (in variable order), then values of the wrong type (by key). A value of the wrong
//! type stops there: the value checks ([`Config::problems`]) would see a default instead.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use basketflow_collector::CollectorConfig;
use serde::de::DeserializeOwned;
use serde_aux::serde_introspection::serde_introspect;
use serde_path_to_error::Segment;
use toml::{Table, Value};

use crate::types::{
    ClickHouseConfig, ClusterConfig, Config, GraphConfig, KafkaConfig, LogConfig, MetricsConfig,
    PrivacyConfig, RewardsConfig, TreesConfig,
};

/// The prefix of the variables that override configuration keys.
pub const ENV_PREFIX: &str = "BASKETFLOW_";

/// `BASKETFLOW_*` variables that are not configuration overrides: the scripts and the
/// integration tests use them (`scripts/stack`, `scripts/test`, `scripts/recovery-bench`,
/// `basketflow/tests/faults.rs`, the tests' stack address). Any `BASKETFLOW_TEST*` is also left
/// alone.
pub const NOT_CONFIGURATION: &[&str] = &[
    "BASKETFLOW_BROKERS",
    "BASKETFLOW_STACK_DIR",
    "BASKETFLOW_VENV",
    "BASKETFLOW_FAULT_SEED",
    "BASKETFLOW_OUTAGE_SECS",
];

/// A configuration and where its values came from.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The effective configuration.
    pub config: Config,
    /// Keys set from the environment: `section.key` -> variable.
    pub from_env: BTreeMap<String, String>,
}

/// One thing wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// The environment variable the value came from, if any.
    pub var: Option<String>,
    /// `section.key`, when the message is about one key's value.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.var, &self.key) {
            (Some(var), Some(key)) => write!(f, "{var} ({key}): {}", self.message),
            (Some(var), None) => write!(f, "{var}: {}", self.message),
            // A message that starts with its key (the collector's) is shown as it is.
            (None, Some(key)) if self.message.starts_with(key.as_str()) => {
                f.write_str(&self.message)
            }
            (None, Some(key)) => write!(f, "{key}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Everything wrong with a configuration (never empty).
#[derive(Clone, Debug)]
pub struct ConfigError {
    /// The file, if one was read.
    pub path: Option<PathBuf>,
    /// The problems, in section and key order.
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "invalid configuration {}:", path.display())?,
            None => write!(f, "invalid configuration (defaults and environment):")?,
        }
        for issue in &self.issues {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads `path`, applies the process environment and validates.
    pub fn load(path: &Path) -> Result<Config> {
        Ok(Config::resolve_file(Some(path))?.config)
    }

    /// Reads `path` (or, without one, starts from the defaults), applies the process
    /// environment and validates.
    pub fn resolve_file(path: Option<&Path>) -> Result<Resolved> {
        let text = match path {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?,
            ),
            None => None,
        };
        let (env, mut issues) = process_env();
        match Config::resolve(text.as_deref(), &env) {
            Ok(resolved) if issues.is_empty() => return Ok(resolved),
            Ok(_) => {}
            Err(more) => issues.extend(more),
        }
        Err(ConfigError {
            path: path.map(Path::to_path_buf),
            issues,
        }
        .into())
    }

    /// The configuration of the TOML `text` (or the defaults) with the overrides of `env`
    /// applied, validated: every problem found, or the configuration.
    pub fn resolve(
        text: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Result<Resolved, Vec<Issue>> {
        let mut table = match text.map(str::parse::<Table>).transpose() {
            Ok(table) => table.unwrap_or_default(),
            Err(e) => {
                let message = format!("not valid TOML: {}", e.to_string().trim_end());
                return Err(vec![issue(None, None, message)]);
            }
        };
        // Keys that do not exist, and sections that are not tables, are reported and taken out
        // before the environment applies (a variable may then create its section).
        let (_, refused) = deserialize(&table);
        let mut issues = Vec::new();
        for refusal in refused {
            if let Some(found) = not_a_key(&table, &refusal) {
                issues.push(found);
                remove(&mut table, &refusal.path);
            }
        }
        issues.sort_by_key(ToString::to_string);
        let from_env = apply_env(&mut table, env, &mut issues);
        let (config, refused) = deserialize(&table);
        let mut type_errors: Vec<Issue> = refused
            .iter()
            .map(|refusal| {
                not_a_key(&table, refusal).unwrap_or_else(|| wrong_value(&table, refusal))
            })
            .map(|mut found| {
                found.var = found.key.as_ref().and_then(|k| from_env.get(k)).cloned();
                found
            })
            .collect();
        type_errors.sort_by(|a, b| a.key.cmp(&b.key));
        let Some(config) = config.filter(|_| type_errors.is_empty()) else {
            issues.extend(type_errors);
            return Err(issues);
        };
        issues.extend(
            config
                .problems()
                .into_iter()
                .map(|(key, message)| issue(from_env.get(&key).cloned(), Some(key), message)),
        );
        if issues.is_empty() {
            Ok(Resolved { config, from_env })
        } else {
            Err(issues)
        }
    }
}

/// One refusal of serde's: where, and serde's message.
struct Refusal {
    /// The refused key, `["graph", "tick_ms"]`, or section, `["graph"]`: a deeper path is cut
    /// to its key, so that each key is reported once.
    path: Vec<String>,
    /// The refused entry of a table of values, one level below the key: `r1` of
    /// `privacy.retailers.r1`.
    entry: Option<String>,
    /// serde's message.
    message: String,
}

/// The configuration `table` means, or every key serde refuses in it: each refused key (the
/// section itself when the refusal is about it) is taken out of a copy and the copy is
/// deserialized again, until serde accepts it.
fn deserialize(table: &Table) -> (Option<Config>, Vec<Refusal>) {
    let mut rest = table.clone();
    let mut refused = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize(Value::Table(rest.clone())) {
            Ok(config) => return (Some(config), refused),
            Err(error) => error,
        };
        let mut path: Vec<String> = error
            .path()
            .iter()
            .map(|segment| match segment {
                Segment::Seq { index } => index.to_string(),
                Segment::Map { key } | Segment::Enum { variant: key } => key.clone(),
                Segment::Unknown => "?".into(),
            })
            .collect();
        let entry = match error.path().iter().nth(2) {
            Some(Segment::Map { key }) if path.len() == 3 => Some(key.clone()),
            _ => None,
        };
        path.truncate(2);
        let removed = remove(&mut rest, &path).is_some();
        refused.push(Refusal {
            path,
            entry,
            message: error.into_inner().message().trim().to_string(),
        });
        if !removed {
            // Nothing to take out (a refusal of the whole file): no use trying again.
            return (None, refused);
        }
    }
}

/// The issue of a key or section that does not exist, or of a section that is not a table.
fn not_a_key(table: &Table, refusal: &Refusal) -> Option<Issue> {
    let unknown = refusal.message.starts_with("unknown field `");
    let message = match refusal.path.as_slice() {
        [section, key] if unknown => {
            let known = keys_of(section).iter().map(|k| format!("{section}.{k}"));
            let path = format!("{section}.{key}");
            format!("unknown key {path}{}", did_you_mean(&path, known))
        }
        [name] if unknown => {
            let home = sections()
                .iter()
                .find(|s| keys_of(s).contains(&name.as_str()));
            match (table.get(name), home) {
                (Some(Value::Table(_)), _) => format!(
                    "unknown section [{name}]{}",
                    did_you_mean(
                        &format!("[{name}]"),
                        sections().iter().map(|s| format!("[{s}]"))
                    )
                ),
                (_, Some(home)) => format!("unknown key {name} (it belongs in [{home}])"),
                (_, None) => format!(
                    "unknown key {name} (every key belongs in a section: {})",
                    sections().join(", ")
                ),
            }
        }
        [section] => match table.get(section) {
            Some(value) if !value.is_table() => {
                let message = format!("expected a table [{section}], got {}", kind(value));
                return Some(issue(None, Some(section.clone()), message));
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(issue(None, None, message))
}

/// The issue of a value serde refuses, in the file's words: `expected an integer, got a
/// string`; an entry of a table of values (`privacy.retailers`) is named.
fn wrong_value(table: &Table, refusal: &Refusal) -> Issue {
    let mut keys = refusal.path.iter().chain(&refusal.entry);
    let found = keys
        .next()
        .and_then(|first| table.get(first))
        .and_then(|first| keys.try_fold(first, |value, key| value.get(key.as_str())));
    let message = &refusal.message;
    let expected = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split_once(", expected "));
    let bad_integer = message.starts_with("invalid value: integer");
    let explained = match (expected, bad_integer, found) {
        (Some((_, expected)), _, Some(found)) => {
            format!("expected {}, got {}", expected_kind(expected), kind(found))
        }
        (_, true, Some(Value::Integer(n))) if *n < 0 => format!("must not be negative, got {n}"),
        (_, true, Some(Value::Integer(n))) => format!("out of range, got {n}"),
        _ => message.clone(),
    };
    let explained = match &refusal.entry {
        Some(entry) => format!("{entry:?}: {explained}"),
        None => explained,
    };
    let key = (!refusal.path.is_empty()).then(|| refusal.path.join("."));
    issue(None, key, explained)
}

/// Takes `path` (a section, or a section's key) out of `table`.
fn remove(table: &mut Table, path: &[String]) -> Option<Value> {
    match path {
        [section] => table.remove(section),
        [section, key] => table.get_mut(section)?.as_table_mut()?.remove(key),
        _ => None,
    }
}

/// serde's name of an expected type, as a TOML type.
fn expected_kind(expected: &str) -> &str {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            "an integer"
        }
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "a boolean",
        "a string" | "path string" | "a borrowed string" => "a string",
        "a sequence" => "an array",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    }
}

/// `value`'s TOML type with an article.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

fn issue(var: Option<String>, key: Option<String>, message: String) -> Issue {
    Issue { var, key, message }
}

/// The sections of the file.
pub fn sections() -> &'static [&'static str] {
    serde_introspect::<Config>()
}

/// The keys of `section`.
pub(crate) fn keys_of(section: &str) -> &'static [&'static str] {
    fn keys<T: DeserializeOwned>() -> &'static [&'static str] {
        serde_introspect::<T>()
    }
    match section {
        "kafka" => keys::<KafkaConfig>(),
        "clickhouse" => keys::<ClickHouseConfig>(),
        "graph" => keys::<GraphConfig>(),
        "cluster" => keys::<ClusterConfig>(),
        "metrics" => keys::<MetricsConfig>(),
        "trees" => keys::<TreesConfig>(),
        "log" => keys::<LogConfig>(),
        "collector" => keys::<CollectorConfig>(),
        "privacy" => keys::<PrivacyConfig>(),
        "rewards" => keys::<RewardsConfig>(),
        _ => &[],
    }
}

/// The environment variable that overrides `section.key`.
pub fn env_var(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// The `BASKETFLOW_*` variables of this process, and one issue per value that is not UTF-8.
fn process_env() -> (BTreeMap<String, String>, Vec<Issue>) {
    let mut env = BTreeMap::new();
    let mut issues = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(ENV_PREFIX)) else {
            continue;
        };
        match value.into_string() {
            Ok(value) => {
                env.insert(name.to_string(), value);
            }
            Err(_) if NOT_CONFIGURATION.contains(&name) => {}
            Err(_) => issues.push(issue(
                Some(name.to_string()),
                None,
                "the value is not UTF-8".into(),
            )),
        }
    }
    (env, issues)
}

/// Applies the overrides of `env` to `table`; returns `section.key` -> variable for those
/// applied. A variable that names no key is an issue, in variable order.
///
/// The value of a key whose default is a string is taken verbatim; any other is read as a TOML
/// value (`5000`, `true`, `["a", "b"]`, `"2024"`), and taken verbatim when it is not one.
fn apply_env(
    table: &mut Table,
    env: &BTreeMap<String, String>,
    issues: &mut Vec<Issue>,
) -> BTreeMap<String, String> {
    let defaults = match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    };
    let mut applied = BTreeMap::new();
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if NOT_CONFIGURATION.contains(&var.as_str()) || rest.starts_with("TEST") {
            continue;
        }
        let mut bad = |message: String| issues.push(issue(Some(var.clone()), None, message));
        if rest != rest.to_ascii_uppercase() {
            bad(format!(
                "configuration variables are upper case: {ENV_PREFIX}{}",
                rest.to_ascii_uppercase()
            ));
            continue;
        }
        // Section names have no `_`: the first `_` ends the section.
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower
            .split_once('_')
            .filter(|(s, _)| sections().contains(s))
        else {
            let all = sections()
                .iter()
                .flat_map(|s| keys_of(s).iter().map(move |k| env_var(s, k)));
            bad(format!(
                "names no configuration key ({ENV_PREFIX}<SECTION>_<KEY>; sections: {}){}",
                sections().join(", "),
                did_you_mean(var, all)
            ));
            continue;
        };
        if !keys_of(section).contains(&key) {
            let known = keys_of(section).iter().map(|k| env_var(section, k));
            bad(format!(
                "unknown key {section}.{key}{}",
                did_you_mean(var, known)
            ));
            continue;
        }
        let value = match defaults.get(section).and_then(|s| s.get(key)) {
            Some(Value::String(_)) => Value::String(raw.clone()),
            _ => raw
                .parse::<Value>()
                .unwrap_or_else(|_| Value::String(raw.clone())),
        };
        // A section that is not a table has been reported (and taken out) already.
        if let Value::Table(t) = table
            .entry(section.to_string())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            t.insert(key.to_string(), value);
            applied.insert(format!("{section}.{key}"), var.clone());
        }
    }
    applied
}

/// ` (did you mean X?)` for the candidate closest to `word` (Levenshtein), if close enough to be
/// a typo.
fn did_you_mean(word: &str, candidates: impl Iterator<Item = String>) -> String {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 6))
        .min()
        .map(|(_, c)| format!(" (did you mean {c}?)"))
        .unwrap_or_default()
}
