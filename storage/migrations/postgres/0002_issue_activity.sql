-- Issue lifecycle: who changed an issue's state, and automatic regressions.
CREATE TABLE issue_activity (
    id          bigserial PRIMARY KEY,
    issue_id    bigint NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    project_id  bigint NOT NULL,
    type        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',
    actor       text NOT NULL,
    date_added  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX issue_activity_issue ON issue_activity (issue_id, id);

ALTER TABLE issues ADD CONSTRAINT issues_status_known
    CHECK (status IN ('unresolved', 'resolved', 'ignored'));

-- What a state was set with (inRelease, ignoreCount and its starting count, ignoreUntil).
ALTER TABLE issues ADD COLUMN status_details jsonb NOT NULL DEFAULT '{}';
