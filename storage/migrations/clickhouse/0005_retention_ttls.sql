-- Retention per table (storage/retention.py). Raw data keeps its 90 days: events and
-- envelope items by their rows' ``retention_days`` (CRASHRAY_RETENTION_DAYS when written),
-- outcomes and raw sessions by the table TTL. The hourly issue rollup is an aggregate (one
-- row per issue and hour) and keeps a year (CRASHRAY_ROLLUP_RETENTION_DAYS), no longer the
-- raw events' horizon. A migration cannot read settings: these are the defaults, and every
-- start sets each table's TTL from the settings when it differs (retention.apply_ttls).
ALTER TABLE issue_counts_hourly MODIFY TTL hour + toIntervalDay(365);
