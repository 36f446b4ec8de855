-- Acknowledgements of erasure requests (no shopper id: the audit must not keep what it erased).
-- The ClickHouse writer inserts a row once every table has forgotten the shopper (mutations
-- done); a retried batch may insert another, with the same request_id. removed_* count the
-- version rows deleted per table (tombstones included); decisions count log rows.
CREATE TABLE IF NOT EXISTS {database}.privacy_audit_log
(
    request_id String,
    retailer_id String,
    received_at DateTime,
    applied_at DateTime,
    removed_shopper_purchases UInt64,
    removed_baskets UInt64,
    removed_order_lines UInt64,
    removed_experience_decisions UInt64,
    time UInt64
)
ENGINE = MergeTree()
ORDER BY (request_id, time)
