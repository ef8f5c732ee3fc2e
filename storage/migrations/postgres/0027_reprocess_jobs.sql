-- ``crashray reprocess`` jobs (pipelines/reprocess.py): what one job covers, the time
-- slices it planned, which of them are finished, and what it moved so far, so that an
-- interrupted job re-run with the same options continues where it stopped. At most one
-- unfinished job per project. The job's id is the ``row_version`` of the ClickHouse rows
-- it writes (ClickHouse migration 0004).
CREATE TABLE IF NOT EXISTS reprocess_jobs (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    project_id      bigint NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    options         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'finished', 'abandoned')),
    -- [[start_us, end_us], ...] in the order they were planned.
    slices          jsonb NOT NULL,
    finished_slices integer[] NOT NULL DEFAULT '{}',
    -- The highest issue id of the project when the job started: issues above it that
    -- received events were created by the job.
    max_issue_id    bigint NOT NULL,
    events_read     bigint NOT NULL DEFAULT 0,
    events_changed  bigint NOT NULL DEFAULT 0,
    events_moved    bigint NOT NULL DEFAULT 0,
    -- {"old issue id": {"new issue id": events}}
    moves           jsonb NOT NULL DEFAULT '{}',
    summary         jsonb,
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS reprocess_jobs_one_running
    ON reprocess_jobs (project_id) WHERE status = 'running';
