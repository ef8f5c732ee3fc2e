-- Issue alert rules (issue 13; events/alert_rules.py parses and evaluates them). The rule is
-- kept as Sentry's API body (conditions, filters, actions, actionMatch, filterMatch); the
-- columns beside it are what queries select on.
CREATE TABLE alert_rules (
    id                bigserial PRIMARY KEY,
    organization_id   bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id        bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name              text NOT NULL,
    environment       text,
    frequency_minutes integer NOT NULL,
    body              jsonb NOT NULL,
    created_by        text,
    date_created      timestamptz NOT NULL DEFAULT now(),
    date_updated      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_rules_project ON alert_rules (organization_id, project_id, id);

-- When a rule last notified about an issue: ``frequency_minutes`` apart at most, decided by
-- one conditional upsert, so two consumers never both fire for the same issue.
CREATE TABLE alert_rule_fires (
    rule_id       bigint NOT NULL REFERENCES alert_rules (id) ON DELETE CASCADE,
    issue_id      bigint NOT NULL,
    last_fired_at timestamptz NOT NULL,
    PRIMARY KEY (rule_id, issue_id)
);

-- Per-issue event counts and users in time buckets, for the frequency conditions: counted
-- in the consumer's batch transaction (exact across consumers and restarts), only for the
-- projects whose rules ask for them. ``width_s`` is 60 (minutes, for windows up to a day)
-- or 3600 (hours, for a week and 30 days). ``environment`` '' holds every event; an event
-- with an environment is counted under it too (a rule with an environment counts only it).
CREATE TABLE alert_issue_counts (
    issue_id    bigint NOT NULL,
    width_s     integer NOT NULL,
    environment text NOT NULL,
    bucket      timestamptz NOT NULL,
    events      bigint NOT NULL,
    PRIMARY KEY (issue_id, width_s, environment, bucket)
);
CREATE INDEX alert_issue_counts_bucket ON alert_issue_counts (bucket);
CREATE TABLE alert_issue_users (
    issue_id    bigint NOT NULL,
    width_s     integer NOT NULL,
    environment text NOT NULL,
    bucket      timestamptz NOT NULL,
    user_key    text NOT NULL,
    PRIMARY KEY (issue_id, width_s, environment, bucket, user_key)
);
CREATE INDEX alert_issue_users_bucket ON alert_issue_users (bucket);
