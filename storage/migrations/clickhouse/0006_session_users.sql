-- Release health counts users as Sentry does: the distinct ids (``did``) of the sessions
-- (crash-free users = users without a crashed session / users). Rows written before this
-- have no id and count no user.
ALTER TABLE sessions_raw ADD COLUMN IF NOT EXISTS distinct_id String DEFAULT '' AFTER session_id;

-- A release's events (its page's event count, first and last event): the sort key is by
-- project and day, so a release's rows are found through this index, skipping the
-- granules without them (parts written before are indexed as they merge).
ALTER TABLE events ADD INDEX IF NOT EXISTS idx_release release TYPE bloom_filter(0.01) GRANULARITY 1;
