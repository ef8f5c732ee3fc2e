"""Uploaded release artifacts as symbolication reads them: minified files, source maps and
sources, found by debug ID or by release + dist + URL.

Pure (no Ray, no SQL). ``storage.artifacts.ProjectArtifacts`` implements ``ArtifactSource``
over PostgreSQL and the blob store, for one organization and project (the interface agreed
in notes/SOURCEMAPS.md); ``MemoryArtifacts`` is an in-memory one for tests and benches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

#: The artifact kinds an artifact bundle's manifest knows (its file ``type``).
MINIFIED_SOURCE = "minified_source"
SOURCE_MAP = "source_map"
SOURCE = "source"


@dataclass(frozen=True)
class Artifact:
    url: str  # "~/app.min.js" or a full URL, as in the manifest
    kind: str  # "minified_source" | "source_map" | "source"
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # {"debug-id": …, "sourcemap": …}
    #: Read from its URL by source fetching (events/source_fetch.py), not uploaded: a file
    #: fetched without a source map is taken as plain source, not as a map gone missing.
    fetched: bool = False


class ArtifactUnavailable(Exception):
    """Raised by an ``ArtifactSource``'s ``by_url`` that looked ``url`` up everywhere it
    can (the uploads under every candidate name, then the URL itself) and can say why
    nothing is there: ``error`` is the event's ``errors`` entry (a fetch that failed, a
    host the project does not allow). Symbolication stops looking for that file."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("reason") or error["type"])
        self.error = error


class ArtifactSource(Protocol):
    """One project's artifacts (tenant-scoped: one organization and project)."""

    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None: ...

    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None:
        """The artifact stored under ``url`` (one of ``candidate_urls``); None when there
        is none; may raise ``ArtifactUnavailable`` to say why."""
        ...


_UUID_HEX = re.compile(r"^[0-9a-fA-F]{32}$")


def normalize_debug_id(debug_id: str) -> str:
    """Lower-case UUID with dashes: sentry-cli writes them so, SDKs may send either form
    (and native-style ids append an age, ``…-0``, which a source map's id never has)."""
    value = debug_id.strip().lower()
    plain = value.replace("-", "")
    if _UUID_HEX.match(plain):
        return f"{plain[:8]}-{plain[8:12]}-{plain[12:16]}-{plain[16:20]}-{plain[20:]}"
    return value


def tilde_url(url: str) -> str | None:
    """Sentry's host-independent name of ``url``: ``~`` + its path (and query), so that
    ``https://cdn.example.com/static/app.js`` and ``app:///static/app.js`` both match an
    artifact uploaded as ``~/static/app.js``. None for a URL that has no path."""
    parts = urlsplit(url)
    if not parts.scheme and not url.startswith("/"):
        return None
    path = parts.path if parts.scheme else url.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    return f"~{path}" + (f"?{parts.query}" if parts.scheme and parts.query else "")


def candidate_urls(url: str) -> list[str]:
    """The names an artifact for ``url`` may be stored under, best first: the URL as sent,
    without query and fragment, and the ``~/path`` forms of both (Sentry's release-file
    lookup tries the same ones)."""
    bare = url.split("#", 1)[0]
    no_query = bare.split("?", 1)[0]
    names = [url, bare, no_query, tilde_url(bare), tilde_url(no_query)]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


class MemoryArtifacts:
    """``ArtifactSource`` over a list of artifacts; each is found by its ``debug-id``
    header (with its kind) and by (release, dist, url) when ``release`` is given."""

    def __init__(self, artifacts: Iterable[tuple[str | None, str | None, Artifact]] = ()
                 ) -> None:
        self._by_debug_id: dict[tuple[str, str], Artifact] = {}
        self._by_url: dict[tuple[str | None, str | None, str, str], Artifact] = {}
        for release, dist, artifact in artifacts:
            self.add(artifact, release=release, dist=dist)

    def add(self, artifact: Artifact, release: str | None = None, dist: str | None = None
            ) -> None:
        debug_id = _header(artifact.headers, "debug-id")
        if debug_id:
            self._by_debug_id[(normalize_debug_id(debug_id), artifact.kind)] = artifact
        self._by_url[(release, dist, artifact.url, artifact.kind)] = artifact

    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None:
        return self._by_debug_id.get((normalize_debug_id(debug_id), kind))

    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None:
        return self._by_url.get((release, dist, url, kind))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def artifact_header(artifact: Artifact, name: str) -> str | None:
    """A header of ``artifact`` by case-insensitive name (manifests write either case)."""
    return _header(artifact.headers, name.lower())
