-- Releases (Sentry's organization releases, minimal: version, projects, finalized when).
CREATE TABLE releases (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    version         text NOT NULL,
    url             text,
    date_added      timestamptz NOT NULL DEFAULT now(),
    date_released   timestamptz,
    UNIQUE (organization_id, version)
);
CREATE TABLE release_projects (
    release_id bigint NOT NULL REFERENCES releases (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    PRIMARY KEY (release_id, project_id)
);
CREATE INDEX release_projects_project ON release_projects (project_id);

-- Source files uploaded for symbolication (issue 12): artifact bundles as sentry-cli
-- uploads them, one row per bundle of an organization (the sha1 of the uploaded bytes is
-- its identity: uploading it again changes nothing), linked to the projects it was
-- uploaded for. Each file of a bundle is a row here; its bytes are a blob on disk named by
-- their sha256 (storage/artifacts.py), shared by every file with the same content.
CREATE TABLE artifact_bundles (
    id              bigserial PRIMARY KEY,
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    checksum        text NOT NULL,
    -- The bundle's own id (sentry-cli's "debug_id" attribute), shown in listings.
    bundle_id       text,
    release         text,
    dist            text,
    size_bytes      bigint NOT NULL,
    file_count      integer NOT NULL,
    date_added      timestamptz NOT NULL DEFAULT now(),
    -- 'bundle': an artifact bundle (unique by checksum); 'release_file': one file uploaded
    -- to a release by name (sentry-cli 2.x's release-files flow), a bundle of one file.
    source          text NOT NULL DEFAULT 'bundle' CHECK (source IN ('bundle', 'release_file'))
);
CREATE UNIQUE INDEX artifact_bundles_checksum ON artifact_bundles (organization_id, checksum)
    WHERE source = 'bundle';

CREATE TABLE artifact_bundle_projects (
    bundle_id  bigint NOT NULL REFERENCES artifact_bundles (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    PRIMARY KEY (project_id, bundle_id)
);
CREATE INDEX artifact_bundle_projects_bundle ON artifact_bundle_projects (bundle_id);

CREATE TABLE artifact_files (
    id              bigserial PRIMARY KEY,
    bundle_id       bigint NOT NULL REFERENCES artifact_bundles (id) ON DELETE CASCADE,
    organization_id bigint NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url             text NOT NULL,
    kind            text NOT NULL,
    -- Lower-case UUID with dashes (events/artifact_bundle.normalize_debug_id).
    debug_id        text,
    blob_sha256     text NOT NULL,
    size_bytes      bigint NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX artifact_files_debug_id ON artifact_files (organization_id, debug_id, kind)
    WHERE debug_id IS NOT NULL;
CREATE INDEX artifact_files_url ON artifact_files (organization_id, url, kind);
CREATE INDEX artifact_files_bundle ON artifact_files (bundle_id);
