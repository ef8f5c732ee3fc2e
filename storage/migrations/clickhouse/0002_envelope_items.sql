-- Envelope items Crashray accepts but does not interpret yet (attachments, user feedback,
-- cron check-ins): kept as sent, with their item headers, so nothing accepted is lost and
-- a later version can process them. queue_id identifies an item across re-deliveries:
-- ReplacingMergeTree collapses the copies.
CREATE TABLE IF NOT EXISTS envelope_items (
    queue_id    UInt64,
    organization_id UInt64,
    project_id  UInt64,
    event_id    String,
    item_type   LowCardinality(String),
    received    DateTime64(3, 'UTC'),
    headers     String,
    payload     String CODEC(ZSTD(3)),
    retention_days UInt16
)
ENGINE = ReplacingMergeTree
PARTITION BY (retention_days, toMonday(received))
ORDER BY (project_id, item_type, event_id, queue_id)
TTL toDateTime(received) + toIntervalDay(retention_days);
