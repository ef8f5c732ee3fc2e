"""Uploaded source files (issue 12): chunks, blobs, bundle metadata, and the per-project
reader symbolication uses (``ProjectArtifacts``, an ``events.artifacts.ArtifactSource``).

On disk, under the artifact directory (``CRASHRAY_ARTIFACT_DIR``, default
``<data_dir>/artifacts``)::

    chunks/<organization id>/<sha1>     uploaded chunks, per organization: a chunk one
                                        organization sent is never "present" for another
    blobs/<sha256[:2]>/<sha256>         the files of assembled bundles, by content, shared

Files are written to a temporary name and renamed, so a reader never sees half a file.
In PostgreSQL (migration 0020): ``artifact_bundles`` (per organization, by checksum),
``artifact_bundle_projects``, ``artifact_files``. Every query names the organization, and
every lookup for symbolication the project too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from events.artifact_bundle import Bundle, BundleError, normalize_debug_id, url_candidates
from events.artifacts import Artifact
from storage.errors import StorageError
from storage.scope import ProjectScope

MIB: Final = 1024 * 1024

ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


@dataclass(frozen=True)
class ArtifactConfig:
    """Where blobs live and the upload limits (cluster/settings.py ``artifact_*``)."""

    blob_dir: str = ""
    chunk_bytes: int = 8 * MIB
    max_request_bytes: int = 32 * MIB
    max_bundle_bytes: int = 256 * MIB
    max_unpacked_bytes: int = 1024 * MIB
    upload_concurrency: int = 4
    retention_s: float = 90 * 86_400.0
    chunk_retention_s: float = 86_400.0


# --- files on disk -----------------------------------------------------------------------
def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # as any file written here (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ChunkStore:
    """Uploaded chunks of one organization, named by their sha1 (checked by the caller)."""

    root: Path
    organization_id: int

    def _path(self, sha1: str) -> Path:
        return self.root / "chunks" / str(self.organization_id) / sha1

    def put(self, sha1: str, data: bytes) -> None:
        if not self._path(sha1).exists():
            _write_atomically(self._path(sha1), data)

    def missing(self, sha1s: Iterable[str]) -> list[str]:
        """The chunks not uploaded yet, in the order asked, each once."""
        return [s for s in dict.fromkeys(sha1s) if not self._path(s).exists()]

    def joined(self, sha1s: Sequence[str], limit_bytes: int) -> bytes:
        """The chunks in order, as one; more than ``limit_bytes`` is refused."""
        parts: list[bytes] = []
        size = 0
        for sha1 in sha1s:
            size += self._path(sha1).stat().st_size
            if size > limit_bytes:
                raise BundleError(f"the bundle is more than {limit_bytes} bytes"
                                  " (CRASHRAY_ARTIFACT_MAX_BUNDLE_BYTES)")
            parts.append(self._path(sha1).read_bytes())
        return b"".join(parts)

    def expire(self, older_than_s: float, now_s: float) -> int:
        """Removes the organization's chunks written more than ``older_than_s`` ago (an
        upload that never finished); how many."""
        removed = 0
        folder = self.root / "chunks" / str(self.organization_id)
        for path in folder.glob("*") if folder.is_dir() else ():
            try:
                if path.stat().st_mtime < now_s - older_than_s:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # removed by another replica meanwhile
                continue
        return removed

    def discard(self, sha1s: Iterable[str]) -> None:
        for sha1 in set(sha1s):
            self._path(sha1).unlink(missing_ok=True)


@dataclass(frozen=True)
class BlobStore:
    """File contents by sha256, each stored once whatever uploaded it."""

    root: Path

    def path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        path = self.path(digest)
        try:
            # Stored already: touched, so a sweep running meanwhile (``sweep_artifacts``
            # spares blobs younger than its grace) cannot remove it before the upload's
            # rows commit.
            os.utime(path)
        except FileNotFoundError:
            _write_atomically(path, content)
        return digest

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path(sha256).read_bytes()
        except FileNotFoundError:
            return None


# --- bundle metadata ---------------------------------------------------------------------
@dataclass(frozen=True)
class StoredBundle:
    id: int
    checksum: str
    bundle_id: str | None
    release: str | None
    dist: str | None
    size_bytes: int
    file_count: int
    date_added: dt.datetime
    debug_ids: tuple[str, ...] = ()


def find_bundle(conn: psycopg.Connection[Any], organization_id: int, checksum: str
                ) -> int | None:
    row = conn.execute("SELECT id FROM artifact_bundles WHERE organization_id = %s"
                       " AND checksum = %s AND source = 'bundle'", (organization_id, checksum)).fetchone()
    return None if row is None else int(row[0])


def refresh_bundle(conn: psycopg.Connection[Any], organization_id: int, bundle: int,
                   project_ids: Iterable[int]) -> None:
    """The bundle uploaded again: it gains the projects and counts as uploaded now (newest
    for lookups, its retention restarted)."""
    with conn.transaction():
        conn.execute("UPDATE artifact_bundles SET date_added = now() WHERE id = %s"
                     " AND organization_id = %s", (bundle, organization_id))
        link_projects(conn, organization_id, bundle, project_ids)


def expire_bundles(conn: psycopg.Connection[Any], organization_id: int,
                   older_than: dt.datetime) -> int:
    """Deletes the organization's bundles and release files last uploaded before
    ``older_than``; how many. Their blobs stay (other files may share them)."""
    with conn.transaction():
        return conn.execute("DELETE FROM artifact_bundles WHERE organization_id = %s"
                            " AND date_added < %s", (organization_id, older_than)).rowcount


def link_projects(conn: psycopg.Connection[Any], organization_id: int, bundle: int,
                  project_ids: Iterable[int]) -> None:
    """Adds the projects (of ``organization_id``, checked here) to the bundle's."""
    conn.execute(
        "INSERT INTO artifact_bundle_projects (bundle_id, project_id)"
        " SELECT %s, p.id FROM projects p WHERE p.organization_id = %s AND p.id = ANY(%s)"
        " ON CONFLICT DO NOTHING", (bundle, organization_id, sorted(set(project_ids))))


