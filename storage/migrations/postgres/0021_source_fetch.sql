-- Source fetching per project (events/source_fetch.py): Sentry's project options
-- ``allowedDomains`` and ``scrapeJavaScript``. Off by default, unlike Sentry (["*"], true):
-- fetching needs both a true scrape_javascript and at least one allowed domain.
ALTER TABLE projects
    ADD COLUMN allowed_domains   text[] NOT NULL DEFAULT '{}',
    ADD COLUMN scrape_javascript boolean NOT NULL DEFAULT false;
