//! The configuration's behaviour, key by key: defaults, the example, unknown keys, types,
//! values, the environment, the output of `config check`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use basketflow_collector::CollectorConfig;
use basketflow_vocab::privacy::{Retention, MS_PER_DAY};
use serde_aux::serde_introspection::serde_introspect as field_names;
use toml::{Table, Value};

use crate::command::effective;
use crate::load::keys_of;
use crate::*;

fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The issues of `text` with `vars`, as displayed.
fn errors(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
    match Config::resolve(Some(text), &env(vars)) {
        Ok(_) => vec![],
        Err(issues) => issues.iter().map(ToString::to_string).collect(),
    }
}

fn ok(text: &str, vars: &[(&str, &str)]) -> Resolved {
    Config::resolve(Some(text), &env(vars)).unwrap_or_else(|issues| {
        panic!(
            "{:?}",
            issues.iter().map(ToString::to_string).collect::<Vec<_>>()
        )
    })
}

#[test]
fn an_empty_file_and_no_file_are_the_defaults() {
    let empty = ok("", &[]).config;
    let none = Config::resolve(None, &env(&[])).unwrap().config;
    let default = toml::to_string(&Config::default()).unwrap();
    assert_eq!(toml::to_string(&empty).unwrap(), default);
    assert_eq!(toml::to_string(&none).unwrap(), default);
    assert_eq!(
        empty.kafka.progress_topic(),
        "experience-decisions-progress"
    );
    assert_eq!(empty.metrics.listen(), Some("127.0.0.1:9464"));
}

#[test]
fn the_example_parses_to_the_defaults_and_shows_every_key() {
    let resolved = ok(EXAMPLE, &[]);
    let example: Table = EXAMPLE.parse().unwrap();
    let defaults = match Value::try_from(Config::default()).unwrap() {
        Value::Table(t) => t,
        _ => unreachable!(),
    };
    // Every key the example sets is at its default.
    assert_eq!(
        toml::to_string(&resolved.config).unwrap(),
        toml::to_string(&Config::default()).unwrap()
    );
    // Every key of every section is in the example: set, or as a commented line
    // `# key = ...` in its section (optional keys without a default).
    let mut missing = vec![];
    for section in sections() {
        let body = section_text(EXAMPLE, section);
        for key in keys_of(section) {
            let set = example.get(*section).and_then(|s| s.get(*key)).is_some();
            let commented = body.lines().any(|l| l.starts_with(&format!("# {key} = ")));
            if !set && !commented {
                missing.push(format!("{section}.{key}"));
            }
            if set {
                assert_eq!(
                    example[*section][*key], defaults[*section][*key],
                    "{section}.{key} in the example is not the default"
                );
            }
        }
    }
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "keys missing from the example"
    );
}

/// The lines of `text` under `[section]`, up to the next section header.
fn section_text<'a>(text: &'a str, section: &str) -> &'a str {
    let header = format!("\n[{section}]\n");
    let start = text.find(&header).expect("the section's header") + header.len();
    let end = text[start..].find("\n[").map_or(text.len(), |e| start + e);
    &text[start..end]
}

#[test]
fn collector_serializes_as_it_deserializes() {
    let text = format!(
        "[collector]\nlisten = \"0.0.0.0:8088\"\ntopic = \"t\"\nauth = \"keys\"\n\
         cors_origins = [\"https://shop.example\"]\ndecisions_topic = \"d\"\n\
         [[collector.retailers]]\nid = \"r1\"\nkey_sha256 = \"{}\"\n\
         [[collector.reward_keys]]\nid = \"r1\"\nkey_sha256 = \"{}\"\n\
         [[collector.stream_secrets]]\nid = \"r1\"\nsecret = \"{}\"\n",
        "a".repeat(64),
        "b".repeat(64),
        "s".repeat(32)
    );
    let config = ok(&text, &[]).config;
    let written: Table = toml::to_string(&config).unwrap().parse().unwrap();
    let mut keys: Vec<&str> = written["collector"]
        .as_table()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut names = field_names::<CollectorConfig>().to_vec();
    names.sort();
    assert_eq!(keys, names);
    let again: Config = Value::Table(written).try_into().unwrap();
    assert_eq!(again.collector, config.collector);
}

