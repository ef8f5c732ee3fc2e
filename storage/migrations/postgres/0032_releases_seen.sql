-- Releases as events reveal them (issue 18). Sentry creates a release the first time an
-- event names it (its event manager's release get-or-create), so a release page lists
-- what SDKs report even when nobody ran ``sentry-cli releases new``. Crashray learns the
-- releases of events where it already records them, on the issue (first_release,
-- last_release): a trigger adds a new value to ``releases`` and ``release_projects``.
-- The usual case (the release is known for the project) is one index lookup and takes no
-- lock; a new one inserts with ON CONFLICT DO NOTHING. ``date_added`` is when the first
-- event of the release was stored, Sentry's "date created" of such a release.
CREATE FUNCTION issues_release_seen() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    seen text;
    org bigint;
    rid bigint;
BEGIN
    FOREACH seen IN ARRAY ARRAY[NEW.first_release, NEW.last_release] LOOP
        -- Sentry refuses versions longer than 200 characters (the API's limit too).
        CONTINUE WHEN seen IS NULL OR seen = '' OR length(seen) > 200;
        SELECT organization_id INTO org FROM projects WHERE id = NEW.project_id;
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM releases r JOIN release_projects rp ON rp.release_id = r.id
            WHERE r.organization_id = org AND r.version = seen
              AND rp.project_id = NEW.project_id);
        INSERT INTO releases (organization_id, version) VALUES (org, seen)
            ON CONFLICT (organization_id, version) DO NOTHING;
        SELECT id INTO rid FROM releases WHERE organization_id = org AND version = seen;
        INSERT INTO release_projects (release_id, project_id) VALUES (rid, NEW.project_id)
            ON CONFLICT DO NOTHING;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER issues_release_seen_insert AFTER INSERT ON issues
    FOR EACH ROW WHEN (NEW.first_release IS NOT NULL OR NEW.last_release IS NOT NULL)
    EXECUTE FUNCTION issues_release_seen();
-- Consumers set both columns on every count; only a changed value can be a new release.
CREATE TRIGGER issues_release_seen_update AFTER UPDATE OF first_release, last_release
    ON issues FOR EACH ROW WHEN (NEW.first_release IS DISTINCT FROM OLD.first_release
                                 OR NEW.last_release IS DISTINCT FROM OLD.last_release)
    EXECUTE FUNCTION issues_release_seen();

-- The releases of the issues stored before this migration, dated by their first event.
INSERT INTO releases (organization_id, version, date_added)
SELECT p.organization_id, v.version, min(v.seen)
FROM issues i JOIN projects p ON p.id = i.project_id,
     LATERAL (VALUES (i.first_release, i.first_seen), (i.last_release, i.last_seen))
         AS v (version, seen)
WHERE v.version <> '' AND length(v.version) <= 200
GROUP BY p.organization_id, v.version
ON CONFLICT (organization_id, version) DO NOTHING;
INSERT INTO release_projects (release_id, project_id)
SELECT DISTINCT r.id, i.project_id
FROM issues i JOIN projects p ON p.id = i.project_id,
     LATERAL (VALUES (i.first_release), (i.last_release)) AS v (version)
     JOIN releases r ON r.version = v.version
WHERE r.organization_id = p.organization_id
ON CONFLICT DO NOTHING;

-- A release's new issues (Sentry's ``newGroups``) and ``firstRelease:`` searches read the
-- issues of a project by their first release.
CREATE INDEX issues_project_first_release ON issues (project_id, first_release)
    WHERE first_release IS NOT NULL;
