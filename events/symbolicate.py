"""JavaScript source maps applied to an event's stack traces (issue 12; spec §8.1).

Pure code (no Ray, no I/O but what the ``ArtifactSource`` it is handed does). For an event
of platform ``javascript`` or ``node``, every frame of ``exception.values[].stacktrace``
and ``threads.values[].stacktrace`` is looked up in the source map of the file it ran in:

1. by debug ID: the event's ``debug_meta.images`` entry of type ``sourcemap`` whose
   ``code_file`` is the frame's path names the bundle's ``debug_id``;
2. else by release + dist + URL: the minified file stored under the frame's URL (or its
   ``~/path``), then its ``sourcemap`` header or ``//# sourceMappingURL`` comment (resolved
   against the frame's URL; ``data:`` URLs read inline) names the map.

A resolved frame gets the original ``abs_path``/``filename``, ``lineno``/``colno`` (both
1-based, as the SDKs send them and as ``SourceMapCache.lookup`` takes and returns them),
``function`` (the enclosing scope's original name), ``context_line``/``pre_context``/
``post_context`` from the map's ``sourcesContent``, ``data.sourcemap`` (which turns JS
function names off in grouping, spec §6.5) and ``in_app`` false for ``node_modules`` and
bundler runtime files. A file fetched from its URL (events/source_fetch.py) that names no
map is taken as plain, unminified source, as Sentry takes it: its frames get their context
lines from the file itself and no error (an *uploaded* minified file without a map still
reports ``js_no_source``: someone meant to upload its map). A stack trace with any frame changed keeps its minified frames as
``raw_stacktrace``, as Sentry does. A frame that cannot be resolved stays as it was and
the reason goes into the event's ``errors`` (Sentry's ``EventError`` types, below); the
event is never dropped.

Parsed maps are kept in ``SourceMapCaches``, an LRU bounded in bytes and keyed by the
content hash of the minified file and map, so two events of one build parse it once.
"""

from __future__ import annotations

import base64
import hashlib
import posixpath
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes, urlsplit

from symbolic.exceptions import SymbolicError
from symbolic.sourcemapcache import SourceMapCache, SourceMapCacheToken

from events.artifacts import (
    MINIFIED_SOURCE,
    SOURCE_MAP,
    Artifact,
    ArtifactSource,
    ArtifactUnavailable,
    artifact_header,
    candidate_urls,
    normalize_debug_id,
)

#: Platforms whose frames are JavaScript (Sentry's JS processor handles both).
JS_PLATFORMS = frozenset({"javascript", "node"})
#: Lines of source before and after the frame's line (Sentry shows five).
CONTEXT_LINES = 5
#: Sentry's ``EventError`` types for JavaScript processing (sentry/models/eventerror.py),
#: what the event page and ``errors`` in the event API show.
JS_NO_SOURCE = "js_no_source"  # no minified file / map found ("source code was not found")
JS_INVALID_SOURCEMAP = "js_invalid_source"  # the map does not parse, or is another build's
JS_MISSING_SOURCES_CONTENT = "js_missing_sources_content"  # map without the original source
JS_INVALID_SOURCEMAP_LOCATION = "js_invalid_sourcemap_location"  # position not in the file
JS_TOO_LARGE = "js_too_large"  # map larger than the symbolication limit
JS_NO_COLUMN = "js_no_column"  # frame without a column: a minified line cannot be mapped
#: The ``errors`` type of an event whose handler failed unexpectedly (stored as sent;
#: actors/symbolicate.py).
SYMBOLICATION_FAILED = "symbolication_failed"
#: Every ``errors`` type symbolication adds: ``crashray reprocess`` drops them before it
#: symbolicates an event again, which adds the ones that still hold.
SYMBOLICATION_ERRORS = frozenset({
    JS_NO_SOURCE, JS_INVALID_SOURCEMAP, JS_MISSING_SOURCES_CONTENT,
    JS_INVALID_SOURCEMAP_LOCATION, JS_TOO_LARGE, JS_NO_COLUMN, SYMBOLICATION_FAILED})

