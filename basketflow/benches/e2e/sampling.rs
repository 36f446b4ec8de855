//! What a run of the binary cost: CPU seconds by thread group (sampled from /proc while it
//! runs), and the figures its log reports (when the cluster formed and stopped, peak memory,
//! the largest arrangements).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use basketflow_testkit::ChildGuard;

/// CPU seconds (user + system) process `pid` has used so far, from /proc (0 when it is gone).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    // utime and stime are fields 14 and 15, the 12th and 13th after the command.
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0 // USER_HZ on Linux
}

/// The processes that share the cores during a live probe, by name: this bench's own process
/// (the producer), and the stack's broker and ClickHouse, from `scripts/stack`'s PID files
/// (under `BASKETFLOW_STACK_DIR`, default `.stack`; absent when the stack runs elsewhere).
pub fn neighbours() -> Vec<(&'static str, u32)> {
    let dir = std::env::var("BASKETFLOW_STACK_DIR").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.stack"),
        std::path::PathBuf::from,
    );
    let pid = |file: &str| {
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    let mut out = vec![("producer", std::process::id())];
    out.extend(pid("kafka/kafka.pid").map(|p| ("broker", p)));
    out.extend(pid("clickhouse/clickhouse.pid").map(|p| ("clickhouse", p)));
    out
}

/// CPU seconds of a child's threads, by group, sampled from /proc while it runs.
#[derive(Default)]
pub struct ThreadCpu {
    by_thread: Mutex<HashMap<u32, (String, f64)>>,
}

impl ThreadCpu {
    /// Adds the CPU seconds of `pid`'s threads so far.
    pub fn sample(&self, pid: u32) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        let ticks = 100.0; // USER_HZ on Linux
        let mut by = self.by_thread.lock().unwrap();
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_string();
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command.
            let cpu = fields
                .get(11)
                .and_then(|u| u.parse::<f64>().ok())
                .unwrap_or(0.0)
                + fields
                    .get(12)
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0);
            let tid: u32 = task.file_name().to_string_lossy().parse().unwrap_or(0);
            let e = by.entry(tid).or_insert((comm, 0.0));
            e.1 = e.1.max(cpu / ticks);
        }
    }

    /// Seconds by group: worker threads (parse and dataflow), source consumer threads,
    /// librdkafka's threads, the ClickHouse writer, the Kafka outputs, the rest.
    pub fn groups(&self) -> BTreeMap<&'static str, f64> {
        let mut g = BTreeMap::new();
        for (comm, secs) in self.by_thread.lock().unwrap().values() {
            let group = if comm.starts_with("timely:work") {
                "workers"
            } else if comm.starts_with("clickhouse") {
                "clickhouse_writer"
            } else if comm.starts_with("kafka-outputs") || comm.starts_with("producer poll") {
                "kafka_outputs"
            } else if comm.starts_with("rdk:") {
                "librdkafka"
            } else if comm.starts_with("kafka-") {
                "source_threads"
            } else {
                "other"
            };
            *g.entry(group).or_insert(0.0) += secs;
        }
        g
    }
}

/// Runs `child` to its end, sampling its threads' CPU every 100 ms; returns its stderr.
pub fn run_sampled(child: ChildGuard, cpu: &ThreadCpu) -> String {
    run_sampled_all(vec![child], cpu).remove(0)
}

/// [`run_sampled`] for the processes of one cluster: their standard errors, in order.
pub fn run_sampled_all(mut children: Vec<ChildGuard>, cpu: &ThreadCpu) -> Vec<String> {
    let readers: Vec<_> = children
        .iter_mut()
        .map(|child| {
            let mut stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
                s
            })
        })
        .collect();
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (child, status) in children.iter_mut().zip(&mut statuses) {
            if status.is_none() {
                cpu.sample(child.id());
                *status = child.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for (status, log) in statuses.iter().zip(&logs) {
        assert!(
            status.is_some_and(|s| s.success()),
            "basketflow run failed: {log}"
        );
    }
    logs
}

/// The `ts=` instant of the first log line containing `what`, in seconds since the epoch.
pub fn log_instant(log: &str, what: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(what))?;
    let ts = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ts="))?;
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1e3)
}

/// The peak resident memory the run logged when it stopped, in MiB (0 if absent).
pub fn peak_mib(log: &str) -> u64 {
    logged_mib(log, "peak_resident_mib=")
}

/// The resident memory the run logged once everything was processed and durable, before it
/// stopped, in MiB (0 if absent). Not the state: timely drops finished operators, their state
/// with them, so some or all of it may be gone by then.
pub fn at_end_mib(log: &str) -> u64 {
    logged_mib(log, "resident_at_end_mib=")
}

fn logged_mib(log: &str, field: &str) -> u64 {
    log.split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(field))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `arrangement peak records` line of a run with `metrics.arrangement_names`: records per
/// arrangement name, largest first (empty without it).
pub fn arrangement_peaks(log: &str) -> Vec<(String, i64)> {
    let Some(line) = log.lines().find(|l| l.contains("arrangement peak records")) else {
        return Vec::new();
    };
    let Some(rest) = line.split_once("peaks=").map(|(_, r)| r) else {
        return Vec::new();
    };
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next().unwrap_or(""),
        None => rest.split_whitespace().next().unwrap_or(""),
    };
    value
        .split(';')
        .filter_map(|pair| {
            let (name, n) = pair.rsplit_once('=')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}
