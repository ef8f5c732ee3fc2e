-- Counts bound for ClickHouse: each finished consumer batch's hourly issue counts and
-- outcomes, written in the transaction that deletes the batch's queue items, so they exist
-- exactly when those items were finished. A consumer ships a row to ClickHouse after the
-- commit under the row's token (ClickHouse's insert_deduplication_token), then deletes it;
-- a row left behind by a crash is shipped again after ``claimed_until`` under the same
-- token, and ClickHouse drops the copy: nothing is counted twice, nothing is lost.
CREATE TABLE clickhouse_outbox (
    id            bigserial PRIMARY KEY,
    -- Unique across databases too: a fresh PostgreSQL beside an old ClickHouse must not
    -- reuse a token ClickHouse still remembers.
    token         uuid NOT NULL DEFAULT gen_random_uuid(),
    rows          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    claimed_until timestamptz NOT NULL
);
CREATE INDEX clickhouse_outbox_claimable ON clickhouse_outbox (claimed_until);

-- Dead letters keep the item's DSN key, so a replayed item is counted under it again, and
-- are listed per organization.
ALTER TABLE ingest_dead_letters ADD COLUMN key_id bigint;
CREATE INDEX ingest_dead_letters_organization ON ingest_dead_letters (organization_id, id);
