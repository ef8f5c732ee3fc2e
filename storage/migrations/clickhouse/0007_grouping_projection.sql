-- The hash of what grouping reads of each event (events/projection.py), written with the
-- row, so that ``crashray reprocess`` finds the events that group alike from small columns
-- instead of parsing every body (storage/regroup.py). 0: unknown (rows written before this
-- migration, and the few events the columns do not describe): the job parses their body.
ALTER TABLE events ADD COLUMN IF NOT EXISTS grouping_projection UInt64 DEFAULT 0;
