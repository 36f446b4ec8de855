-- Versions of the baskets read model (see sold_products_daily_versions).
CREATE TABLE IF NOT EXISTS {database}.baskets_versions
(
    retailer_id String,
    shopper_id String,
    product_id String,
    quantity Int64,
    deleted UInt8,
    time UInt64
)
ENGINE = ReplacingMergeTree(time)
ORDER BY (retailer_id, shopper_id, product_id, time)
