"""Source map uploads through the running API (real Ray, Serve behind HAProxy, PostgreSQL):
the chunk and assemble protocol sentry-cli 3.x speaks, with the bundle sentry-cli 3.8.2
really built, read back through ``storage.artifacts.ProjectArtifacts``; organizations kept
apart, damaged uploads refused saying why."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from events.grouping import DEFAULT_GROUPING_CONFIG
from storage.artifacts import (
    ArtifactSweep,
    BlobStore,
    ProjectArtifacts,
    SharedConnection,
    artifact_source,
    sweep_artifacts,
)
from storage.bootstrap import bootstrap
from storage.errors import StorageError
from storage.postgres import create_api_token
from tests.integration.conftest import RunningCrashray

pytestmark = pytest.mark.integration

BUNDLE = (Path(__file__).parents[1] / "fixtures" / "artifacts"
          / "sentry-cli-3.8.2-esbuild.bundle").read_bytes()
DEBUG_ID = "02a57355-c72d-5a48-acad-2451625ecdab"


@dataclass
class Tenant:
    org: str
    organization_id: int
    project_id: int
    token: str


def new_tenant(c: RunningCrashray, scopes: list[str] | None = None) -> Tenant:
    slug = f"art-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(c.runtime.postgres_url) as conn:
        made = bootstrap(conn, org_slug=slug, project_slug="web",
                         grouping_config=DEFAULT_GROUPING_CONFIG)
        org_id = conn.execute("SELECT id FROM organizations WHERE slug = %s",
                              (slug,)).fetchone()[0]  # type: ignore[index]
        token = create_api_token(conn, org_id, "uploads", scopes or ["project:releases",
                                                                    "project:read"])
    assert made.api_token is not None
    return Tenant(slug, org_id, made.project_id, token)


@pytest.fixture(scope="module")
def tenants(crashray: RunningCrashray) -> Iterator[tuple[Tenant, Tenant]]:
    yield new_tenant(crashray), new_tenant(crashray)


def api(c: RunningCrashray, method: str, path: str, token: str, **kwargs: Any
        ) -> httpx.Response:
    return httpx.request(method, f"{c.base_url}/api/0/{path}", timeout=30,
                         headers={"Authorization": f"Bearer {token}"}, **kwargs)


def split(data: bytes, parts: int) -> list[bytes]:
    size = -(-len(data) // parts)
    return [data[i:i + size] for i in range(0, len(data), size)]


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def assemble(c: RunningCrashray, t: Tenant, chunks: list[bytes], checksum: str | None = None,
             **extra: Any) -> dict[str, Any]:
    body = {"checksum": checksum or sha1(b"".join(chunks)), "chunks": [sha1(x) for x in chunks],
            "projects": ["web"], **extra}
    response = api(c, "POST", f"organizations/{t.org}/artifactbundle/assemble/", t.token,
                   json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def upload(c: RunningCrashray, t: Tenant, chunks: list[bytes], gzipped: bool = False
           ) -> httpx.Response:
    field = "file_gzip" if gzipped else "file"
    files = [(field, (sha1(x), gzip.compress(x) if gzipped else x,
                      "application/octet-stream")) for x in chunks]
    return api(c, "POST", f"organizations/{t.org}/chunk-upload/", t.token, files=files)


def artifacts(c: RunningCrashray, t: Tenant) -> ProjectArtifacts:
    return ProjectArtifacts(lambda: psycopg.connect(c.runtime.postgres_url),
                            c.settings.resolved_artifact_dir(), t.organization_id, t.project_id)


def test_chunk_options_are_what_sentry_cli_3_reads(crashray: RunningCrashray,
                                                  tenants: tuple[Tenant, Tenant]) -> None:
    t = tenants[0]
    options = api(crashray, "GET", f"organizations/{t.org}/chunk-upload/", t.token).json()
    assert options["url"] == f"/organizations/{t.org}/chunk-upload/"
    assert options["hashAlgorithm"] == "sha1" and options["compression"] == ["gzip"]
    assert options["chunkSize"] == crashray.settings.artifact_chunk_bytes
    assert options["chunksPerRequest"] * options["chunkSize"] <= options["maxRequestSize"]
    assert {"artifact_bundles", "artifact_bundles_v2"} <= set(options["accept"])


def test_assemble_names_exactly_the_missing_chunks_then_stores_the_bundle(
        crashray: RunningCrashray, tenants: tuple[Tenant, Tenant]) -> None:
    t = tenants[0]
    chunks = split(BUNDLE, 3)
    first = assemble(crashray, t, chunks, version="shop@1.0", dist="web")
    assert first["state"] == "not_found"
    assert first["missingChunks"] == [sha1(x) for x in chunks]
    assert upload(crashray, t, chunks[:1]).status_code == 200
    assert assemble(crashray, t, chunks)["missingChunks"] == [sha1(x) for x in chunks[1:]]
    assert upload(crashray, t, chunks[1:], gzipped=True).status_code == 200
    done = assemble(crashray, t, chunks, version="shop@1.0", dist="web")
    assert done == {"state": "ok", "missingChunks": [], "detail": None}

    found = artifacts(crashray, t)
    script = found.by_debug_id(DEBUG_ID.upper(), "minified_source")
    source_map = found.by_debug_id(DEBUG_ID, "source_map")
    assert script is not None and source_map is not None
    assert (script.url, source_map.url) == ("~/app.min.js", "~/app.min.js.map")
    assert script.headers["sourcemap"] == "app.min.js.map"
    assert b'"debugId":"' + DEBUG_ID.encode() in source_map.content
    by_url = found.by_url("shop@1.0", "web", "https://cdn.example.com/app.min.js",
                          "minified_source")
    assert by_url is not None and by_url.content == script.content
    assert found.by_url("shop@2.0", "web", "https://cdn.example.com/app.min.js",
                        "minified_source") is None
    # Uploading the same bundle again finds it on the server: nothing to send.
    assert assemble(crashray, t, chunks)["state"] == "ok"


def test_another_organization_sees_neither_the_chunks_nor_the_bundle(
        crashray: RunningCrashray, tenants: tuple[Tenant, Tenant]) -> None:
    owner, other = tenants
    chunks = split(BUNDLE, 2)
    upload(crashray, owner, chunks)
    assert assemble(crashray, other, chunks)["missingChunks"] == [sha1(x) for x in chunks]
    assert artifacts(crashray, other).by_debug_id(DEBUG_ID, "source_map") is None
    listed = api(crashray, "GET", f"projects/{owner.org}/web/files/artifact-bundles/",
                 other.token)
    assert listed.status_code == 404
    refused = api(crashray, "GET", f"organizations/{owner.org}/chunk-upload/", other.token)
    assert refused.status_code == 404


def test_an_upload_needs_the_releases_or_write_scope(crashray: RunningCrashray) -> None:
    reader = new_tenant(crashray, scopes=["project:read"])
    response = upload(crashray, reader, [b"x"])
    assert response.status_code == 403
    assert "project:releases or project:write" in response.json()["detail"]
    writer = new_tenant(crashray, scopes=["project:write"])
    assert upload(crashray, writer, [b"x"]).status_code == 200


def test_damaged_uploads_are_refused_saying_why(crashray: RunningCrashray,
                                               tenants: tuple[Tenant, Tenant]) -> None:
    t = tenants[1]
    named_wrong = api(crashray, "POST", f"organizations/{t.org}/chunk-upload/", t.token,
                      files=[("file", ("0" * 40, b"data", "application/octet-stream"))])
    assert named_wrong.status_code == 400
    assert f"has sha1 {sha1(b'data')}" in named_wrong.json()["detail"]

    chunks = [b"not a zip at all"]
    upload(crashray, t, chunks)
    wrong_sum = assemble(crashray, t, chunks, checksum="1" * 40)
    assert wrong_sum["state"] == "error" and "not the checksum" in wrong_sum["detail"]
    not_zip = assemble(crashray, t, chunks)
    assert not_zip["state"] == "error" and "not a zip archive" in not_zip["detail"]

    unknown = api(crashray, "POST", f"organizations/{t.org}/artifactbundle/assemble/",
                  t.token, json={"checksum": sha1(b"x"), "chunks": [sha1(b"x")],
                                 "projects": ["nope"]})
    assert unknown.status_code == 400 and "'nope'" in unknown.json()["detail"]


def test_a_project_lists_its_bundles_and_deletes_them(
        crashray: RunningCrashray) -> None:
    t = new_tenant(crashray)
    upload(crashray, t, [BUNDLE])
    assert assemble(crashray, t, [BUNDLE])["state"] == "ok"
    path = f"projects/{t.org}/web/files/artifact-bundles/"
    listed = api(crashray, "GET", path, t.token).json()
    assert [(b["fileCount"], b["debugIds"], b["release"]) for b in listed] == [
        (2, [DEBUG_ID], "shop@1.0")]
    assert api(crashray, "DELETE", f"{path}{listed[0]['id']}/", t.token).status_code == 204
    assert api(crashray, "GET", path, t.token).json() == []
    assert artifacts(crashray, t).by_debug_id(DEBUG_ID, "source_map") is None
    assert api(crashray, "DELETE", f"{path}{listed[0]['id']}/", t.token).status_code == 404


# --- releases and release files (sentry-cli 2.x's flow) ------------------------------------
def test_releases_are_created_listed_and_finalized_per_organization(
        crashray: RunningCrashray, tenants: tuple[Tenant, Tenant]) -> None:
    t, other = tenants
    created = api(crashray, "POST", f"organizations/{t.org}/releases/", t.token,
                  json={"version": "shop@1.0", "projects": ["web"]})
    assert created.status_code == 201
    assert [(p["slug"], p["name"]) for p in created.json()["projects"]] == [("web", "web")]
    again = api(crashray, "POST", f"organizations/{t.org}/releases/", t.token,
                json={"version": "shop@1.0", "projects": ["web"]})
    assert again.status_code == 208 and again.json()["dateReleased"] is None
    path = f"organizations/{t.org}/releases/shop@1.0/"
    done = api(crashray, "PUT", path, t.token, json={"dateReleased": "2026-06-01T12:00:00Z"})
    assert done.status_code == 200 and done.json()["dateReleased"] == "2026-06-01T12:00:00Z"
    assert [r["version"] for r in api(crashray, "GET", f"projects/{t.org}/web/releases/",
                                      t.token).json()] == ["shop@1.0"]
    assert api(crashray, "GET", f"organizations/{other.org}/releases/", other.token
               ).json() == []
    assert api(crashray, "GET", path, other.token).status_code == 404
    bad = api(crashray, "POST", f"organizations/{t.org}/releases/", t.token,
              json={"version": "shop@2.0", "projects": ["web", "nope"]})
    assert bad.status_code == 400 and "'nope'" in bad.json()["detail"]


def test_release_files_are_stored_by_name_and_found_by_url(
        crashray: RunningCrashray) -> None:
    t = new_tenant(crashray)
    files_path = f"projects/{t.org}/web/releases/app@7/files/"
    script, source_map = b"function a(){throw new Error('x')}\n", b'{"version":3,"mappings":""}'

    def send(name: str, content: bytes, *headers: str) -> httpx.Response:
        data: dict[str, Any] = {"name": name, "dist": "web", "header": list(headers)}
        return api(crashray, "POST", files_path, t.token, data=data,
                   files={"file": (name.rsplit("/", 1)[-1], content)})

    assert send("~/static/app.js", script).status_code == 404  # no such release yet
    api(crashray, "POST", f"organizations/{t.org}/releases/", t.token,
        json={"version": "app@7", "projects": ["web"]})
    stored = send("~/static/app.js", script, "Sourcemap:app.js.map")
    assert stored.status_code == 201, stored.text
    assert stored.json()["sha1"] == sha1(script)
    assert stored.json()["headers"] == {"sourcemap": "app.js.map"}
    assert send("~/static/app.js.map", source_map).status_code == 201
    assert send("~/static/app.js", b"other").status_code == 409  # as Sentry: name taken
    listed = api(crashray, "GET", files_path, t.token).json()
    assert [(f["name"], f["dist"], f["size"]) for f in listed] == [
        ("~/static/app.js", "web", len(script)), ("~/static/app.js.map", "web", len(source_map))]

    found = artifacts(crashray, t)
    by_url = found.by_url("app@7", "web", "https://shop.example/static/app.js",
                          "minified_source")
    assert by_url is not None and by_url.content == script
    assert by_url.headers == {"sourcemap": "app.js.map"}
    the_map = found.by_url("app@7", "web", "https://shop.example/static/app.js.map",
                           "source_map")
    assert the_map is not None and the_map.content == source_map
    assert found.by_url("app@7", None, "https://shop.example/static/app.js",
                        "minified_source") is None


def test_a_release_file_is_deleted_only_by_its_project_with_an_upload_scope(
        crashray: RunningCrashray) -> None:
    t, other = new_tenant(crashray), new_tenant(crashray)
    for tenant in (t, other):
        api(crashray, "POST", f"organizations/{tenant.org}/releases/", tenant.token,
            json={"version": "app@9", "projects": ["web"]})
    files_path = f"projects/{t.org}/web/releases/app@9/files/"
    stored = api(crashray, "POST", files_path, t.token, data={"name": "~/app.js"},
                 files={"file": ("app.js", b"function a(){}\n")})
    assert stored.status_code == 201, stored.text
    file_id = stored.json()["id"]
    with psycopg.connect(crashray.runtime.postgres_url) as conn:
        reader = create_api_token(conn, t.organization_id, "reader", ["project:read"])

    # Another organization: neither under the owner's URL nor under its own, by id.
    assert api(crashray, "DELETE", f"{files_path}{file_id}/", other.token).status_code == 404
    assert api(crashray, "DELETE", f"projects/{other.org}/web/releases/app@9/files/{file_id}/",
               other.token).status_code == 404
    refused = api(crashray, "DELETE", f"{files_path}{file_id}/", reader)
    assert refused.status_code == 403
    assert "project:releases or project:write" in refused.json()["detail"]
    assert api(crashray, "DELETE", f"projects/{t.org}/web/releases/app@8/files/{file_id}/",
               t.token).status_code == 404  # another release's URL
    assert artifacts(crashray, t).by_url("app@9", None, "https://x.example/app.js",
                                         "minified_source") is not None

    assert api(crashray, "DELETE", f"{files_path}{file_id}/", t.token).status_code == 204
    assert api(crashray, "GET", files_path, t.token).json() == []
    assert artifacts(crashray, t).by_url("app@9", None, "https://x.example/app.js",
                                         "minified_source") is None
    assert api(crashray, "DELETE", f"{files_path}{file_id}/", t.token).status_code == 404
    assert api(crashray, "DELETE", f"{files_path}{2**63}/", t.token).status_code == 404


def test_expired_bundles_and_leftover_chunks_go_when_the_next_bundle_comes(
        crashray: RunningCrashray) -> None:
    t = new_tenant(crashray)
    upload(crashray, t, [BUNDLE])
    assert assemble(crashray, t, [BUNDLE])["state"] == "ok"
    days = crashray.settings.artifact_retention_days
    with psycopg.connect(crashray.runtime.postgres_url) as conn:
        conn.execute("UPDATE artifact_bundles SET date_added = now() - %s * interval '1 day'"
                     " - interval '1 hour' WHERE organization_id = %s",
                     (days, t.organization_id))
    leftover = b"a chunk of an upload that never finished"
    upload(crashray, t, [leftover])
    chunk_file = (crashray.settings.resolved_artifact_dir() / "chunks"
                  / str(t.organization_id) / sha1(leftover))
    old = chunk_file.stat().st_mtime - crashray.settings.artifact_chunk_retention_hours * 3600
    os.utime(chunk_file, (old - 60, old - 60))
    assert artifacts(crashray, t).by_debug_id(DEBUG_ID, "source_map") is not None

    newer = zipped_bundle({"~/other.js": b"other()"})
    upload(crashray, t, [newer])
    assert assemble(crashray, t, [newer])["state"] == "ok"
    assert artifacts(crashray, t).by_debug_id(DEBUG_ID, "source_map") is None
    assert not chunk_file.exists()
    listed = api(crashray, "GET", f"projects/{t.org}/web/files/artifact-bundles/",
                 t.token).json()
    assert [b["fileCount"] for b in listed] == [1]


def zipped_bundle(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"files": {
            f"files/{i}": {"url": url, "type": "minified_source", "headers": {}}
            for i, url in enumerate(files)}}))
        for i, content in enumerate(files.values()):
            archive.writestr(f"files/{i}", content)
    return b"SYSB\x02\x00\x00\x00" + out.getvalue()


def test_symbolication_sees_an_upload_once_its_remembered_miss_expires(
        crashray: RunningCrashray) -> None:
    """The consumers' reader (``artifact_source``) remembers lookups for
    ``CRASHRAY_SYMBOLICATION_LOOKUP_CACHE_S``: a build's events do not query each time,
    and a map uploaded after a miss is used once that much time has passed."""
    t = new_tenant(crashray)
    reader = artifact_source(crashray.runtime.postgres_url,
                             str(crashray.settings.resolved_artifact_dir()), 1.0,
                             t.organization_id, t.project_id)
    assert reader.by_debug_id(DEBUG_ID, "source_map") is None
    chunks = split(BUNDLE, 1)
    upload(crashray, t, chunks)
    assert assemble(crashray, t, chunks)["state"] == "ok"
    assert reader.by_debug_id(DEBUG_ID, "source_map") is None  # the remembered miss
    assert artifacts(crashray, t).by_debug_id(DEBUG_ID, "source_map") is not None
    time.sleep(1.1)
    found = reader.by_debug_id(DEBUG_ID, "source_map")
    assert found is not None and b'"mappings"' in found.content
    # Still scoped: another tenant's reader with the same debug id finds nothing.
    other = new_tenant(crashray)
    assert artifact_source(crashray.runtime.postgres_url,
                           str(crashray.settings.resolved_artifact_dir()), 1.0,
                           other.organization_id, other.project_id
                           ).by_debug_id(DEBUG_ID, "source_map") is None


def test_an_unreachable_artifact_database_is_a_storage_error_then_recovers(
        crashray: RunningCrashray) -> None:
    """So the consumer retries the event later instead of storing it unsymbolicated."""
    dead = SharedConnection("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2")
    with pytest.raises(StorageError, match="artifact store's database did not answer"), \
            dead() as conn:
        conn.execute("SELECT 1")
    shared = SharedConnection(crashray.runtime.postgres_url)
    with pytest.raises(StorageError), shared() as conn:  # the server drops the connection
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    with shared() as conn:  # the next lookup gets a fresh one
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_the_sweep_removes_expired_bundles_leftover_chunks_and_unused_blobs_only(
        crashray: RunningCrashray) -> None:
    """Nothing uploaded grows without bound: bundles past CRASHRAY_ARTIFACT_RETENTION_DAYS,
    chunks of unfinished uploads and blobs no file names go; a blob another organization's
    bundle still names, and one written moments ago (an upload not yet committed), stay."""
    expired, kept = new_tenant(crashray), new_tenant(crashray)
    root = crashray.settings.resolved_artifact_dir()
    for t in (expired, kept):
        upload(crashray, t, [BUNDLE])
        assert assemble(crashray, t, [BUNDLE])["state"] == "ok"
    # A file only the kept tenant has: other tests upload BUNDLE too, so its blobs may stay
    # named when this tenant's bundles expire; this one's blob must go then.
    own_content = b"// only mine " + os.urandom(8).hex().encode()
    own = zipped_bundle({"~/only-mine.js": own_content})
    upload(crashray, kept, [own])
    assert assemble(crashray, kept, [own])["state"] == "ok"
    day, now = 86_400.0, time.time()
    blobs = BlobStore(root)
    old_orphan, new_orphan = blobs.put(b"orphan " + os.urandom(8)), blobs.put(os.urandom(16))
    os.utime(blobs.path(old_orphan), (now - 2 * day, now - 2 * day))
    leftover = root / "chunks" / str(expired.organization_id) / sha1(b"never assembled")
    leftover.write_bytes(b"never assembled")
    os.utime(leftover, (now - 2 * day, now - 2 * day))
    sweep = ArtifactSweep(str(root), retention_s=90 * day, chunk_retention_s=day)
    with psycopg.connect(crashray.runtime.postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE artifact_bundles SET date_added = now() - interval '100 days'"
                     " WHERE organization_id = %s", (expired.organization_id,))
        shared = [r[0] for r in conn.execute(
            "SELECT blob_sha256 FROM artifact_files WHERE organization_id = %s",
            (kept.organization_id,)).fetchall()]
        for digest in shared:  # old enough to go, were they not named
            os.utime(blobs.path(digest), (now - 2 * day, now - 2 * day))
        result = sweep_artifacts(conn, sweep, now)

    assert result is not None and result.bundles == 1 and result.chunks >= 1
    assert artifacts(crashray, expired).by_debug_id(DEBUG_ID, "source_map") is None
    assert artifacts(crashray, kept).by_debug_id(DEBUG_ID, "source_map") is not None
    assert not blobs.path(old_orphan).exists() and not leftover.exists()
    assert blobs.path(new_orphan).exists()  # within the grace: its upload may be running
    assert all(blobs.path(d).exists() for d in shared)

    with psycopg.connect(crashray.runtime.postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE artifact_bundles SET date_added = now() - interval '100 days'"
                     " WHERE organization_id = %s", (kept.organization_id,))
        assert sweep_artifacts(conn, sweep, now) is not None
        # Other tests of this module uploaded the same bundle: its blobs stay while named.
        named = {r[0] for r in conn.execute("SELECT blob_sha256 FROM artifact_files")}
    assert [blobs.path(d).exists() for d in shared] == [d in named for d in shared]
    own_digest = hashlib.sha256(own_content).hexdigest()
    assert own_digest in shared and not blobs.path(own_digest).exists()
    assert artifacts(crashray, kept).by_debug_id(DEBUG_ID, "source_map") is None