#[test]
fn sections_and_keys_are_read_from_the_types() {
    assert_eq!(
        sections(),
        [
            "kafka",
            "clickhouse",
            "graph",
            "cluster",
            "metrics",
            "trees",
            "log",
            "collector",
            "privacy",
            "rewards"
        ]
    );
    for section in sections() {
        assert!(!keys_of(section).is_empty(), "{section} has no keys");
    }
    assert_eq!(
        keys_of("cluster"),
        ["workers", "processes", "process", "hostfile"]
    );
}

#[test]
fn unknown_keys_name_their_section() {
    assert_eq!(
        errors("[graph]\nflush_intervall_ms = 10\n", &[]),
        ["unknown key graph.flush_intervall_ms (did you mean graph.flush_interval_ms?)"]
    );
    assert_eq!(
        errors("[graf]\ntick_ms = 1\n", &[]),
        ["unknown section [graf] (did you mean [graph]?)"]
    );
    assert_eq!(
        errors("tick_ms = 1\n", &[]),
        ["unknown key tick_ms (it belongs in [graph])"]
    );
    assert_eq!(
        errors("[kafka]\nbogus = 1\n", &[]),
        ["unknown key kafka.bogus"]
    );
    assert_eq!(
        errors("graph = 1\n", &[]),
        ["graph: expected a table [graph], got an integer"]
    );
}

#[test]
fn unknown_keys_and_impossible_values_are_reported_together() {
    assert_eq!(
        errors("[graph]\nflush_intervall_ms = 1\ntick_ms = 0\n", &[]),
        [
            "unknown key graph.flush_intervall_ms (did you mean graph.flush_interval_ms?)",
            "graph.tick_ms: must be at least 1, got 0",
        ]
    );
}

#[test]
fn type_errors_name_the_key_every_one() {
    assert_eq!(
        errors(
            "[graph]\ntick_ms = \"5\"\nflush_interval_ms = -1\n[cluster]\nworkers = true\n\
             [log]\nformat = \"xml\"\n",
            &[]
        ),
        [
            "cluster.workers: expected an integer, got a boolean",
            "graph.flush_interval_ms: must not be negative, got -1",
            "graph.tick_ms: expected an integer, got a string",
            "log.format: unknown variant `xml`, expected `logfmt` or `json`",
        ]
    );
    assert_eq!(
        errors("[cluster]\nhostfile = 3\n", &[]),
        ["cluster.hostfile: expected a string, got an integer"]
    );
}

#[test]
fn the_environment_applies_after_the_file_is_checked() {
    // A value of the wrong type in the file that a variable replaces is no error.
    let r = ok(
        "[graph]\ntick_ms = \"5\"\n",
        &[("BASKETFLOW_GRAPH_TICK_MS", "10")],
    );
    assert_eq!(r.config.graph.tick_ms, 10);
    // A section that is not a table is reported and left out; a variable still sets its keys.
    assert_eq!(
        errors("graph = 1\n", &[("BASKETFLOW_GRAPH_TICK_MS", "0")]),
        [
            "graph: expected a table [graph], got an integer",
            "BASKETFLOW_GRAPH_TICK_MS (graph.tick_ms): must be at least 1, got 0",
        ]
    );
}

#[test]
fn a_syntax_error_is_one_issue() {
    let e = errors("[graph\n", &[]);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("not valid TOML: TOML parse error at line 1"),
        "{e:?}"
    );
}

#[test]
fn values_that_cannot_work_are_all_reported() {
    assert_eq!(
        errors(
            "[graph]\ntick_ms = 0\n[clickhouse]\nurl = \"localhost:8123\"\n\
             database = \"my-db\"\n[cluster]\nprocesses = 2\nprocess = 3\n\
             [metrics]\nlisten = \"localhost\"\n[log]\nlevel = \"loud\"\n",
            &[]
        ),
        [
            "clickhouse.url: must start with http:// or https://, got \"localhost:8123\"",
            "clickhouse.database: must be a ClickHouse identifier (a letter or _, then \
             letters, digits or _), got \"my-db\"",
            "graph.tick_ms: must be at least 1, got 0",
            "cluster.process: 3 is not below cluster.processes (2)",
            "metrics.listen: not a host:port: \"localhost\" (no :port); \"off\" disables \
             the endpoint",
            "log.level: must be one of error, warn, info, debug, trace, off; got \"loud\"",
        ]
    );
}

