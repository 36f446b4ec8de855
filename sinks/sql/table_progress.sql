-- Commit log of the ClickHouse sink: a row with time T is inserted only after every version row
-- of every time <= T is in every *_versions table. committed = max(time) (0 when empty); the
-- analyst views show exactly the state at the committed time. `positions` (JSON, topic ->
-- partition -> next offset) says how far the sources had read at `time`: a restart reclocks its
-- replay by it, so the messages at or below `time` are exactly those already written. `tick_ms`
-- is the graph's tick that reclocking used (0 in rows of older versions): a restart with another
-- tick would reclock differently, and `basketflow run` refuses it. `dedup_horizon_ms` likewise
-- (graph.dedup_horizon_ms; 0 in older rows): another horizon would de-duplicate the replay
-- differently from the outputs written; `settlement_ms` likewise (graph.settlement_ms).
CREATE TABLE IF NOT EXISTS {database}.progress
(
    time UInt64,
    written_at DateTime,
    note String,
    positions String,
    tick_ms UInt64,
    dedup_horizon_ms UInt64,
    settlement_ms UInt64
)
ENGINE = MergeTree()
ORDER BY time
