-- Anomalies found by detectors (issue 13; events/anomaly.py, actors/detectors.py,
-- storage/anomalies.py) and the detectors' checkpoints.
--
-- One row per episode: while a detector keeps reporting the same anomaly (same project,
-- issue, detector, kind and direction) the open row is extended (end_at, score); the host
-- closes it when the detector stops reporting it. issue_id carries no foreign key: the
-- history outlives a merged or deleted issue, as the notification log does.
CREATE TABLE anomalies (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL,
    project_id      bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    issue_id        bigint,
    scope           text NOT NULL CHECK (scope IN ('project', 'issue')),
    detector        text NOT NULL,
    kind            text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('up', 'down')),
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    start_at        timestamptz NOT NULL,
    end_at          timestamptz NOT NULL,
    score           double precision NOT NULL,
    explanation     text NOT NULL,
    evidence        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CHECK ((scope = 'issue') = (issue_id IS NOT NULL))
);

-- At most one open episode per (project, issue, detector, kind, direction): the upsert's
-- conflict target.
CREATE UNIQUE INDEX anomalies_one_open
    ON anomalies (project_id, (COALESCE(issue_id, 0)), detector, kind, direction)
    WHERE status = 'open';
-- The project's and an issue's anomalies, newest first.
CREATE INDEX anomalies_project_log
    ON anomalies (organization_id, project_id, start_at DESC, id DESC);
CREATE INDEX anomalies_issue_log
    ON anomalies (project_id, issue_id, start_at DESC) WHERE issue_id IS NOT NULL;

-- What a detector shard has learnt (events.anomaly.Detector.checkpoint), so a restarted
-- detector continues instead of learning from zero.
CREATE TABLE detector_checkpoints (
    detector  text NOT NULL,
    shard     integer NOT NULL,
    shards    integer NOT NULL,
    state     bytea NOT NULL,
    saved_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (detector, shard)
);
