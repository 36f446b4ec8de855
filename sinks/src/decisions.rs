//! Decisions into ClickHouse, for attribution (the storefronts' Kafka topic is written by
//! [`crate::kafka_outputs`], exactly once).
//!
//! **ClickHouse** (`experience_decisions`): decisions travel with the read models to the
//! ClickHouse writer on worker 0 ([`crate::read_model_sink`]), which inserts those of each
//! batch of completed times into `experience_decisions_log` before the batch's progress row
//! (`ReplacingMergeTree` by `decision_id`, so a replay's copy collapses; a crash's copies above
//! the committed time are discarded); an erasure deletes the shopper's decisions after they are
//! written, in the same batch. The analyst view `experience_decisions` shows one row per
//! decision (the first `decided_at` among copies) with no `FINAL` needed. Both are created by
//! [`crate::clickhouse_sink::ClickHouseSink::migrate`] from `sinks/sql/`, like the read models'.

use basketflow_vocab::{Decision, ParamValue};
use clickhouse::Row;
use serde::Serialize;

/// One row of `experience_decisions_log`.
#[derive(Row, Serialize)]
pub(crate) struct DecisionRow {
    decision_id: String,
    retailer_id: String,
    shopper_id: String,
    session_id: String,
    kind: String,
    params: String,
    tree_id: String,
    tree_version: u64,
    node_id: String,
    reasons: Vec<String>,
    caused_by_event_id: String,
    caused_by_partition: i32,
    caused_by_offset: i64,
    occurred_at: u32,
    decided_at: u32,
    time: u64,
}

fn seconds(t: basketflow_vocab::Timestamp) -> u32 {
    u32::try_from(t.unix_seconds().max(0)).unwrap_or(u32::MAX)
}

impl From<Decision> for DecisionRow {
    fn from(d: Decision) -> Self {
        let params: serde_json::Map<String, serde_json::Value> = d
            .experience
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ParamValue::Int(i) => serde_json::json!(i),
                    ParamValue::Text(s) => serde_json::json!(s),
                    ParamValue::List(l) => serde_json::json!(l),
                };
                (k.clone(), v)
            })
            .collect();
        DecisionRow {
            decision_id: d.decision_id,
            retailer_id: d.retailer_id,
            shopper_id: d.shopper_id,
            session_id: d.session_id.unwrap_or_default(),
            kind: d.experience.kind.as_str().to_string(),
            params: serde_json::Value::Object(params).to_string(),
            tree_id: d.tree_id,
            tree_version: d.tree_version,
            node_id: d.node_id,
            reasons: d.reasons,
            caused_by_event_id: d.caused_by.event_id,
            caused_by_partition: d.caused_by.partition,
            caused_by_offset: d.caused_by.offset,
            occurred_at: seconds(d.caused_by.occurred_at),
            decided_at: seconds(d.decided_at),
            time: d.time,
        }
    }
}
