-- One row per applied erasure request: when it was read (received_at, the broker's time of
-- the request), when every table had forgotten the shopper (applied_at, the first
-- acknowledgement), and the rows removed per table (a retry after a crash finds nothing left
-- to remove, so the greatest count is the true one). A request id is unique per retailer only,
-- so rows are grouped by retailer and request.
CREATE VIEW IF NOT EXISTS {database}.privacy_audit AS
SELECT
    request_id,
    retailer_id,
    min(received_at) AS received_at,
    min(applied_at) AS applied_at,
    max(removed_shopper_purchases) AS removed_shopper_purchases,
    max(removed_baskets) AS removed_baskets,
    max(removed_order_lines) AS removed_order_lines,
    max(removed_experience_decisions) AS removed_experience_decisions
FROM {database}.privacy_audit_log
GROUP BY retailer_id, request_id