#[test]
fn kafka_names_are_checked() {
    assert_eq!(
        errors(
            "[kafka]\nbrokers = \"a:9092,,b\"\nevents_topic = \"shopper events\"\n\
             decisions_topic = \"experience-trees\"\nprogress_topic = \"experience-trees\"\n",
            &[]
        ),
        [
            "kafka.brokers: \"\" is not a host:port (in \"a:9092,,b\")",
            "kafka.events_topic: not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -), \
             got \"shopper events\"",
            "kafka.decisions_topic: \"experience-trees\" is also kafka.trees_topic",
            "kafka.progress_topic: \"experience-trees\" is also kafka.trees_topic",
        ]
    );
    assert!(errors("[kafka]\nbrokers = \"k1:9092, k2, [::1]:9092\"\n", &[]).is_empty());
}

#[test]
fn the_sources_fetch_size_is_bounded() {
    assert_eq!(
        errors("[kafka]\nfetch_min_bytes = 0\n", &[]),
        ["kafka.fetch_min_bytes: must be from 1 to 1048576, got 0"]
    );
    assert_eq!(
        errors("", &[("BASKETFLOW_KAFKA_FETCH_MIN_BYTES", "2000000")]),
        [
            "BASKETFLOW_KAFKA_FETCH_MIN_BYTES (kafka.fetch_min_bytes): must be from 1 to \
             1048576, got 2000000"
        ]
    );
    let r = ok("[kafka]\nfetch_min_bytes = 65536\n", &[]);
    assert_eq!(r.config.kafka.fetch_min_bytes, 65_536);
}

#[test]
fn collector_problems_keep_their_key() {
    assert_eq!(
        errors("[collector]\nretry_after_s = 0\n", &[]),
        ["collector.retry_after_s must be at least 1"]
    );
    assert_eq!(
        errors(
            "[collector]\nauth = \"keys\"\n",
            &[("BASKETFLOW_COLLECTOR_AUTH", "keys")]
        ),
        [
            "BASKETFLOW_COLLECTOR_AUTH (collector.auth): collector.auth = \"keys\" needs at \
             least one [[collector.retailers]] entry"
        ]
    );
}

#[test]
fn metrics_off() {
    for off in ["off", ""] {
        let r = ok(&format!("[metrics]\nlisten = \"{off}\"\n"), &[]);
        assert_eq!(r.config.metrics.listen(), None);
    }
    let r = ok("[metrics]\nlisten = \"[::]:9464\"\n", &[]);
    assert_eq!(r.config.metrics.listen(), Some("[::]:9464"));
}

#[test]
fn environment_overrides_every_kind_of_key() {
    let r = ok(
        "[graph]\ntick_ms = 7\n",
        &[
            ("BASKETFLOW_GRAPH_TICK_MS", "10"),
            ("BASKETFLOW_KAFKA_BROKERS", "k1:9092,k2:9092"),
            ("BASKETFLOW_CLICKHOUSE_PASSWORD", "12345"),
            ("BASKETFLOW_CLICKHOUSE_URL", "https://ch.example:8443"),
            ("BASKETFLOW_CLUSTER_HOSTFILE", "/etc/basketflow/hosts"),
            ("BASKETFLOW_KAFKA_PROGRESS_TOPIC", "\"2024\""),
            ("BASKETFLOW_LOG_FORMAT", "json"),
            (
                "BASKETFLOW_COLLECTOR_CORS_ORIGINS",
                "[\"https://a.example\", \"*\"]",
            ),
            ("BASKETFLOW_COLLECTOR_MAX_BATCH_EVENTS", "100"),
        ],
    );
    let c = &r.config;
    assert_eq!(c.graph.tick_ms, 10);
    assert_eq!(c.kafka.brokers, "k1:9092,k2:9092");
    assert_eq!(
        c.clickhouse.password, "12345",
        "a string key takes the value verbatim"
    );
    assert_eq!(c.clickhouse.url, "https://ch.example:8443");
    assert_eq!(
        c.cluster.hostfile,
        Some(PathBuf::from("/etc/basketflow/hosts"))
    );
    assert_eq!(c.kafka.progress_topic(), "2024");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.collector.cors_origins, ["https://a.example", "*"]);
    assert_eq!(c.collector.max_batch_events, 100);
    assert_eq!(r.from_env["graph.tick_ms"], "BASKETFLOW_GRAPH_TICK_MS");
    assert_eq!(r.from_env.len(), 9);
}

