-- Quotas (spec §5.4): per organization, project or key, per data category, per fixed window.
CREATE TABLE quotas (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    scope           text NOT NULL CHECK (scope IN ('organization', 'project', 'key')),
    -- The project or key id for those scopes; NULL: each project/key of the organization.
    scope_id        bigint,
    categories      text[] NOT NULL DEFAULT '{}',
    window_s        integer NOT NULL CHECK (window_s >= 0),
    -- NULL: count only; 0: refuse everything.
    quota_limit     bigint CHECK (quota_limit >= 0),
    reason_code     text NOT NULL DEFAULT '',
    date_added      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quotas_organization ON quotas (organization_id);

-- Counters of the rate-limiter actors, so that a restarted actor keeps its windows. Rows of
-- the spike-protection counters are kept for the hourly baseline (72 h); others until their
-- window ends.
CREATE TABLE quota_counters (
    counter     text NOT NULL,
    slot        bigint NOT NULL,
    count       bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (counter, slot)
);
CREATE INDEX quota_counters_expiry ON quota_counters (expires_at);

-- Spike protection per project (on by default); NULL: the instance's settings.
ALTER TABLE projects
    ADD COLUMN spike_protection boolean NOT NULL DEFAULT true,
    ADD COLUMN spike_multiplier double precision CHECK (spike_multiplier > 0),
    ADD COLUMN spike_floor_per_hour bigint CHECK (spike_floor_per_hour >= 0);
