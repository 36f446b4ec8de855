-- Versions of the order_lines read model (see sold_products_daily_versions): one line per
-- (retailer_id, order_id, product_id, category) of every paid order, cancelled ones included
-- (cancelled = 1). Monthly partitions by the order's day so that retention can drop whole
-- months; tombstones (deleted = 1) carry no day and land in 1970-01.
CREATE TABLE IF NOT EXISTS {database}.order_lines_versions
(
    retailer_id String,
    order_id String,
    shopper_id String,
    product_id String,
    category String,
    quantity Int64,
    revenue_cents Int64,
    ordered_at DateTime,
    day Date,
    cancelled UInt8,
    deleted UInt8,
    time UInt64
)
ENGINE = ReplacingMergeTree(time)
PARTITION BY toYYYYMM(day)
ORDER BY (retailer_id, order_id, product_id, category, time)