#[test]
fn environment_problems_name_the_variable() {
    assert_eq!(
        errors(
            "",
            &[
                ("BASKETFLOW_GRAPH_TICK_MS", "0"),
                ("BASKETFLOW_CLUSTER_WORKERS", "two"),
                ("BASKETFLOW_GRAPH_FLUSH_INTERVALL_MS", "5"),
                ("BASKETFLOW_KAFKA_BROKER", "k:9092"),
                ("BASKETFLOW_GRAHP_TICK_MS", "5"),
                ("BASKETFLOW_Graph_tick_ms", "5"),
                ("BASKETFLOW_METRICS_LISTEN", "9464"),
            ]
        ),
        [
            "BASKETFLOW_GRAHP_TICK_MS: names no configuration key \
             (BASKETFLOW_<SECTION>_<KEY>; sections: kafka, clickhouse, graph, cluster, \
             metrics, trees, log, collector, privacy, rewards) (did you mean \
             BASKETFLOW_GRAPH_TICK_MS?)",
            "BASKETFLOW_GRAPH_FLUSH_INTERVALL_MS: unknown key graph.flush_intervall_ms \
             (did you mean BASKETFLOW_GRAPH_FLUSH_INTERVAL_MS?)",
            "BASKETFLOW_Graph_tick_ms: configuration variables are upper case: \
             BASKETFLOW_GRAPH_TICK_MS",
            "BASKETFLOW_KAFKA_BROKER: unknown key kafka.broker \
             (did you mean BASKETFLOW_KAFKA_BROKERS?)",
            "BASKETFLOW_CLUSTER_WORKERS (cluster.workers): expected an integer, got a string",
        ]
    );
    // Values are checked once the types are right.
    assert_eq!(
        errors(
            "",
            &[
                ("BASKETFLOW_GRAPH_TICK_MS", "0"),
                ("BASKETFLOW_METRICS_LISTEN", "9464")
            ]
        ),
        [
            "BASKETFLOW_GRAPH_TICK_MS (graph.tick_ms): must be at least 1, got 0",
            "BASKETFLOW_METRICS_LISTEN (metrics.listen): not a host:port: \"9464\" \
             (no :port); \"off\" disables the endpoint",
        ]
    );
}

