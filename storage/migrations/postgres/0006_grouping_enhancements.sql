-- Sentry's project setting "Stack Trace Rules" (grouping enhancements), one rule per line.
ALTER TABLE projects ADD COLUMN grouping_enhancements text NOT NULL DEFAULT '';