def store_bundle(conn: psycopg.Connection[Any], blobs: BlobStore, organization_id: int,
                 project_ids: Iterable[int], checksum: str, bundle: Bundle, size_bytes: int,
                 release: str | None = None, dist: str | None = None) -> int:
    """Stores the bundle's files (blobs first, then their rows) for the projects; the
    bundle's id. A bundle stored before under ``checksum`` only gains the projects.
    ``release``/``dist`` default to the bundle's own attributes."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                     (organization_id, checksum))
        found = find_bundle(conn, organization_id, checksum)
        if found is None:
            found = _insert_bundle(conn, blobs, organization_id, checksum, bundle,
                                   size_bytes, release or bundle.attributes.get("release")
                                   or None, dist or bundle.attributes.get("dist") or None)
        link_projects(conn, organization_id, found, project_ids)
    return found


def _insert_bundle(conn: psycopg.Connection[Any], blobs: BlobStore, organization_id: int,
                   checksum: str, bundle: Bundle, size_bytes: int, release: str | None,
                   dist: str | None) -> int:
    row = conn.execute(
        "INSERT INTO artifact_bundles (organization_id, checksum, bundle_id, release, dist,"
        " size_bytes, file_count) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (organization_id, checksum, bundle.attributes.get("debug_id"), release, dist,
         size_bytes, len(bundle.files))).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    bundle_row = int(row[0])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO artifact_files (bundle_id, organization_id, url, kind, debug_id,"
            " blob_sha256, size_bytes, headers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(bundle_row, organization_id, f.url, f.kind, f.debug_id, blobs.put(f.content),
              len(f.content), Jsonb(dict(f.headers))) for f in bundle.files])
    return bundle_row


def list_bundles(conn: psycopg.Connection[Any], scope: ProjectScope, limit: int
                 ) -> list[StoredBundle]:
    """The project's bundles, newest first, with the debug ids of their files."""
    rows = conn.execute(
        "SELECT b.id, b.checksum, b.bundle_id, b.release, b.dist, b.size_bytes,"
        " b.file_count, b.date_added, coalesce(array_agg(DISTINCT f.debug_id)"
        " FILTER (WHERE f.debug_id IS NOT NULL), '{}')"
        " FROM artifact_bundles b JOIN artifact_bundle_projects bp ON bp.bundle_id = b.id"
        " LEFT JOIN artifact_files f ON f.bundle_id = b.id"
        " WHERE b.organization_id = %s AND bp.project_id = %s AND b.source = 'bundle'"
        " GROUP BY b.id ORDER BY b.date_added DESC, b.id DESC LIMIT %s",
        (scope.organization_id, scope.id, limit)).fetchall()
    return [StoredBundle(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), r[7],
                         tuple(sorted(r[8]))) for r in rows]


