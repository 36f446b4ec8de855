-- Versions of the sold_products_daily read model: one row per key and graph time at which the
-- key changed (deleted = 1: the key has no row from that time on). Ordered by (key, time) so that
-- merges only collapse identical versions (replays), never a committed version (see
-- sinks/src/clickhouse/mod.rs). Columns and key: the read model's definition in
-- vocab/src/read_models.rs (a test of sinks/src/clickhouse/schema.rs compares them).
-- Monthly partitions so that retention can drop whole months.
CREATE TABLE IF NOT EXISTS {database}.sold_products_daily_versions
(
    day Date,
    retailer_id String,
    product_id String,
    category String,
    quantity Int64,
    revenue_cents Int64,
    orders Int64,
    deleted UInt8,
    time UInt64
)
ENGINE = ReplacingMergeTree(time)
PARTITION BY toYYYYMM(day)
ORDER BY (day, retailer_id, product_id, category, time)
