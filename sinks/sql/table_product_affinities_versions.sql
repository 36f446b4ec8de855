-- Versions of the product_affinities read model (see sold_products_daily_versions).
CREATE TABLE IF NOT EXISTS {database}.product_affinities_versions
(
    retailer_id String,
    product_a String,
    product_b String,
    orders_together Int64,
    deleted UInt8,
    time UInt64
)
ENGINE = ReplacingMergeTree(time)
ORDER BY (retailer_id, product_a, product_b, time)
