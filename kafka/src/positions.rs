//! Source positions: how far the sources had read when an output committed a time.
//!
//! Every durable output (the ClickHouse writer's progress row, the Kafka outputs' progress
//! record) stores, with each committed time `t`, the [`Positions`] the sources had reached at
//! `t`. A restart binds its replay to them, so the replay puts exactly the committed messages at
//! or below `t` (the argument is in `basketflow_ingest::kafka_source`, "Reclocking on restart").
//! The sources emit [`PositionRecord`]s with their messages; the sinks [`fold_positions`] them.

use std::collections::BTreeMap;

/// Next offset to read per partition, by topic: how far the sources had read at a time.
pub type Positions = BTreeMap<String, BTreeMap<i32, i64>>;

/// One position record: after the messages of this time, `topic`'s `partition` continues at
/// `next_offset`.
pub type PositionRecord = (String, i32, i64);

/// Folds position records into `into` (keeping the greater offset per partition).
pub fn fold_positions<'a>(
    into: &mut Positions,
    records: impl IntoIterator<Item = &'a PositionRecord>,
) {
    for (topic, p, next) in records {
        let e = into
            .entry(topic.clone())
            .or_default()
            .entry(*p)
            .or_insert(*next);
        *e = (*e).max(*next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_fold_to_the_greatest_next_offset() {
        let mut p = Positions::new();
        fold_positions(
            &mut p,
            &[
                ("t".to_string(), 0, 5),
                ("t".to_string(), 0, 3),
                ("t".to_string(), 1, 9),
                ("u".to_string(), 0, 1),
            ],
        );
        assert_eq!(
            p,
            Positions::from([
                ("t".into(), BTreeMap::from([(0, 5), (1, 9)])),
                ("u".into(), BTreeMap::from([(0, 1)])),
            ])
        );
    }
}
