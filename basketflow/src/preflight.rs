//! Operator errors: what `basketflow run` checks before it forms its cluster, and how it refuses.
//!
//! A topic that does not exist, brokers or a ClickHouse that do not answer, a `graph.tick_ms`
//! other than the one the committed outputs were written with, processes that disagree on
//! their configuration: these are an operator's mistakes, not bugs. Each ends the
//! process with one error line on stderr that says what is wrong and what to do, and exit status
//! [`OPERATOR_ERROR`]; a panic (status 101) stays the answer to bugs and crashes. Checked before
//! the cluster forms, a mistake is reported once per process, in seconds, instead of as a
//! worker's panic deep in the graph's start-up.

use std::fmt::Display;

use basketflow_kafka::{check_topics_exist, read_progress_record, TopicError};
use basketflow_sinks::clickhouse::Target;

use crate::config::Config;

/// Exit status of `basketflow run` on an operator error (see the README's "Operations").
pub const OPERATOR_ERROR: i32 = 3;

/// Refuses to start, with [`refuse`], unless the topics the graph reads exist on the brokers and
/// ClickHouse answers. Call before the cluster forms.
pub fn check(config: &Config) {
    let kafka = &config.kafka;
    let read = [
        (kafka.events_topic.as_str(), "kafka.events_topic"),
        (kafka.trees_topic.as_str(), "kafka.trees_topic"),
    ];
    let topics: Vec<&str> = read.iter().map(|(topic, _)| *topic).collect();
    if let Err(e) = check_topics_exist(&kafka.brokers, &topics) {
        let key = read
            .iter()
            .find(|(topic, _)| *topic == e.topic())
            .map_or("kafka", |(_, key)| *key);
        match &e {
            TopicError::Missing { .. } => refuse(format_args!(
                "{e}: create it with scripts/stack up or set {key}"
            )),
            TopicError::Unavailable { .. } => refuse(format_args!(
                "{e}: check that the brokers are up and kafka.brokers names them"
            )),
        }
    }
    let clickhouse = &config.clickhouse;
    let target = clickhouse_target(config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let answered = runtime.block_on(async {
        let store = target.connect().await?;
        Ok::<_, basketflow_sinks::clickhouse::ClickHouseError>((
            store.committed_tick_ms().await?,
            [
                store.committed_dedup_horizon_ms().await?,
                store.committed_settlement_ms().await?,
            ],
        ))
    });
    let (clickhouse_tick, [clickhouse_horizon, clickhouse_settlement]) = match answered {
        Ok(recorded) => recorded,
        Err(e) => refuse(format_args!(
            "cannot use ClickHouse at {}: {e}: check that it is up (scripts/stack up) and \
             clickhouse.url, clickhouse.database, clickhouse.user and clickhouse.password",
            clickhouse.url
        )),
    };
    // The replay is reclocked by the committed positions with the tick they were written with
    // (ingest::kafka_source): another tick would put some replayed messages above the
    // committed time, and they would be written twice.
    let progress_topic = config.kafka.progress_topic();
    // Created at the first start: until then there is nothing to check.
    let kafka_record = check_topics_exist(&config.kafka.brokers, &[&progress_topic])
        .ok()
        .and_then(|()| read_progress_record(&config.kafka.brokers, &progress_topic).ok())
        .flatten();
    let kafka_tick = kafka_record.as_ref().and_then(|p| p.tick_ms);
    let kafka_horizon = kafka_record.as_ref().and_then(|p| p.dedup_horizon_ms);
    let kafka_settlement = kafka_record.as_ref().and_then(|p| p.settlement_ms);
    let in_clickhouse = format!("ClickHouse {}.progress", clickhouse.database);
    let in_kafka = format!("Kafka topic {progress_topic}");
    // The horizons likewise: a replay with others would compute other figures than those
    // already written (rule 1 would de-duplicate, rule 7 settle, differently).
    let g = &config.graph;
    for (name, configured, recorded) in [
        (
            "graph.dedup_horizon_ms",
            g.dedup_horizon_ms,
            [clickhouse_horizon, kafka_horizon],
        ),
        (
            "graph.settlement_ms",
            g.settlement_ms,
            [clickhouse_settlement, kafka_settlement],
        ),
    ] {
        for (value, place) in recorded.into_iter().zip([&in_clickhouse, &in_kafka]) {
            if let Some(value) = value.filter(|v| *v != configured) {
                refuse(format_args!(
                    "{name} is {configured} but the committed outputs in {place} were written \
                     with {value}: the replay would compute other figures than those written; \
                     set {name} = {value}, or start over with a new clickhouse.database and \
                     kafka.decisions_topic"
                ));
            }
        }
    }
    for (tick, place) in [(clickhouse_tick, in_clickhouse), (kafka_tick, in_kafka)] {
        if let Some(tick) = tick.filter(|t| *t != config.graph.tick_ms) {
            refuse(format_args!(
                "graph.tick_ms is {} but the committed outputs in {place} were written with \
                 {tick}: the replay would be reclocked differently and write some messages \
                 twice; set graph.tick_ms = {tick}, or start over with a new \
                 clickhouse.database and kafka.decisions_topic",
                config.graph.tick_ms
            ));
        }
    }
}

/// The ClickHouse target of `config` (the read models' writer, the preflight's checks).
pub fn clickhouse_target(config: &Config) -> Target {
    let clickhouse = &config.clickhouse;
    Target {
        url: clickhouse.url.clone(),
        database: clickhouse.database.clone(),
        user: clickhouse.user.clone(),
        password: clickhouse.password.clone(),
        tick_ms: config.graph.tick_ms,
        dedup_horizon_ms: config.graph.dedup_horizon_ms,
        settlement_ms: config.graph.settlement_ms,
    }
}

/// Logs `message` as one error line (line breaks in it, e.g. from a server's answer, become
/// spaces) and exits with [`OPERATOR_ERROR`].
pub fn refuse(message: impl Display) -> ! {
    let message = message.to_string();
    let line: Vec<&str> = message.split_whitespace().collect();
    log::error!("{}", line.join(" "));
    std::process::exit(OPERATOR_ERROR);
}
