-- Late inputs (rule 7): a payment or cancellation read after its order settled
-- (graph.settlement_ms after its first payment was read). The settled figures stand; these
-- rows say what came too late. No shopper id. A replay writes the same rows again (same
-- time); the view below shows each once. time is the logical time it was read (ms).
CREATE TABLE IF NOT EXISTS {database}.late_events_log
(
    retailer_id String,
    order_id String,
    event_id String,
    event_type String,
    reason String,
    occurred_at DateTime,
    read_at DateTime,
    time UInt64
)
ENGINE = ReplacingMergeTree(time)
PARTITION BY toYYYYMM(read_at)
ORDER BY (retailer_id, order_id, event_id, time)
