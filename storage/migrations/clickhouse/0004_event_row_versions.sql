-- Replacement rows for ``crashray reprocess`` (pipelines/reprocess.py). The events table's
-- sorting key holds ``group_id``, so a reprocessed event that moves to another issue is a
-- row with another key: ReplacingMergeTree would never collapse it with the old one. A
-- reprocess job therefore inserts the new row with ``row_version`` = its job id and then
-- deletes (lightweight DELETE) the event's rows of a lower version; a re-run of an
-- interrupted job tells done events (their newest row has the job's version) from the
-- rest. Rows consumers write keep the default 0.
ALTER TABLE events ADD COLUMN IF NOT EXISTS row_version UInt32 DEFAULT 0;
