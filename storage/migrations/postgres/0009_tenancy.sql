-- Organizations, teams, members and sessions (Sentry's tenancy model).
ALTER TABLE organizations ADD COLUMN open_membership boolean NOT NULL DEFAULT true;

CREATE TABLE organization_members (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('member', 'admin', 'manager', 'owner')),
    date_added      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, user_id)
);

CREATE TABLE teams (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    slug            text NOT NULL,
    name            text NOT NULL,
    date_added      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, slug)
);

CREATE TABLE team_members (
    team_id     bigint NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    member_id   bigint NOT NULL REFERENCES organization_members(id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, member_id)
);

CREATE TABLE project_teams (
    project_id  bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    team_id     bigint NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    PRIMARY KEY (project_id, team_id)
);

-- A user token (user_id set, organization_id NULL) acts in the user's organizations; an
-- organization token (organization_id set) in that one organization only.
ALTER TABLE api_tokens ALTER COLUMN organization_id DROP NOT NULL;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_owner
    CHECK (organization_id IS NOT NULL OR user_id IS NOT NULL);

-- Browser sessions: only the sha256 of the cookie is stored; the CSRF token is per session.
CREATE TABLE user_sessions (
    session_hash text PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    expires_at   timestamptz NOT NULL,
    date_added   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_sessions_expiry ON user_sessions (expires_at);

-- Failed logins, for the login rate limit (per username and per client address).
CREATE TABLE login_failures (
    id          bigserial PRIMARY KEY,
    username    text NOT NULL,
    client_ip   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_username ON login_failures (username, at);
CREATE INDEX login_failures_ip ON login_failures (client_ip, at);