def unlink_bundle(conn: psycopg.Connection[Any], scope: ProjectScope, bundle: int) -> bool:
    """Removes the bundle from the project (and deletes it once no project has it);
    False when the project has no such bundle. Blobs stay: other bundles may share them."""
    with conn.transaction():
        gone = conn.execute(
            "DELETE FROM artifact_bundle_projects bp USING artifact_bundles b"
            " WHERE bp.bundle_id = b.id AND b.id = %s AND b.organization_id = %s"
            " AND bp.project_id = %s", (bundle, scope.organization_id, scope.id)).rowcount
        conn.execute("DELETE FROM artifact_bundles b WHERE b.id = %s AND b.organization_id"
                     " = %s AND NOT EXISTS (SELECT 1 FROM artifact_bundle_projects bp"
                     " WHERE bp.bundle_id = b.id)", (bundle, scope.organization_id))
    return gone > 0


# --- release files (sentry-cli 2.x's single-file uploads) --------------------------------
@dataclass(frozen=True)
class ReleaseFile:
    id: int
    name: str
    dist: str | None
    sha1: str
    size_bytes: int
    headers: dict[str, str]
    date_added: dt.datetime


def release_file_kind(name: str, content: bytes) -> str:
    """What a file uploaded by name is: a source map (``.map``, or JSON with
    ``mappings``), else the minified source a frame points at."""
    if name.endswith(".map") or (content.lstrip()[:1] == b"{" and b'"mappings"' in content):
        return "source_map"
    return "minified_source"


def store_release_file(conn: psycopg.Connection[Any], blobs: BlobStore, scope: ProjectScope,
                       release: str, dist: str | None, name: str, content: bytes,
                       headers: dict[str, str]) -> ReleaseFile | None:
    """The file stored under ``name`` in the project's release; None when the release
    already has a file of that name and dist (Sentry answers 409 then)."""
    checksum = hashlib.sha1(content).hexdigest()
    kind = release_file_kind(name, content)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                     (scope.organization_id, f"release file {release} {name}"))
        if _release_files(conn, scope, release, " AND f.url = %s AND b.dist IS NOT DISTINCT"
                          " FROM %s", (name, dist), 1):
            return None
        row = conn.execute(
            "INSERT INTO artifact_bundles (organization_id, checksum, release, dist,"
            " size_bytes, file_count, source) VALUES (%s, %s, %s, %s, %s, 1,"
            " 'release_file') RETURNING id",
            (scope.organization_id, checksum, release, dist, len(content))).fetchone()
        assert row is not None  # INSERT ... RETURNING always returns the row
        debug_id = normalize_debug_id(headers.get("debug-id", ""))
        conn.execute(
            "INSERT INTO artifact_files (bundle_id, organization_id, url, kind, debug_id,"
            " blob_sha256, size_bytes, headers) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (row[0], scope.organization_id, name, kind, debug_id, blobs.put(content),
             len(content), Jsonb(headers)))
        link_projects(conn, scope.organization_id, int(row[0]), [scope.id])
        return _release_files(conn, scope, release, " AND b.id = %s", (row[0],), 1)[0]


def list_release_files(conn: psycopg.Connection[Any], scope: ProjectScope, release: str,
                       limit: int) -> list[ReleaseFile]:
    return _release_files(conn, scope, release, "", (), limit)


def _release_files(conn: psycopg.Connection[Any], scope: ProjectScope, release: str,
                   where: str, params: tuple[Any, ...], limit: int) -> list[ReleaseFile]:
    rows = conn.execute(
        "SELECT b.id, f.url, b.dist, b.checksum, f.size_bytes, f.headers, b.date_added"
        " FROM artifact_bundles b JOIN artifact_files f ON f.bundle_id = b.id"
        " JOIN artifact_bundle_projects bp ON bp.bundle_id = b.id"
        " WHERE b.organization_id = %s AND bp.project_id = %s AND b.source = 'release_file'"
        f" AND b.release = %s{where} ORDER BY b.id LIMIT %s",
        (scope.organization_id, scope.id, release, *params, limit)).fetchall()
    return [ReleaseFile(int(r[0]), r[1], r[2], r[3], int(r[4]), dict(r[5]), r[6])
            for r in rows]


# --- reading for symbolication -----------------------------------------------------------
_FILE_COLUMNS: Final = "f.url, f.kind, f.blob_sha256, f.headers"
_PROJECT_FILES: Final = (
    " FROM artifact_files f JOIN artifact_bundles b ON b.id = f.bundle_id"
    " JOIN artifact_bundle_projects bp ON bp.bundle_id = b.id"
    " WHERE f.organization_id = %s AND b.organization_id = %s AND bp.project_id = %s")


