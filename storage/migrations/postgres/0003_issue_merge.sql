-- Merged issues point to the issue they were merged into; their hashes are re-pointed too,
-- so ClickHouse rows keep their old group id and readers resolve it through this column.
ALTER TABLE issues ADD COLUMN merged_into bigint REFERENCES issues(id) ON DELETE SET NULL;
CREATE INDEX issues_merged_into ON issues (merged_into) WHERE merged_into IS NOT NULL;