#[test]
fn variables_of_the_scripts_and_tests_are_not_configuration() {
    let r = ok(
        "",
        &[
            ("BASKETFLOW_BROKERS", "elsewhere:9092"),
            ("BASKETFLOW_STACK_DIR", "/tmp/x"),
            ("BASKETFLOW_VENV", "/tmp/v"),
            ("BASKETFLOW_FAULT_SEED", "7"),
            ("BASKETFLOW_OUTAGE_SECS", "20"),
            ("BASKETFLOW_TEST_ANYTHING", "1"),
            ("BASKETFLOW_LOG_LEVEL", "debug"),
            ("OTHER_GRAPH_TICK_MS", "0"),
        ],
    );
    assert_eq!(r.config.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(
        r.config.log.level, "debug",
        "BASKETFLOW_LOG_LEVEL is log.level"
    );
    assert_eq!(r.from_env.len(), 1);
}

#[test]
fn check_output_masks_the_password_and_names_overrides() {
    let r = ok(
        "[clickhouse]\npassword = \"s3cret\"\n",
        &[("BASKETFLOW_GRAPH_TICK_MS", "10")],
    );
    let out = effective(&r).unwrap();
    assert!(
        out.starts_with("# graph.tick_ms from BASKETFLOW_GRAPH_TICK_MS\n"),
        "{out}"
    );
    assert!(out.contains("password = \"***\""), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    assert!(out.contains("tick_ms = 10"), "{out}");
    // The output is a configuration that means the same (but for the password).
    let again = ok(&out, &[]).config;
    assert_eq!(again.graph.tick_ms, 10);
}

#[test]
fn privacy_defaults_to_three_years_for_every_retailer() {
    let c = ok("", &[]).config;
    assert_eq!(c.privacy.retention_days, 1095);
    assert_eq!(c.privacy.retention_ms, None);
    assert!(c.privacy.retailers.is_empty());
    let retention = c.privacy.retention();
    assert_eq!(retention, Retention::default());
    assert_eq!(retention.default_ms, 1095 * 86_400_000);
    assert_eq!(retention.period_ms("retailer-00"), 1095 * 86_400_000);
}

#[test]
fn privacy_periods_per_retailer_and_in_milliseconds() {
    let text = "[privacy]\nretention_days = 730\n\
                [privacy.retailers]\n\"retailer-00\" = 365\n\"retailer-01\" = 30\n";
    let retention = ok(text, &[]).config.privacy.retention();
    assert_eq!(
        retention,
        Retention {
            default_ms: 730 * MS_PER_DAY,
            per_retailer_ms: BTreeMap::from([
                ("retailer-00".to_string(), 365 * MS_PER_DAY),
                ("retailer-01".to_string(), 30 * MS_PER_DAY),
            ]),
        }
    );
    assert_eq!(retention.period_ms("retailer-01"), 30 * MS_PER_DAY);
    assert_eq!(retention.period_ms("retailer-02"), 730 * MS_PER_DAY);

    // retention_ms replaces retention_days, not the retailers' own periods.
    let r = ok(text, &[("BASKETFLOW_PRIVACY_RETENTION_MS", "5000")]);
    assert_eq!(
        r.from_env["privacy.retention_ms"],
        "BASKETFLOW_PRIVACY_RETENTION_MS"
    );
    let retention = r.config.privacy.retention();
    assert_eq!(retention.default_ms, 5_000);
    assert_eq!(retention.period_ms("retailer-02"), 5_000);
    assert_eq!(retention.period_ms("retailer-00"), 365 * MS_PER_DAY);

    // The environment overrides every key, the table of retailers included.
    let r = ok(
        "",
        &[
            ("BASKETFLOW_PRIVACY_RETENTION_DAYS", "400"),
            ("BASKETFLOW_PRIVACY_RETAILERS", "{ \"r1\" = 7 }"),
        ],
    );
    assert_eq!(r.config.privacy.retention_days, 400);
    assert_eq!(
        r.config.privacy.retention().per_retailer_ms,
        BTreeMap::from([("r1".to_string(), 7 * MS_PER_DAY)])
    );
    // The effective configuration reads back to the same periods.
    let again = ok(&effective(&r).unwrap(), &[]).config;
    assert_eq!(again.privacy.retention(), r.config.privacy.retention());
}

#[test]
fn privacy_periods_of_zero_are_refused() {
    assert_eq!(
        errors(
            "[privacy]\nretention_days = 0\nretention_ms = 0\n\
             [privacy.retailers]\n\"retailer-00\" = 0\n\"retailer-01\" = 10\n",
            &[]
        ),
        [
            "privacy.retention_days: must be at least 1, got 0",
            "privacy.retention_ms: must be at least 1, got 0",
            "privacy.retailers: \"retailer-00\": must be at least 1 day, got 0",
        ]
    );
    assert_eq!(
        errors("", &[("BASKETFLOW_PRIVACY_RETENTION_DAYS", "0")]),
        ["BASKETFLOW_PRIVACY_RETENTION_DAYS (privacy.retention_days): must be at least 1, got 0"]
    );
    assert_eq!(
        errors("[privacy]\nretention_days = -1\nretention_day = 3\n", &[]),
        [
            "unknown key privacy.retention_day (did you mean privacy.retention_days?)",
            "privacy.retention_days: must not be negative, got -1",
        ]
    );
    assert_eq!(
        errors("[privacy.retailers]\nr1 = \"a year\"\n", &[]),
        ["privacy.retailers: \"r1\": expected an integer, got a string"]
    );
    assert_eq!(
        errors("[privacy.retailers]\nr1 = -5\n", &[]),
        ["privacy.retailers: \"r1\": must not be negative, got -5"]
    );
}

#[test]
fn rewards_live_apart_from_the_graph() {
    let out = effective(&ok(
        "[rewards]\npassword = \"rw-s3cret\"\n",
        &[("BASKETFLOW_REWARDS_USER", "payouts")],
    ))
    .unwrap();
    assert!(!out.contains("rw-s3cret"), "{out}");
    assert!(
        out.contains("# rewards.user from BASKETFLOW_REWARDS_USER"),
        "{out}"
    );
    assert!(out.contains("user = \"payouts\""), "{out}");
    let c = ok("", &[]).config;
    assert_eq!(c.rewards.topic, "reward-contacts");
    assert_eq!(c.rewards.database, "basketflow_rewards");
    assert_eq!(c.rewards.user, "basketflow_rewards");
    assert_eq!(
        errors(
            "[rewards]\ntopic = \"shopper-events\"\ndatabase = \"basketflow\"\nuser = \"default\"",
            &[]
        ),
        [
            "rewards.topic: \"shopper-events\" is also kafka.events_topic: reward contacts live apart",
            "rewards.database: must differ from clickhouse.database: reward contacts live apart",
            "rewards.user: must be a user of its own, not \"default\": only the loader may read the contacts",
        ]
    );
}
