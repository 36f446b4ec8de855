-- Versions of the shopper_purchases read model (see sold_products_daily_versions).
CREATE TABLE IF NOT EXISTS {database}.shopper_purchases_versions
(
    retailer_id String,
    shopper_id String,
    product_id String,
    quantity Int64,
    orders Int64,
    last_purchase_at DateTime,
    deleted UInt8,
    time UInt64
)
ENGINE = ReplacingMergeTree(time)
ORDER BY (retailer_id, shopper_id, product_id, time)
