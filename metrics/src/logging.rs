//! Structured logs: one line per notable event on stderr, `logfmt` (default) or JSON.
//!
//! Library crates log through the `log` facade with key-value pairs
//! (`log::warn!(table = t, error:% = e; "clickhouse write failed")`); this is the one logger the
//! binary installs. Lines look like
//!
//! ```text
//! ts=2026-11-22T04:01:02.345Z level=warn target=basketflow_sinks::clickhouse::writer msg="clickhouse write failed" through=1795318092704 error="..."
//! {"ts":"2026-11-22T04:01:02.345Z","level":"warn","target":"...","msg":"...","through":1795318092704}
//! ```
//!
//! Nothing is logged per event: per-event facts are counted in the metrics.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Line format (`[log] format`): `Logfmt` (`key=value` pairs) or `Json` (one object per line).
pub use basketflow_config::LogFormat as Format;

struct Logger {
    format: Format,
    level: LevelFilter,
}

/// Installs the logger (once per process; later calls are ignored): lines at `level` or more
/// severe, in `format` (configuration `[log]`).
pub fn init(format: Format, level: LevelFilter) {
    if log::set_boxed_logger(Box::new(Logger { format, level })).is_ok() {
        log::set_max_level(level);
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) || is_partition_eof(record) {
            return;
        }
        let line = render(self.format, record, &now());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// librdkafka reports every partition end as a "global error" when `enable.partition.eof` is on
/// (the sources need those ends); they are not errors and would be one line per partition end.
fn is_partition_eof(record: &Record<'_>) -> bool {
    record.target().starts_with("rdkafka") && record.args().to_string().contains("PartitionEOF")
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One line for `record` at time `ts`, newline included.
fn render(format: Format, record: &Record<'_>, ts: &str) -> String {
    let msg = record.args().to_string();
    let mut pairs = Pairs(Vec::new());
    let _ = record.key_values().visit(&mut pairs);
    let level = level_name(record.level());
    match format {
        Format::Logfmt => {
            let mut line = format!(
                "ts={ts} level={level} target={} msg={}",
                record.target(),
                logfmt_value(&msg)
            );
            for (k, v) in pairs.0 {
                line.push_str(&format!(" {k}={}", logfmt_value(&v)));
            }
            line.push('\n');
            line
        }
        Format::Json => {
            let mut obj = serde_json::Map::new();
            obj.insert("ts".into(), ts.into());
            obj.insert("level".into(), level.into());
            obj.insert("target".into(), record.target().into());
            obj.insert("msg".into(), msg.into());
            for (k, v) in pairs.0 {
                let value = v
                    .parse::<i64>()
                    .map(serde_json::Value::from)
                    .unwrap_or_else(|_| v.into());
                obj.insert(k, value);
            }
            let mut line = serde_json::Value::Object(obj).to_string();
            line.push('\n');
            line
        }
    }
}

/// A value as logfmt wants it: bare if it has no space, quote or `=`, otherwise quoted.
fn logfmt_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '"', '=', '\n', '\t']) {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

struct Pairs(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Pairs {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_line(format: Format) -> String {
        let through = 42u64;
        let error = "connection refused";
        render(
            format,
            &Record::builder()
                .args(format_args!("clickhouse write failed"))
                .level(Level::Warn)
                .target("sink")
                .key_values(&[
                    ("through", through.to_string()),
                    ("error", error.to_string()),
                ])
                .build(),
            "2026-11-22T04:00:00.000Z",
        )
    }

    #[test]
    fn logfmt_quotes_what_needs_quoting() {
        assert_eq!(
            record_line(Format::Logfmt),
            "ts=2026-11-22T04:00:00.000Z level=warn target=sink msg=\"clickhouse write failed\" through=42 error=\"connection refused\"\n"
        );
    }

    #[test]
    fn json_lines_are_objects_with_numbers_kept() {
        assert_eq!(
            record_line(Format::Json),
            "{\"ts\":\"2026-11-22T04:00:00.000Z\",\"level\":\"warn\",\"target\":\"sink\",\"msg\":\"clickhouse write failed\",\"through\":42,\"error\":\"connection refused\"}\n"
        );
    }
}
