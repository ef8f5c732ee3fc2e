-- Triage: assignees, comments (notes), bookmarks, subscriptions and ownership rules.

-- An issue is assigned to one user or one team of its organization, or to nobody
-- (Sentry's GroupAssignee: user xor team). Removing the user or team unassigns.
ALTER TABLE issues ADD COLUMN assignee_user_id bigint REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE issues ADD COLUMN assignee_team_id bigint REFERENCES teams(id) ON DELETE SET NULL;
ALTER TABLE issues ADD CONSTRAINT issues_one_assignee
    CHECK (assignee_user_id IS NULL OR assignee_team_id IS NULL);
CREATE INDEX issues_assignee_user ON issues (assignee_user_id) WHERE assignee_user_id IS NOT NULL;
CREATE INDEX issues_assignee_team ON issues (assignee_team_id) WHERE assignee_team_id IS NOT NULL;

-- Who wrote an activity entry (notes are edited and deleted by their author only).
ALTER TABLE issue_activity ADD COLUMN user_id bigint REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE issue_activity ADD COLUMN date_updated timestamptz;

CREATE TABLE issue_bookmarks (
    issue_id    bigint NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    date_added  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issue_id, user_id)
);
CREATE INDEX issue_bookmarks_user ON issue_bookmarks (user_id, issue_id);

-- is_active false: the user unsubscribed, and taking part later does not resubscribe them
-- (Sentry's GroupSubscription).
CREATE TABLE issue_subscriptions (
    issue_id    bigint NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    is_active   boolean NOT NULL,
    reason      text NOT NULL,
    date_added  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issue_id, user_id)
);
CREATE INDEX issue_subscriptions_user ON issue_subscriptions (user_id, issue_id);

-- Ownership rules of a project (Sentry's ProjectOwnership: the raw text, parsed on load).
CREATE TABLE project_ownership (
    project_id      bigint PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    raw             text NOT NULL DEFAULT '',
    fallthrough     boolean NOT NULL DEFAULT true,
    auto_assignment boolean NOT NULL DEFAULT true,
    date_updated    timestamptz NOT NULL DEFAULT now()
);
