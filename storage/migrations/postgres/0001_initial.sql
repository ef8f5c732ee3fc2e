-- Crashray metadata schema, version 1.
-- 64-bit ids everywhere (ARCHITECTURE.md: "64-bit ids from day one").

CREATE TABLE organizations (
    id          bigserial PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    date_added  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    slug            text NOT NULL,
    name            text NOT NULL,
    platform        text,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    grouping_config text NOT NULL DEFAULT 'v1',
    -- Sentry's legacy data-scrubbing options (relay-pii/src/convert.rs), Sentry's defaults.
    scrub_data          boolean NOT NULL DEFAULT true,
    scrub_defaults      boolean NOT NULL DEFAULT true,
    scrub_ip_addresses  boolean NOT NULL DEFAULT true,
    sensitive_fields    text[] NOT NULL DEFAULT '{}',
    exclude_fields      text[] NOT NULL DEFAULT '{}',
    date_added      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, slug)
);

CREATE TABLE project_keys (
    id          bigserial PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    public_key  text NOT NULL UNIQUE,
    secret_key  text NOT NULL,
    label       text NOT NULL DEFAULT 'Default',
    is_active   boolean NOT NULL DEFAULT true,
    rate_limit_window_s integer,
    rate_limit_count    integer,
    date_added  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL UNIQUE,
    email       text,
    password_hash text,
    is_superuser boolean NOT NULL DEFAULT false,
    date_joined timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_tokens (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         bigint REFERENCES users(id) ON DELETE CASCADE,
    -- sha256 of the token; the token itself is shown once and never stored.
    token_hash      text NOT NULL UNIQUE,
    name            text NOT NULL,
    scopes          text[] NOT NULL,
    date_added      timestamptz NOT NULL DEFAULT now()
);

-- Issues ("groups" in Sentry's schema).
CREATE TABLE issues (
    id          bigserial PRIMARY KEY,
    project_id  bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title       text NOT NULL,
    culprit     text NOT NULL DEFAULT '',
    type        text NOT NULL DEFAULT 'error',
    metadata    jsonb NOT NULL DEFAULT '{}',
    level       text NOT NULL DEFAULT 'error',
    platform    text NOT NULL DEFAULT 'other',
    status      text NOT NULL DEFAULT 'unresolved',
    substatus   text,
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    times_seen  bigint NOT NULL DEFAULT 0,
    first_release text,
    last_release  text
);
CREATE INDEX issues_project_last_seen ON issues (project_id, last_seen DESC);

-- hash -> issue, so that merges never rewrite ClickHouse rows.
CREATE TABLE group_hashes (
    project_id  bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    hash        text NOT NULL,
    issue_id    bigint NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    grouping_config text NOT NULL,
    PRIMARY KEY (project_id, hash)
);
CREATE INDEX group_hashes_issue ON group_hashes (issue_id);

-- The durable hand-off of the embedded default: what ingest accepted and the consumers
-- have not yet stored. A row is deleted only after its event is in ClickHouse.
CREATE TABLE ingest_queue (
    id              bigserial PRIMARY KEY,
    project_id      bigint NOT NULL,
    organization_id bigint NOT NULL,
    key_id          bigint,
    item_type       text NOT NULL,
    event_id        text,
    received_at     timestamptz NOT NULL,
    meta            jsonb NOT NULL,
    payload         bytea NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    claimed_until   timestamptz
);
CREATE INDEX ingest_queue_claimable ON ingest_queue (claimed_until NULLS FIRST, id);

-- Items that failed processing consumer_max_attempts times: kept, never lost.
CREATE TABLE ingest_dead_letters (
    id              bigint PRIMARY KEY,
    project_id      bigint NOT NULL,
    organization_id bigint NOT NULL,
    item_type       text NOT NULL,
    event_id        text,
    received_at     timestamptz NOT NULL,
    meta            jsonb NOT NULL,
    payload         bytea NOT NULL,
    attempts        integer NOT NULL,
    error           text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now()
);

-- Events already counted into their issue: a re-delivered event is stored again
-- idempotently (ClickHouse ReplacingMergeTree) but never counted twice.
CREATE TABLE processed_events (
    project_id  bigint NOT NULL,
    event_id    text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, event_id)
);
CREATE INDEX processed_events_age ON processed_events (processed_at);