class ProjectArtifacts:
    """One project's uploaded files, as ``events.artifacts.ArtifactSource``: the newest
    upload wins when several match.

    Lookups are remembered for ``lookup_cache_s`` (found or not, at most
    ``lookup_cache_entries`` of them): every event of a build asks for the same few files,
    and a project that uploads nothing would otherwise cost each JavaScript event a few
    queries. An upload is therefore seen by symbolication at most that long after it
    finished. What is remembered is the file's name and blob hash, not its content."""

    def __init__(self, conn_factory: ConnectionFactory, blob_dir: str | Path,
                 organization_id: int, project_id: int, lookup_cache_s: float = 0.0,
                 lookup_cache_entries: int = 4096) -> None:
        self._connect = conn_factory
        self._blobs = BlobStore(Path(blob_dir))
        self._scope = (organization_id, organization_id, project_id)
        self._cache_s = lookup_cache_s
        self._cache_entries = lookup_cache_entries
        self._cache: OrderedDict[tuple[Any, ...], tuple[float, tuple[Any, ...] | None]] = \
            OrderedDict()
        self._cache_lock = threading.Lock()

    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None:
        normalized = normalize_debug_id(debug_id)
        if normalized is None:
            return None
        return self._first(" AND f.debug_id = %s AND f.kind = %s", (normalized, kind))

    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None:
        candidates = url_candidates(url)
        return self._first(
            " AND f.url = ANY(%s) AND f.kind = %s AND b.release IS NOT DISTINCT FROM %s"
            " AND b.dist IS NOT DISTINCT FROM %s ORDER BY array_position(%s, f.url)",
            (candidates, kind, release, dist, candidates), ordered=True)

    def _first(self, where: str, params: tuple[Any, ...], ordered: bool = False
               ) -> Artifact | None:
        key = (where, *(tuple(p) if isinstance(p, list) else p for p in params))
        row = self._cached(key)
        if row is _NOT_CACHED:
            order = ", " if ordered else " ORDER BY "
            sql = (f"SELECT {_FILE_COLUMNS}{_PROJECT_FILES}{where}{order}"
                   "b.date_added DESC, b.id DESC, f.id LIMIT 1")
            with self._connect() as conn:
                found = conn.execute(sql, (*self._scope, *params)).fetchone()
            row = None if found is None else tuple(found)
            self._remember(key, row)
        if row is None:
            return None
        content = self._blobs.get(row[2])
        if content is None:  # the row outlived its blob (a data directory copied in part)
            return None
        return Artifact(row[0], row[1], content, dict(row[3]))

    def _cached(self, key: tuple[Any, ...]) -> Any:
        if self._cache_s <= 0:
            return _NOT_CACHED
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None or entry[0] < time.monotonic():
                return _NOT_CACHED
            return entry[1]

    def _remember(self, key: tuple[Any, ...], row: tuple[Any, ...] | None) -> None:
        if self._cache_s <= 0:
            return
        with self._cache_lock:
            self._cache[key] = (time.monotonic() + self._cache_s, row)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)


#: A lookup not in ``ProjectArtifacts``' cache (None is a remembered miss).
_NOT_CACHED: Final = object()


class SharedConnection:
    """One PostgreSQL connection for a process's artifact lookups, as a
    ``ConnectionFactory``: a lookup takes it under a lock (a symbolication actor serves a
    few threads; a lookup is one indexed query). A connection that failed is dropped and
    the next lookup opens a fresh one; a database that does not answer raises
    ``StorageError``, so the consumer retries the item later instead of storing the event
    unsymbolicated."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None

    @contextmanager
    def __call__(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self._url, autocommit=True)
                yield self._conn
            except psycopg.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise StorageError(f"the artifact store's database did not answer: {exc}"
                                   ) from exc


_shared: dict[str, SharedConnection] = {}
_shared_lock = threading.Lock()


def shared_connection(url: str) -> SharedConnection:
    """This process's ``SharedConnection`` to ``url`` (made on first use)."""
    with _shared_lock:
        found = _shared.get(url)
        if found is None:
            found = _shared[url] = SharedConnection(url)
        return found


