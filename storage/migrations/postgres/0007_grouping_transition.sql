-- Grouping versions per project (Sentry's project options sentry:grouping_config,
-- sentry:secondary_grouping_config/_expiry and sentry:grouping_auto_update).
-- During a transition the previous version's hashes still find existing issues, so that a
-- version change never splits an issue.
ALTER TABLE projects
    ADD COLUMN secondary_grouping_config text,
    ADD COLUMN secondary_grouping_expiry timestamptz,
    ADD COLUMN grouping_auto_update boolean NOT NULL DEFAULT true,
    -- Bumped by every change that moves hashes between issues (merge, unmerge, delete,
    -- version change); grouping actors drop their cached hash → issue entries when it moves.
    ADD COLUMN grouping_epoch bigint NOT NULL DEFAULT 0;
