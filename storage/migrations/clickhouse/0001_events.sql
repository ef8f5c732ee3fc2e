-- Error events, shaped by the queries (ARCHITECTURE.md, Snuba's lesson): one project's
-- issue/event lists read a contiguous range of the primary key.
-- ReplacingMergeTree: a re-delivered event (at-least-once hand-off) has the same sorting
-- key and collapses into one row on merge; readers de-duplicate with LIMIT 1 BY event_id.
CREATE TABLE IF NOT EXISTS events (
    organization_id UInt64,
    project_id      UInt64,
    event_id        UUID,
    group_id        UInt64,
    primary_hash    FixedString(32),
    timestamp       DateTime64(6, 'UTC'),
    received        DateTime64(6, 'UTC'),
    retention_days  UInt16,
    type            LowCardinality(String),
    platform        LowCardinality(String),
    level           LowCardinality(String),
    environment     LowCardinality(String),
    release         LowCardinality(String),
    dist            LowCardinality(String),
    transaction     String,
    logger          LowCardinality(String),
    server_name     LowCardinality(String),
    title           String,
    message         String,
    culprit         String,
    user_id         String,
    user_email      String,
    user_username   String,
    user_ip         String,
    sdk_name        LowCardinality(String),
    sdk_version     LowCardinality(String),
    tags            Map(String, String),
    exception_types  Array(String),
    exception_values Array(String),
    frame_functions  Array(String),
    frame_modules    Array(String),
    frame_filenames  Array(String),
    frame_in_app     Array(UInt8),
    body            String CODEC(ZSTD(3)),
    INDEX idx_tag_pairs arrayMap((k, v) -> cityHash64(k, v), mapKeys(tags), mapValues(tags)) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_event_id event_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY (retention_days, toMonday(timestamp))
ORDER BY (project_id, toStartOfDay(timestamp), group_id, cityHash64(event_id))
SAMPLE BY cityHash64(event_id)
TTL toDateTime(timestamp) + toIntervalDay(retention_days)
SETTINGS index_granularity = 8192;

-- Hourly per-issue counts so list pages never rescan raw events.
CREATE TABLE IF NOT EXISTS issue_counts_hourly (
    project_id  UInt64,
    group_id    UInt64,
    hour        DateTime('UTC'),
    retention_days UInt16,
    count       UInt64
)
ENGINE = SummingMergeTree(count)
PARTITION BY (retention_days, toMonday(hour))
ORDER BY (project_id, group_id, hour)
TTL hour + toIntervalDay(retention_days);

CREATE MATERIALIZED VIEW IF NOT EXISTS issue_counts_hourly_mv TO issue_counts_hourly AS
SELECT project_id, group_id, toStartOfHour(timestamp) AS hour, retention_days, count() AS count
FROM events
GROUP BY project_id, group_id, hour, retention_days;

-- Outcomes: every item is accounted for (accepted, filtered, rate_limited, invalid,
-- client_discard), per project, category and hour.
CREATE TABLE IF NOT EXISTS outcomes (
    organization_id UInt64,
    project_id  UInt64,
    key_id      UInt64,
    hour        DateTime('UTC'),
    outcome     LowCardinality(String),
    reason      LowCardinality(String),
    category    LowCardinality(String),
    quantity    UInt64
)
ENGINE = SummingMergeTree(quantity)
PARTITION BY toMonday(hour)
ORDER BY (organization_id, project_id, hour, outcome, category, reason, key_id)
TTL hour + toIntervalDay(90);

-- Release-health sessions, as received (session and sessions items), for later rollups.
-- (queue_id, row) identify a row across re-deliveries: ReplacingMergeTree collapses copies.
CREATE TABLE IF NOT EXISTS sessions_raw (
    queue_id    UInt64,
    row         UInt16,
    organization_id UInt64,
    project_id  UInt64,
    received    DateTime64(3, 'UTC'),
    session_id  String,
    status      LowCardinality(String),
    errors      UInt32,
    is_init     UInt8,
    release     LowCardinality(String),
    environment LowCardinality(String),
    started     DateTime64(3, 'UTC'),
    duration_s  Float64,
    quantity    UInt32
)
ENGINE = ReplacingMergeTree
PARTITION BY toMonday(received)
ORDER BY (project_id, release, received, queue_id, row)
TTL toDateTime(received) + toIntervalDay(90);
