-- One row per late input (replayed copies collapse): which event of which order came after
-- the order settled, why, when it happened and when it was read. Counted by reason in
-- /metrics as basketflow_late_inputs_total.
CREATE VIEW IF NOT EXISTS {database}.late_events AS
SELECT DISTINCT
    retailer_id,
    order_id,
    event_id,
    event_type,
    reason,
    occurred_at,
    read_at
FROM {database}.late_events_log
