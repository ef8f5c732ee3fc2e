"""Source map uploads as sentry-cli 3.x makes them (``sentry-cli sourcemaps upload``), and
the project's list of uploaded bundles.

    GET    /api/0/organizations/{org}/chunk-upload/             project:releases or :write
    POST   /api/0/organizations/{org}/chunk-upload/             (multipart, below)
    POST   /api/0/organizations/{org}/artifactbundle/assemble/  {checksum, chunks, projects,
                                                                 version?, dist?}
    GET    /api/0/projects/{org}/{project}/files/artifact-bundles/          project:read
    DELETE /api/0/projects/{org}/{project}/files/artifact-bundles/{bundle}/ project:releases

The flow (sentry-cli src/utils/file_upload.rs): the client asks for the chunk options,
builds the bundle, splits it in ``chunkSize`` chunks and calls assemble with their sha1s
*first*; it then uploads only the chunks ``missingChunks`` names (multipart parts
``file``, or ``file_gzip`` when gzip is offered, each part's file name its sha1), and calls
assemble again until the state is ``ok`` or ``error`` (``detail`` says why). Here assemble
finishes within the request that finds every chunk present, so the answer after the upload
is already final. Chunks are kept per organization; a chunk is deleted once its bundle is
stored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from pydantic import Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from events.artifact_bundle import BundleError, check_chunk, gunzip_bounded, is_sha1, read_bundle
from events.errors import BadRequest, PayloadTooLarge, not_found
from serve_apps.api.deps import (
    ProjectAccess,
    Services,
    Svc,
    org_access_any,
    project_access,
)
from serve_apps.api.shapes import MAX_BIGINT, Body, iso
from storage import artifacts as store
from storage.artifacts import BlobStore, ChunkStore, StoredBundle
from storage.projects import find_project
from storage.tenancy import Access

router = APIRouter(tags=["artifacts"])

#: Scopes that may upload (Sentry's release-file permission).
UPLOAD_SCOPES: Final = ("project:releases", "project:write")
#: What assemble answers when it is done, and the kinds of upload this server takes:
#: artifact bundles, with a release (``_v2``) or without.
ACCEPTED_UPLOADS: Final = ("artifact_bundles", "artifact_bundles_v2")
#: Most chunks one assemble call lists (a 256 MiB bundle in 8 MiB chunks is 32).
MAX_ASSEMBLE_CHUNKS: Final = 10_000
#: Most projects one bundle is uploaded for at once.
MAX_ASSEMBLE_PROJECTS: Final = 100
#: Seconds sentry-cli waits for assemble at most (it polls every second until then).
MAX_WAIT_S: Final = 300
UploadAccess = Annotated[Access, Depends(org_access_any(*UPLOAD_SCOPES))]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]


@router.get("/organizations/{org}/chunk-upload/")
def chunk_options(org: str, access: UploadAccess, svc: Svc) -> dict[str, Any]:
    """The chunk options sentry-cli reads (src/api/data_types/chunking/upload/options.rs).
    The URL is relative: sentry-cli sends it to its own server with its token."""
    limits = svc.config.artifacts
    return {"url": f"/organizations/{access.organization_slug}/chunk-upload/",
            "chunkSize": limits.chunk_bytes,
            "chunksPerRequest": max(1, limits.max_request_bytes // limits.chunk_bytes),
            "maxFileSize": limits.max_bundle_bytes,
            "maxRequestSize": limits.max_request_bytes,
            "concurrency": limits.upload_concurrency,
            "hashAlgorithm": "sha1",
            "compression": ["gzip"],
            "maxWait": MAX_WAIT_S,
            "accept": list(ACCEPTED_UPLOADS)}


@router.post("/organizations/{org}/chunk-upload/")
async def upload_chunks(org: str, request: Request, access: UploadAccess,
                        svc: Svc) -> dict[str, Any]:
    """Stores each ``file``/``file_gzip`` part under its sha1, after checking it."""
    limits = svc.config.artifacts
    form = await request.form(max_files=limits.max_request_bytes // 1024 + 1, max_fields=0)
    try:
        chunks: dict[str, bytes] = {}
        for name, part in form.multi_items():
            if name not in ("file", "file_gzip") or not isinstance(part, UploadFile):
                raise BadRequest(f"form field {name[:40]!r}: only file parts named \"file\""
                                 " or \"file_gzip\" are taken, each named by its sha1")
            data = await part.read()
            # Decompressing and hashing a chunk (up to CRASHRAY_ARTIFACT_CHUNK_BYTES) off the
            # event loop, which on one node is the ingest replica's too.
            if name == "file_gzip":
                data = await run_in_threadpool(gunzip_bounded, data, limits.chunk_bytes,
                                               f"chunk {part.filename}")
            if len(data) > limits.chunk_bytes:
                raise PayloadTooLarge(f"chunk {part.filename}: {len(data)} bytes; chunks are"
                                      f" at most {limits.chunk_bytes}"
                                      " (CRASHRAY_ARTIFACT_CHUNK_BYTES)")
            chunks[await run_in_threadpool(check_chunk, part.filename or "", data)] = data
    finally:
        await form.close()
    chunk_store = ChunkStore(_root(svc), access.organization_id)
    for sha1, data in chunks.items():
        await run_in_threadpool(chunk_store.put, sha1, data)
    return {}


class AssembleBody(Body):
    checksum: str
    chunks: Annotated[list[str], Field(max_length=MAX_ASSEMBLE_CHUNKS)]
    projects: Annotated[list[Name], Field(max_length=MAX_ASSEMBLE_PROJECTS,
                                         default_factory=list)]
    version: Name | None = None
    dist: Annotated[str, StringConstraints(max_length=64)] | None = None


@router.post("/organizations/{org}/artifactbundle/assemble/")
def assemble_bundle(org: str, body: AssembleBody, access: UploadAccess,
                    svc: Svc) -> dict[str, Any]:
    """``{"state", "missingChunks", "detail"}``: ``not_found`` with the chunks still to
    upload, else the bundle stored (``ok``) or why it cannot be (``error``)."""
    checksum, chunks = _checked_sha1s(body)
    with svc.pool.connection() as conn:
        project_ids = _project_ids(conn, access, body.projects)
        found = store.find_bundle(conn, access.organization_id, checksum)
        if found is not None:
            store.refresh_bundle(conn, access.organization_id, found, project_ids)
            return _state("ok")
    chunk_store = ChunkStore(_root(svc), access.organization_id)
    missing = chunk_store.missing(chunks)
    if missing:
        return _state("not_found", missing)
    try:
        data = chunk_store.joined(chunks, svc.config.artifacts.max_bundle_bytes)
    except FileNotFoundError:  # another replica assembled it meanwhile and removed them
        return _state("not_found", chunk_store.missing(chunks))
    try:
        actual = hashlib.sha1(data).hexdigest()
        if actual != checksum:
            raise BundleError(f"the chunks add up to sha1 {actual}, not the checksum"
                              f" {checksum}; upload the bundle again")
        bundle = read_bundle(data, svc.config.artifacts.max_unpacked_bytes)
    except BundleError as exc:
        return _state("error", detail=exc.detail)
    expire_organization(svc, access.organization_id)
    with svc.pool.connection() as conn:
        store.store_bundle(conn, BlobStore(_root(svc)), access.organization_id, project_ids,
                           checksum, bundle, len(data), body.version, body.dist)
    chunk_store.discard(chunks)
    return _state("ok")


def expire_organization(svc: Services, organization_id: int) -> None:
    """Each new bundle or release file first clears the organization's expired bundles and leftover
    chunks (CRASHRAY_ARTIFACT_RETENTION_DAYS, CRASHRAY_ARTIFACT_CHUNK_RETENTION_HOURS)."""
    limits = svc.config.artifacts
    now = time.time()
    with svc.pool.connection() as conn:
        store.expire_bundles(conn, organization_id, dt.datetime.fromtimestamp(
            now - limits.retention_s, dt.UTC))
    ChunkStore(_root(svc), organization_id).expire(limits.chunk_retention_s, now)


def _checked_sha1s(body: AssembleBody) -> tuple[str, list[str]]:
    checksum = body.checksum.lower()
    if not is_sha1(checksum):
        raise BadRequest("checksum: must be the bundle's sha1 (40 hex digits)")
    chunks = [c.lower() for c in body.chunks]
    bad = next((i for i, c in enumerate(chunks) if not is_sha1(c)), None)
    if bad is not None:
        raise BadRequest(f"chunks[{bad}]: must be a chunk's sha1 (40 hex digits)")
    if not chunks:
        raise BadRequest("chunks: list the sha1 of each chunk of the bundle, in order")
    return checksum, chunks


def _project_ids(conn: Any, access: Access, slugs: list[str]) -> list[int]:
    """The projects named (by slug), each one the caller sees; 400 otherwise, as Sentry."""
    if not slugs:
        raise BadRequest("projects: name the projects the bundle is for (sentry-cli"
                         " --project / SENTRY_PROJECT)")
    ids = []
    for slug in slugs:
        ref = find_project(conn, access.organization_id, slug)
        if ref is None or ref.id not in access.project_ids:
            raise BadRequest(f"projects: there is no project {slug!r} in organization"
                             f" {access.organization_slug} that this token sees")
        ids.append(ref.id)
    return ids


def _state(state: str, missing: list[str] | None = None, detail: str | None = None
           ) -> dict[str, Any]:
    return {"state": state, "missingChunks": missing or [], "detail": detail}


def _root(svc: Services) -> Path:
    if not svc.config.artifacts.blob_dir:
        raise RuntimeError("the API was started without an artifact directory")
    return Path(svc.config.artifacts.blob_dir)


# --- the project's bundles -------------------------------------------------------------
def bundle_json(b: StoredBundle) -> dict[str, Any]:
    return {"id": str(b.id), "bundleId": b.bundle_id, "checksum": b.checksum,
            "release": b.release, "dist": b.dist, "fileCount": b.file_count,
            "size": b.size_bytes, "debugIds": list(b.debug_ids),
            "dateCreated": iso(b.date_added)}


@router.get("/projects/{org}/{project}/files/artifact-bundles/")
def list_bundles(scope: Annotated[ProjectAccess, Depends(project_access("project:read"))],
                 svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        found = store.list_bundles(conn, scope.project, svc.config.max_page_size)
    return [bundle_json(b) for b in found]


@router.delete("/projects/{org}/{project}/files/artifact-bundles/{bundle}/",
               status_code=204)
def delete_bundle(bundle: int,
                  scope: Annotated[ProjectAccess, Depends(project_access(*UPLOAD_SCOPES))],
                  svc: Svc) -> None:
    if not 0 < bundle <= MAX_BIGINT:
        raise not_found()
    with svc.pool.connection() as conn:
        if not store.unlink_bundle(conn, scope.project, bundle):
            raise not_found()
