-- Hashes of deleted issues: new events with any of them are discarded (outcome "filtered",
-- reason "discarded_hash") instead of bringing the issue back.
CREATE TABLE group_tombstones (
    project_id  bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    hash        text NOT NULL,
    issue_id    bigint NOT NULL,
    actor       text NOT NULL,
    date_added  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, hash)
);