#: Frame paths that are no file a map could exist for (node built-ins, eval, natives).
_NOT_A_FILE = re.compile(r"^(node:|<anonymous>|\[native code\]|native|eval)")
_NODE_MODULES = re.compile(r"(^|/)node_modules/")
#: Bundler runtime code: webpack's bootstrap and its ``(webpack)/`` and ``/~/`` modules.
_BUNDLER_RUNTIME = re.compile(r"webpack/bootstrap|\(webpack\)/|/~/|webpack/runtime/")
_SOURCE_MAPPING_URL = re.compile(rb"[#@]\s*sourceMappingURL=(\S+)")
_DEBUG_ID_COMMENT = re.compile(rb"[#@]\s*debugId=([0-9a-fA-F-]{32,36})")
_MAP_DEBUG_ID = re.compile(rb'"debug_?[iI]d"\s*:\s*"([0-9a-fA-F-]{32,36})"')
#: How far from the end of a minified file its trailing comments are looked for.
_TRAILER_BYTES = 4096
#: Context lines taken from a file itself are cut to this many characters around the
#: frame's column (Sentry trims them so; a minified line is one huge line).
MAX_FILE_CONTEXT_CHARS = 150


@dataclass(frozen=True)
class SymbolicationLimits:
    """The limits symbolication applies (``CRASHRAY_SYMBOLICATION_*`` in cluster/settings)."""

    max_map_bytes: int = 64 * 1024 * 1024
    context_lines: int = CONTEXT_LINES


class UnresolvedFrame(Exception):
    """Why a frame (or every frame of one file) stays minified: the ``errors`` entry."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["type"])
        self.error = error


@dataclass(frozen=True)
class ParsedMap:
    """One minified file with its map, parsed: what lookups need."""

    cache: SourceMapCache
    #: Lengths of the minified file's lines (None when only the map was uploaded).
    line_lengths: tuple[int, ...] | None
    has_sources_content: bool
    size_bytes: int


def parse_map(minified: bytes | None, source_map: bytes) -> ParsedMap:
    """Parse a map (and its minified file, which gives the original function names);
    raises ``UnresolvedFrame`` (``js_invalid_source``) for a map that is not one, or for a
    pair whose debug IDs differ (a map of another build)."""
    try:
        cache = SourceMapCache.from_bytes(minified or b"", source_map)
    except SymbolicError as exc:
        raise UnresolvedFrame({"type": JS_INVALID_SOURCEMAP,
                               "reason": f"the source map does not parse: {exc}"}) from exc
    if minified is not None:
        in_file = _DEBUG_ID_COMMENT.search(minified[-_TRAILER_BYTES:])
        in_map = _MAP_DEBUG_ID.search(source_map)
        if in_file and in_map and (normalize_debug_id(in_file.group(1).decode())
                                   != normalize_debug_id(in_map.group(1).decode())):
            raise UnresolvedFrame({
                "type": JS_INVALID_SOURCEMAP,
                "reason": f"the minified file has debug ID {in_file.group(1).decode()} but"
                          f" its source map {in_map.group(1).decode()}: another build's map"})
    lengths = None if minified is None else tuple(
        len(line) for line in minified.split(b"\n"))
    return ParsedMap(cache, lengths, b'"sourcesContent"' in source_map,
                     len(source_map) + len(minified or b""))


class SourceMapCaches:
    """Parsed maps, least recently used evicted beyond ``max_bytes`` (counted as the
    sizes of the minified file and map, an upper bound of the parsed form). Thread-safe:
    a consumer actor serves from several threads."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, ParsedMap] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, minified: bytes | None, source_map: bytes) -> ParsedMap:
        """The parsed pair; raises ``UnresolvedFrame`` as ``parse_map`` does (a broken map
        is parsed again next time: it may be re-uploaded under the same name)."""
        key = content_key(minified, source_map)
        with self._lock:
            parsed = self._entries.get(key)
            if parsed is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return parsed
            self.misses += 1
        parsed = parse_map(minified, source_map)
        with self._lock:
            if key not in self._entries and parsed.size_bytes <= self.max_bytes:
                self._entries[key] = parsed
                self.bytes += parsed.size_bytes
                while self.bytes > self.max_bytes:
                    _, evicted = self._entries.popitem(last=False)
                    self.bytes -= evicted.size_bytes
        return parsed


