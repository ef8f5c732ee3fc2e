"""Artifact bundles as ``sentry-cli sourcemaps upload`` sends them, and the chunks they
travel in (pure: bytes in, values out).

sentry-cli (src/utils/source_bundle.rs, symbolic's ``SourceBundleWriter``) writes a bundle
as an 8-byte header (``SYSB`` and a little-endian u32 format version) followed by a zip;
older tools send the bare zip. The zip holds ``manifest.json``::

    {"files": {"<path in zip>": {"url": "~/app.min.js", "type": "minified_source",
                                 "headers": {"debug-id": "<uuid>", "sourcemap": "..."}}},
     "debug_id": "<the bundle's id>", "org": "...", "project": "...", "release": "...",
     "dist": "..."}

and the files it names. The bundle is uploaded in chunks (each named by its sha1) and
assembled from the ordered list of their sha1s; the sha1 of the whole is its checksum.

Errors (part of events/errors.py's tree)::

    BadRequest          400
    └── BundleError     400  invalid_bundle: a chunk or bundle that cannot be read
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from events.errors import BadRequest

#: symbolic's source bundle header: magic, then the format version (u32, little endian).
SYSB_MAGIC: Final = b"SYSB"
SYSB_HEADER_BYTES: Final = 8
MANIFEST_NAME: Final = "manifest.json"
#: The kinds symbolication looks files up by (symbolic's ``SourceFileType``).
KNOWN_KINDS: Final = frozenset({"source", "minified_source", "source_map",
                                "indexed_ram_bundle"})
_SHA1: Final = re.compile(r"[0-9a-f]{40}")


class BundleError(BadRequest):
    code = "invalid_bundle"


@dataclass(frozen=True)
class BundleFile:
    url: str
    kind: str
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def debug_id(self) -> str | None:
        for name, value in self.headers.items():
            if name.lower() in ("debug-id", "debug_id"):
                return normalize_debug_id(value)
        return None


@dataclass(frozen=True)
class Bundle:
    files: tuple[BundleFile, ...]
    attributes: Mapping[str, str]


def normalize_debug_id(value: str) -> str | None:
    """A debug id as stored: lower-case UUID with dashes (``32HEX`` and upper case are
    accepted, as sentry-cli and the SDKs write both); None when it is not a UUID."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def is_sha1(value: str) -> bool:
    return _SHA1.fullmatch(value) is not None


def check_chunk(name: str, data: bytes) -> str:
    """The chunk's sha1 (lower case), after checking it is the part's file name."""
    declared = name.strip().lower()
    if not is_sha1(declared):
        raise BundleError(f"chunk {name[:60]!r}: the part's file name must be the chunk's"
                          " sha1 (40 hex digits)")
    actual = hashlib.sha1(data).hexdigest()
    if actual != declared:
        raise BundleError(f"chunk {declared}: its content has sha1 {actual}; the chunk was"
                          " damaged on the way, upload it again")
    return declared


def gunzip_bounded(data: bytes, limit_bytes: int, what: str) -> bytes:
    """``data`` gunzipped, refusing more than ``limit_bytes`` of output."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit_bytes + 1)
    except zlib.error as exc:
        raise BundleError(f"{what}: not valid gzip ({exc})") from None
    if len(out) > limit_bytes or inflater.unconsumed_tail:
        raise BundleError(f"{what}: more than {limit_bytes} bytes once gunzipped"
                          " (CRASHRAY_ARTIFACT_CHUNK_BYTES)")
    return out


def read_bundle(data: bytes, max_unpacked_bytes: int) -> Bundle:
    """The files of an assembled bundle, as its manifest lists them."""
    archive = _open_zip(data)
    with archive:
        manifest = _manifest(archive)
        entries = manifest.get("files") or {}
        if not isinstance(entries, dict):
            raise BundleError("manifest.json: \"files\" must be an object of path → file")
        names = {info.filename: info for info in archive.infolist()}
        unpacked = sum(names[p].file_size for p in entries if p in names)
        if unpacked > max_unpacked_bytes:
            raise BundleError(f"the bundle's files add up to {unpacked} bytes unpacked; at"
                              f" most {max_unpacked_bytes} are taken"
                              " (CRASHRAY_ARTIFACT_MAX_UNPACKED_BYTES)")
        files = tuple(_bundle_file(archive, names, path, entry)
                      for path, entry in sorted(entries.items()))
    # symbolic writes the bundle's attributes beside "files" (debug_id, org, project,
    # release, dist); string values only.
    attributes = {k: v for k, v in manifest.items() if k != "files" and isinstance(v, str)}
    return Bundle(files, attributes)


def _open_zip(data: bytes) -> zipfile.ZipFile:
    body = data[SYSB_HEADER_BYTES:] if data.startswith(SYSB_MAGIC) else data
    try:
        return zipfile.ZipFile(io.BytesIO(body))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"the bundle is not a zip archive ({exc}); upload it with"
                          " sentry-cli sourcemaps upload") from None


def _manifest(archive: zipfile.ZipFile) -> dict[str, Any]:
    try:
        raw = archive.read(MANIFEST_NAME)
    except KeyError:
        raise BundleError("the bundle has no manifest.json") from None
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise BundleError(f"manifest.json cannot be unpacked ({exc})") from None
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError("manifest.json must be a JSON object")
    return manifest


def _bundle_file(archive: zipfile.ZipFile, names: Mapping[str, zipfile.ZipInfo], path: str,
                 entry: Any) -> BundleFile:
    where = f"manifest.json files[{path!r}]"
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: must be an object with url, type and headers")
    url, kind, headers = entry.get("url"), entry.get("type"), entry.get("headers") or {}
    if not isinstance(url, str) or not url or "\x00" in url:
        raise BundleError(f"{where}: \"url\" must be a non-empty string")
    if not isinstance(kind, str) or kind not in KNOWN_KINDS:
        raise BundleError(f"{where}: \"type\" is {kind!r}; one of"
                          f" {', '.join(sorted(KNOWN_KINDS))} is expected")
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise BundleError(f"{where}: \"headers\" must map names to strings")
    if path not in names:
        raise BundleError(f"{where}: the zip has no file {path!r}")
    try:
        content = archive.read(names[path])
    except (zipfile.BadZipFile, zlib.error) as exc:
        raise BundleError(f"{where}: cannot be unpacked ({exc})") from None
    return BundleFile(url, kind, content, {k.lower(): v for k, v in headers.items()})


def url_candidates(url: str) -> list[str]:
    """The stored names a frame's URL matches, best first: the URL itself, then ``~`` and
    its path with and without the query string (``~/`` means any host, as Sentry names
    release files: https://cdn.example.com/static/app.js matches ``~/static/app.js``;
    ``app:///main.js`` matches ``~/main.js``)."""
    found = [url]
    parts = urlsplit(url)
    if parts.scheme and parts.path:
        path = parts.path if parts.path.startswith("/") else "/" + parts.path
        if parts.query:
            found.append(f"~{path}?{parts.query}")
        found.append(f"~{path}")
    return list(dict.fromkeys(found))
