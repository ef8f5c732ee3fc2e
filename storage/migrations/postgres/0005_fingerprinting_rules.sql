-- Sentry's project setting "Fingerprint Rules" (one rule per line), validated by the API.
ALTER TABLE projects ADD COLUMN fingerprinting_rules text NOT NULL DEFAULT '';