def artifact_source(postgres_url: str, blob_dir: str, lookup_cache_s: float,
                    organization_id: int, project_id: int) -> ProjectArtifacts:
    """The ``SymbolicationConfig.artifacts_for`` of a running instance (bound to its
    database, blob directory and lookup cache time with ``functools.partial``; it travels
    to the actors, so it is a module-level function): one project's artifacts, on the
    process's shared connection."""
    return ProjectArtifacts(shared_connection(postgres_url), blob_dir, organization_id,
                            project_id, lookup_cache_s)


# --- retention sweep ---------------------------------------------------------------------
@dataclass(frozen=True)
class ArtifactSweep:
    """What the periodic sweep removes (``CRASHRAY_ARTIFACT_*`` in cluster/settings.py)."""

    root: str
    retention_s: float
    chunk_retention_s: float
    interval_s: float = 3600.0
    #: Blobs written or touched this recently are kept even when no file names them yet:
    #: an upload stores its blobs before its rows commit.
    blob_grace_s: float = 3600.0


@dataclass(frozen=True)
class SweepResult:
    bundles: int
    chunks: int
    blobs: int
    blob_bytes: int


#: One sweep at a time across the instance's consumers (a PostgreSQL advisory lock key).
_SWEEP_LOCK: Final = 0x4352_4153_4157  # "CRASW"
_SWEEP_BATCH: Final = 1000


def sweep_artifacts(conn: psycopg.Connection[Any], sweep: ArtifactSweep, now_s: float
                    ) -> SweepResult | None:
    """Retention of uploaded files, across organizations (a maintenance pass, like the
    events' TTL; it reads and deletes by age and content hash only): bundles and release
    files last uploaded more than ``retention_s`` ago, chunks of uploads never finished,
    and blobs no stored file names any more. None when another consumer is sweeping."""
    root = Path(sweep.root)
    with conn.transaction():
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_SWEEP_LOCK,)
                            ).fetchone()[0]:  # type: ignore[index]
            return None
        cutoff = dt.datetime.fromtimestamp(now_s - sweep.retention_s, dt.UTC)
        bundles = conn.execute("DELETE FROM artifact_bundles WHERE date_added < %s",
                               (cutoff,)).rowcount
        chunks = 0
        chunk_root = root / "chunks"
        for folder in chunk_root.iterdir() if chunk_root.is_dir() else ():
            if folder.name.isdigit():
                chunks += ChunkStore(root, int(folder.name)).expire(sweep.chunk_retention_s,
                                                                    now_s)
        blobs = blob_bytes = 0
        for batch in _old_blobs(root, now_s - sweep.blob_grace_s):
            named = {r[0] for r in conn.execute(
                "SELECT DISTINCT blob_sha256 FROM artifact_files WHERE blob_sha256 = ANY(%s)",
                (list(batch),)).fetchall()}
            for digest, path in batch.items():
                if digest in named:
                    continue
                try:
                    size = path.stat().st_size
                    if path.stat().st_mtime < now_s - sweep.blob_grace_s:
                        path.unlink()
                        blobs, blob_bytes = blobs + 1, blob_bytes + size
                except FileNotFoundError:
                    continue
    return SweepResult(bundles, chunks, blobs, blob_bytes)


def _old_blobs(root: Path, before_s: float) -> Iterator[dict[str, Path]]:
    """The blob files last written before ``before_s``, by sha256, in batches."""
    batch: dict[str, Path] = {}
    for path in (root / "blobs").glob("??/*"):
        try:
            if len(path.name) != 64 or path.stat().st_mtime >= before_s:
                continue
        except FileNotFoundError:
            continue
        batch[path.name] = path
        if len(batch) >= _SWEEP_BATCH:
            yield batch
            batch = {}
    if batch:
        yield batch


# --- deleting a release file (the dashboard's project settings; Sentry's DELETE of
# ``releases/{version}/files/{file_id}/``) ----------------------------------------------
def delete_release_file(conn: psycopg.Connection[Any], scope: ProjectScope, release: str,
                        file_id: int) -> bool:
    """Deletes the project's release file ``file_id`` of ``release`` (its one-file bundle,
    whose rows cascade); False when the project has no such file in that release. Its blob
    stays until the retention sweep finds no file naming it (others may share it)."""
    with conn.transaction():
        return conn.execute(
            "DELETE FROM artifact_bundles b WHERE b.id = %s AND b.organization_id = %s"
            " AND b.source = 'release_file' AND b.release = %s AND EXISTS (SELECT 1 FROM"
            " artifact_bundle_projects bp WHERE bp.bundle_id = b.id AND bp.project_id = %s)",
            (file_id, scope.organization_id, release, scope.id)).rowcount > 0
