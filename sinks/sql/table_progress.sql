-- Commit log of the ClickHouse sink: a row with time T is inserted only after every version row
-- of every time <= T is in every *_versions table. committed = max(time) (0 when empty); the
-- analyst views show exactly the state at the committed time.
CREATE TABLE IF NOT EXISTS {database}.progress
(
    time UInt64,
    written_at DateTime,
    note String
)
ENGINE = MergeTree()
ORDER BY time
