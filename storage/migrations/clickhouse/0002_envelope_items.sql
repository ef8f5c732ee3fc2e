-- Envelope items Crashray accepts but does not interpret yet (attachments, user feedback,
-- cron check-ins): kept as sent, with their item headers, so nothing accepted is lost and
-- a later version can process them.
CREATE TABLE IF NOT EXISTS envelope_items (
    organization_id UInt64,
    project_id  UInt64,
    event_id    String,
    item_type   LowCardinality(String),
    received    DateTime64(3, 'UTC'),
    headers     String,
    payload     String CODEC(ZSTD(3)),
    retention_days UInt16
)
ENGINE = MergeTree
PARTITION BY (retention_days, toMonday(received))
ORDER BY (project_id, item_type, event_id, received)
TTL toDateTime(received) + toIntervalDay(retention_days);
