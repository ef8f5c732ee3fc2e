-- What each organization has in the ingest queue (items and payload bytes), for ingest's
-- per-organization backlog caps (CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG and
-- CRASHRAY_MAX_QUEUED_BYTES_PER_ORG), which each ingest replica reads once a second.
-- Counting the queue itself scans it: 130 ms at a million items, warm (bench/queue_usage.py),
-- a seventh of a core per replica just when the queue is long. Instead each statement that
-- adds or removes queue rows appends one row per organization with the change it made
-- (statement triggers over the statement's transition table; within noise of the COPY's and
-- the consumers' delete's cost), and a reader sums them (1 ms). Append-only, so the
-- hand-off's COPY and the consumers' deletes never wait for each other on a shared counter
-- row; the rows land in the writer's transaction, so the sum is exact at every commit.
-- storage/queue.py folds them into one row per organization (queued_per_organization).
-- Queue rows never change organization or payload once written (updates only claim them).
CREATE TABLE ingest_queue_usage (
    organization_id bigint NOT NULL,
    items           bigint NOT NULL,
    bytes           bigint NOT NULL
);

CREATE FUNCTION ingest_queue_usage_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ingest_queue_usage (organization_id, items, bytes)
    SELECT organization_id, count(*), coalesce(sum(octet_length(payload)), 0)
    FROM added GROUP BY organization_id;
    RETURN NULL;
END $$;

CREATE FUNCTION ingest_queue_usage_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ingest_queue_usage (organization_id, items, bytes)
    SELECT organization_id, -count(*), -coalesce(sum(octet_length(payload)), 0)
    FROM removed GROUP BY organization_id;
    RETURN NULL;
END $$;

CREATE FUNCTION ingest_queue_usage_emptied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ingest_queue_usage;
    RETURN NULL;
END $$;

CREATE TRIGGER ingest_queue_usage_insert AFTER INSERT ON ingest_queue
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_queue_usage_added();
CREATE TRIGGER ingest_queue_usage_delete AFTER DELETE ON ingest_queue
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_queue_usage_removed();
CREATE TRIGGER ingest_queue_usage_truncate AFTER TRUNCATE ON ingest_queue
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_queue_usage_emptied();

-- What is queued already (the migration runs before ingest starts).
INSERT INTO ingest_queue_usage (organization_id, items, bytes)
SELECT organization_id, count(*), sum(octet_length(payload))
FROM ingest_queue GROUP BY organization_id;
