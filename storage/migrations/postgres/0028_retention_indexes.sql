-- Retention (storage/retention.py) deletes rows past a horizon in bounded batches, each
-- batch "the oldest N rows past the cutoff": without an index on the time column every
-- batch would scan the whole table. One index per pruned table whose time column had none.
CREATE INDEX IF NOT EXISTS issues_last_seen ON issues (last_seen);
CREATE INDEX IF NOT EXISTS issue_activity_age ON issue_activity (date_added);
CREATE INDEX IF NOT EXISTS login_failures_age ON login_failures (at);
CREATE INDEX IF NOT EXISTS anomalies_closed_age ON anomalies (closed_at) WHERE status = 'closed';
CREATE INDEX IF NOT EXISTS ingest_dead_letters_age ON ingest_dead_letters (failed_at);
CREATE INDEX IF NOT EXISTS notification_deliveries_failed_age
    ON notification_deliveries (created_at) WHERE status = 'failed';