def content_key(minified: bytes | None, source_map: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    h.update(b"-" if minified is None else b"m%d:" % len(minified))
    h.update(minified or b"")
    h.update(source_map)
    return h.digest()


@dataclass(frozen=True)
class ResolvedFile:
    """The map found for one minified file, and how."""

    parsed: ParsedMap
    #: Where the map is (what ``data.sourcemap`` and errors show; an inline ``data:`` map
    #: is shown as the minified file's URL with "(inline source map)").
    map_url: str
    #: What the map's ``sources`` are relative to: the map's URL, or for an inline map the
    #: minified file's.
    sources_base: str
    resolved_with: str  # "debug-id" | "release"


@dataclass(frozen=True)
class PlainSource:
    """A fetched file that names no source map: plain source, its own lines the context."""

    lines: tuple[str, ...]


class JavaScriptSymbolicator:
    """Applies source maps to JavaScript events; holds the parsed-map cache."""

    def __init__(self, caches: SourceMapCaches,
                 limits: SymbolicationLimits = SymbolicationLimits()) -> None:
        self.caches = caches
        self.limits = limits

    def symbolicate(self, event: dict[str, Any], artifacts: ArtifactSource) -> dict[str, Any]:
        """``event`` with its JavaScript frames resolved (a new dict; ``event`` itself is
        returned unchanged when it is not JavaScript or has no stack trace)."""
        if event.get("platform") not in JS_PLATFORMS:
            return event
        run = _EventRun(self, event, artifacts)
        changed = False
        containers = []
        for container in _stacktrace_containers(event):
            frames = container["stacktrace"].get("frames")
            new_frames = [run.frame(f) if isinstance(f, dict) else f for f in frames]
            containers.append((container, new_frames))
            changed |= any(a is not b for a, b in zip(frames, new_frames, strict=True))
        if not changed and not run.errors:
            return event
        result = _with_own_stacktrace_containers(event)
        for (_, new_frames), copied in zip(containers, _stacktrace_containers(result),
                                           strict=True):
            frames = copied["stacktrace"]["frames"]
            if any(a != b for a, b in zip(frames, new_frames, strict=True)):
                copied["raw_stacktrace"] = {**copied["stacktrace"], "frames": [
                    dict(f) if isinstance(f, dict) else f for f in frames]}
                copied["stacktrace"] = {**copied["stacktrace"], "frames": new_frames}
        if run.errors:
            result["errors"] = [*(result.get("errors") or []), *run.errors]
        return result


def _with_own_stacktrace_containers(event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` whose exception and thread values are its own (shallow) dicts,
    everything else shared: what ``symbolicate`` replaces, without copying the rest of a
    large event (contexts, breadcrumbs, modules) as a deep copy would."""
    result = dict(event)
    for key in ("exception", "threads"):
        section = result.get(key)
        if isinstance(section, dict) and isinstance(section.get("values"), list):
            result[key] = {**section, "values": [
                dict(v) if isinstance(v, dict) else v for v in section["values"]]}
    return result


def _stacktrace_containers(event: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Exception values and threads with a stack trace, in payload order."""
    for key in ("exception", "threads"):
        section = event.get(key)
        values = section.get("values") if isinstance(section, dict) else None
        for value in values if isinstance(values, list) else ():
            if (isinstance(value, dict) and isinstance(value.get("stacktrace"), dict)
                    and isinstance(value["stacktrace"].get("frames"), list)):
                yield value


class _EventRun:
    """One event's symbolication: the files resolved so far and the errors met."""

    def __init__(self, owner: JavaScriptSymbolicator, event: Mapping[str, Any],
                 artifacts: ArtifactSource) -> None:
        self.owner = owner
        self.artifacts = artifacts
        self.release = _str_or_none(event.get("release"))
        self.dist = _str_or_none(event.get("dist"))
        self.debug_ids = _sourcemap_images(event)
        self.files: dict[str, ResolvedFile | PlainSource | UnresolvedFrame] = {}
        self.errors: list[dict[str, Any]] = []

    def frame(self, frame: dict[str, Any]) -> dict[str, Any]:
        path = _frame_path(frame)
        if path is None or frame.get("platform") not in (None, *JS_PLATFORMS):
            return frame
        try:
            return self._resolve(frame, path)
        except UnresolvedFrame as exc:
            if _worth_reporting(frame, exc.error):
                self._error(exc.error)
            return _with_in_app(frame, path)

    def _error(self, error: dict[str, Any]) -> None:
        if error not in self.errors:  # once per file and reason, as Sentry reports them
            self.errors.append(error)

    def _resolve(self, frame: dict[str, Any], path: str) -> dict[str, Any]:
        if path not in self.files:
            try:
                self.files[path] = self._find_map(path)
            except UnresolvedFrame as exc:
                self.files[path] = exc
        found = self.files[path]
        if isinstance(found, UnresolvedFrame):
            raise found
        if isinstance(found, PlainSource):
            return _with_in_app(_with_file_context(frame, found, self.owner.limits), path)
        lineno, colno = frame.get("lineno"), frame.get("colno")
        if not isinstance(lineno, int) or lineno < 1:
            raise UnresolvedFrame({"type": JS_INVALID_SOURCEMAP_LOCATION, "url": path,
                                   "row": lineno, "column": colno})
        if not isinstance(colno, int) or colno < 1:
            raise UnresolvedFrame({"type": JS_NO_COLUMN, "url": path})
        token = self._lookup(found, path, lineno, colno)
        return _resolved_frame(frame, token, found)

    def _lookup(self, found: ResolvedFile, path: str, lineno: int, colno: int
                ) -> SourceMapCacheToken:
        lengths = found.parsed.line_lengths
        out_of_file = lengths is not None and (
            lineno > len(lengths) or colno > lengths[lineno - 1] + 1)
        token = None if out_of_file else found.parsed.cache.lookup(
            lineno, colno, self.owner.limits.context_lines)
        if token is None or token.src is None:
            raise UnresolvedFrame({"type": JS_INVALID_SOURCEMAP_LOCATION, "url": path,
                                   "row": lineno, "column": colno,
                                   "sourcemap": found.map_url})
        if token.context_line is None and not found.parsed.has_sources_content:
            self._error({"type": JS_MISSING_SOURCES_CONTENT, "url": path,
                         "source": token.src, "sourcemap": found.map_url})
        return token

    def _find_map(self, path: str) -> ResolvedFile | PlainSource:
        debug_id = self.debug_ids.get(path)
        if debug_id is not None:
            source_map = self.artifacts.by_debug_id(debug_id, SOURCE_MAP)
            if source_map is not None:
                minified = self.artifacts.by_debug_id(debug_id, MINIFIED_SOURCE)
                map_url = join_url(path, posixpath.basename(source_map.url))
                return self._parsed(path, minified, source_map.content, map_url, "debug-id")
        return self._find_map_by_url(path, debug_id)

    def _find_map_by_url(self, path: str, debug_id: str | None
                         ) -> ResolvedFile | PlainSource:
        minified = self._by_url(path, MINIFIED_SOURCE)
        if minified is None:
            raise UnresolvedFrame(_no_source(path, debug_id, self.release, "minified file"))
        reference = source_map_reference(minified)
        if reference is None and minified.fetched:
            return PlainSource(tuple(line.rstrip("\r") for line in minified.content.decode(
                "utf-8", "replace").split("\n")))
        if reference is None:
            raise UnresolvedFrame({**_no_source(path, debug_id, self.release, "source map"),
                                   "reason": "the minified file names no source map (no"
                                             " sourceMappingURL comment or sourcemap header)"})
        map_url = join_url(path, reference)
        if map_url.startswith("data:"):
            map_bytes = read_data_url(map_url)
            if map_bytes is None:
                raise UnresolvedFrame({"type": JS_INVALID_SOURCEMAP, "url": path,
                                       "reason": "the inline (data: URL) source map is"
                                                 " malformed"})
            return self._parsed(path, minified, map_bytes,
                                f"{path} (inline source map)", "release", sources_base=path)
        artifact = self._by_url(map_url, SOURCE_MAP)
        if artifact is None:
            raise UnresolvedFrame({**_no_source(path, debug_id, self.release, "source map"),
                                   "sourcemap": map_url})
        return self._parsed(path, minified, artifact.content, map_url, "release")

    def _parsed(self, path: str, minified: Artifact | None, source_map: bytes,
                map_url: str, resolved_with: str, sources_base: str | None = None
                ) -> ResolvedFile:
        if len(source_map) > self.owner.limits.max_map_bytes:
            raise UnresolvedFrame({
                "type": JS_TOO_LARGE, "url": path, "sourcemap": map_url,
                "reason": f"the source map is {len(source_map)} bytes, more than"
                          f" CRASHRAY_SYMBOLICATION_MAX_MAP_BYTES"
                          f" ({self.owner.limits.max_map_bytes})"})
        try:
            parsed = self.owner.caches.get(
                None if minified is None else minified.content, source_map)
        except UnresolvedFrame as exc:
            raise UnresolvedFrame({**exc.error, "url": path, "sourcemap": map_url}) from exc
        return ResolvedFile(parsed, map_url, sources_base or map_url, resolved_with)

    def _by_url(self, url: str, kind: str) -> Artifact | None:
        for name in candidate_urls(url):
            try:
                found = self.artifacts.by_url(self.release, self.dist, name, kind)
            except ArtifactUnavailable as exc:  # looked everywhere; says why (a fetch)
                raise UnresolvedFrame(exc.error) from exc
            if found is not None:
                return found
        return None


def _worth_reporting(frame: Mapping[str, Any], error: Mapping[str, Any]) -> bool:
    """Library frames fail quietly (noise), and so does a frame with no artifact at all
    that came with its own source lines: Node SDKs send the context of files that were
    never minified, which need no map."""
    if frame.get("in_app") is False:
        return False
    return not (error["type"] == JS_NO_SOURCE and "sourcemap" not in error
                and frame.get("context_line") is not None)


def _no_source(path: str, debug_id: str | None, release: str | None, what: str
               ) -> dict[str, Any]:
    error: dict[str, Any] = {"type": JS_NO_SOURCE, "url": path}
    if debug_id is not None:
        error["debug_id"] = debug_id
        error["reason"] = (f"no {what} uploaded for debug ID {debug_id}, nor under the"
                           f" frame's URL in release {release!r}")
    elif release is None:
        error["reason"] = (f"no {what} found: the event has no debug ID for this file and"
                           " no release to look its URL up in")
    else:
        error["reason"] = f"no {what} uploaded for this URL in release {release!r}"
    return error


def _resolved_frame(frame: Mapping[str, Any], token: SourceMapCacheToken,
                    found: ResolvedFile) -> dict[str, Any]:
    src = token.src or ""
    abs_path = src if urlsplit(src).scheme else join_url(found.sources_base, src)
    new = {k: v for k, v in frame.items()
           if k not in ("pre_context", "context_line", "post_context")}
    new.update(abs_path=abs_path, filename=display_filename(abs_path), lineno=token.line,
               colno=token.col)
    function = token.function_name
    if function and function != "<unknown>":
        new["function"] = function
    if token.context_line is not None:
        new["context_line"] = token.context_line.rstrip("\r\n")
        new["pre_context"] = [line.rstrip("\r\n") for line in token.pre_context]
        new["post_context"] = [line.rstrip("\r\n") for line in token.post_context]
    data = frame.get("data")
    new["data"] = {**(data if isinstance(data, dict) else {}), "sourcemap": found.map_url,
                   "resolved_with": found.resolved_with}
    return _with_in_app(new, abs_path)


def _with_file_context(frame: dict[str, Any], source: PlainSource,
                       limits: SymbolicationLimits) -> dict[str, Any]:
    """``frame`` with context lines from its file's own lines (unless it came with some,
    or its line is not in the file)."""
    lineno, colno = frame.get("lineno"), frame.get("colno")
    if (frame.get("context_line") is not None or not isinstance(lineno, int)
            or not 1 <= lineno <= len(source.lines)):
        return frame
    column = colno if isinstance(colno, int) else None
    n = limits.context_lines
    return {**frame,
            "context_line": trim_line(source.lines[lineno - 1], column),
            "pre_context": [trim_line(line, column)
                            for line in source.lines[max(lineno - 1 - n, 0):lineno - 1]],
            "post_context": [trim_line(line, column)
                             for line in source.lines[lineno:lineno + n]]}


def trim_line(line: str, column: int | None = None) -> str:
    """At most ``MAX_FILE_CONTEXT_CHARS`` of ``line`` around ``column`` (1-based), with
    ``{snip}`` where it was cut, as Sentry shows long (minified) lines."""
    limit = MAX_FILE_CONTEXT_CHARS
    if len(line) <= limit:
        return line
    center = min(max((column or 1) - 1, 0), len(line))
    start = max(min(center - limit // 2, len(line) - limit), 0)
    end = start + limit
    return ("{snip} " if start > 0 else "") + line[start:end] + (
        " {snip}" if end < len(line) else "")


def _with_in_app(frame: dict[str, Any], path: str) -> dict[str, Any]:
    """Library and bundler runtime code is not the app's (spec §8.1)."""
    if frame.get("in_app") is not False and (
            _NODE_MODULES.search(path) or _BUNDLER_RUNTIME.search(path)):
        return {**frame, "in_app": False}
    return frame


#: webpack 5 names sources ``webpack://<output.uniqueName>/./src/a.js``; the namespace (the
#: package name by default) is not part of the module's path.
_WEBPACK_NAMESPACE = re.compile(r"^webpack://[A-Za-z0-9_\-@.]+/\./")


def display_filename(abs_path: str) -> str:
    """The short name a frame shows: the path of a URL; for ``webpack://`` sources the
    module path after the scheme and namespace (``webpack:///./src/a.js`` and
    ``webpack://shop/./src/a.js`` → ``./src/a.js``; ``…/~/lib/x.js`` → ``~/lib/x.js``)."""
    if abs_path.startswith("webpack:"):
        if "/~/" in abs_path:
            return "~/" + abs_path.split("/~/", 1)[1]
        if _WEBPACK_NAMESPACE.match(abs_path):
            return _WEBPACK_NAMESPACE.sub("./", abs_path, count=1)
        rest = abs_path[len("webpack:"):].lstrip("/")
        return rest.split("/", 1)[1] if rest.startswith("_N_E/") else rest
    parts = urlsplit(abs_path)
    return parts.path if parts.scheme and parts.path else abs_path


def join_url(base: str, reference: str) -> str:
    """``reference`` resolved against ``base`` the way a browser would, also for schemes
    urllib does not treat as hierarchical (``app://``) and for plain file paths."""
    if urlsplit(reference).scheme or reference.startswith("data:"):
        return reference
    parts = urlsplit(base)
    if parts.scheme:
        prefix = f"{parts.scheme}://{parts.netloc}"
        path = parts.path or "/"
    else:
        prefix, path = "", base
    if reference.startswith("//") and parts.scheme:
        return f"{parts.scheme}:{reference}"
    joined = reference if reference.startswith("/") else posixpath.join(
        posixpath.dirname(path), reference)
    normalized = posixpath.normpath(joined)
    return prefix + (normalized if normalized.startswith("/") or not prefix
                     else "/" + normalized)


def source_map_reference(minified: Artifact) -> str | None:
    """Where the minified file says its map is: its ``sourcemap``/``x-sourcemap`` header,
    else its last ``//# sourceMappingURL=`` comment."""
    for name in ("sourcemap", "x-sourcemap"):
        value = artifact_header(minified, name)
        if value:
            return value
    found = list(_SOURCE_MAPPING_URL.finditer(minified.content[-_TRAILER_BYTES:]))
    return found[-1].group(1).decode("utf-8", "replace") if found else None


def read_data_url(url: str) -> bytes | None:
    """The bytes of a ``data:`` URL (an inline source map), None if it is malformed."""
    header, sep, payload = url.partition(",")
    if not sep:
        return None
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except ValueError:
            return None
    return unquote_to_bytes(payload)


def _frame_path(frame: Mapping[str, Any]) -> str | None:
    """The file a frame ran in: ``abs_path`` (browser SDK) or ``filename`` (Node SDK)."""
    path = frame.get("abs_path") or frame.get("filename")
    if not isinstance(path, str) or not path or _NOT_A_FILE.match(path) or "/" not in path:
        return None
    return path


def _sourcemap_images(event: Mapping[str, Any]) -> dict[str, str]:
    """``code_file`` → debug ID of the event's ``sourcemap`` debug images."""
    debug_meta = event.get("debug_meta")
    images = debug_meta.get("images") if isinstance(debug_meta, dict) else None
    found: dict[str, str] = {}
    for image in images if isinstance(images, list) else ():
        if (isinstance(image, dict) and image.get("type") == "sourcemap"
                and isinstance(image.get("code_file"), str)
                and isinstance(image.get("debug_id"), str)):
            found[image["code_file"]] = normalize_debug_id(image["debug_id"])
    return found


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


#: ``(organization_id, project_id) -> ArtifactSource``: one project's artifacts
#: (``storage.artifacts.ProjectArtifacts`` in a running instance).
ArtifactSourceFactory = Callable[[int, int], ArtifactSource]


class PlatformHandler(Protocol):
    """Symbolicates the events of one platform with one project's artifacts; returns the
    event unchanged when there is nothing to do."""

    def __call__(self, event: dict[str, Any], artifacts: ArtifactSource) -> dict[str, Any]:
        ...


def default_handlers(caches: SourceMapCaches,
                     limits: SymbolicationLimits = SymbolicationLimits()
                     ) -> dict[str, PlatformHandler]:
    """The platform handler registry: platform → handler. JavaScript today; native (debug
    files, minidumps) and ProGuard handlers register their platforms here later."""
    js = JavaScriptSymbolicator(caches, limits)
    return {platform: js.symbolicate for platform in JS_PLATFORMS}


class ProjectSymbolication:
    """The ``events.process.Symbolicator`` a consumer hands its ``EventProcessor``: picks
    the handler of the event's platform and the artifacts of the event's project."""

    def __init__(self, artifacts_for: ArtifactSourceFactory,
                 handlers: Mapping[str, PlatformHandler]) -> None:
        self._artifacts_for = artifacts_for
        self.handlers = dict(handlers)
        self._sources: dict[tuple[int, int], ArtifactSource] = {}

    def __call__(self, event: dict[str, Any], project_id: int, organization_id: int | None
                 ) -> dict[str, Any]:
        handler = self.handlers.get(str(event.get("platform")))
        if handler is None or organization_id is None:
            return event
        key = (organization_id, project_id)
        source = self._sources.get(key)
        if source is None:
            source = self._sources[key] = self._artifacts_for(organization_id, project_id)
        return handler(event, source)
