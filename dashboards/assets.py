"""The dashboard's files as the ingest replicas serve them (serve_apps/web.py); pure: no
HTTP, no Ray.

The dashboard is plain HTML, CSS and ES modules without a build step, so cache busting
cannot rely on hashed file names. Instead every asset is also served beneath a version
segment, ``/static/v-<hash>/<name>``, the hash of all the files together: ``index.html``
(never cached) names that prefix, the modules' relative imports (``./api.js``) resolve
beneath it, and so the whole set may be cached for a year (``immutable``) while a changed
file gets new URLs. ``/static/<name>`` without the segment is answered too, with
revalidation (``no-cache`` and an ``ETag``).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parent
STATIC_DIR = DASHBOARD_DIR / "static"
INDEX_FILE = DASHBOARD_DIR / "index.html"

#: ``.js`` is ``text/javascript``: the HTML standard's one type for scripts and modules
#: (RFC 9239); a browser refuses a module whose type is not a JavaScript one.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".json": "application/json",
}
#: A year, the longest lifetime RFC 9111 advises; versioned URLs never change content.
IMMUTABLE_MAX_AGE_S = 365 * 86_400
CACHE_IMMUTABLE = f"public, max-age={IMMUTABLE_MAX_AGE_S}, immutable"
#: Stored, but asked again each time (answered 304 while the ETag matches).
CACHE_REVALIDATE = "no-cache"

#: The page takes nothing from elsewhere and runs no inline script or style, so a strict
#: policy costs nothing and turns a missed escape into a blocked one.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

#: One path segment of a plain file name: no directories, no dot files, no ``..``.
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    media_type: str
    etag: str


@dataclass(frozen=True)
class Assets:
    files: Mapping[str, Asset]
    #: Hash of every file's name and content: the ``v-…`` URL segment.
    version: str

    @property
    def prefix(self) -> str:
        return f"/static/v-{self.version}"


@dataclass(frozen=True)
class Resolved:
    asset: Asset
    cache_control: str


def load_assets(static_dir: Path = STATIC_DIR) -> Assets:
    """Every servable file of ``static_dir`` (flat; other extensions are not served)."""
    files: dict[str, Asset] = {}
    whole = hashlib.sha256()
    for path in sorted(static_dir.iterdir()):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file() or not _ASSET_NAME.match(path.name):
            continue
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        files[path.name] = Asset(path.name, body, media_type, f'"{digest[:32]}"')
        whole.update(path.name.encode() + b"\0" + digest.encode())
    return Assets(files, whole.hexdigest()[:12])


def resolve_asset(assets: Assets, path: str) -> Resolved | None:
    """The asset a ``/static/…`` path names, and how long it may be cached; ``None`` for
    anything else. An outdated version segment (a page loaded before an upgrade) gets the
    current file, revalidated rather than cached for a year under the old URL."""
    head, _, rest = path.partition("/")
    if rest:
        if not head.startswith("v-"):
            return None
        name, immutable = rest, head == f"v-{assets.version}"
    else:
        name, immutable = head, False
    asset = assets.files.get(name) if _ASSET_NAME.match(name) else None
    if asset is None:
        return None
    return Resolved(asset, CACHE_IMMUTABLE if immutable else CACHE_REVALIDATE)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison of a list of entity tags, or ``*``."""
    if not if_none_match:
        return False
    wanted = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in wanted or etag in wanted


def render_index(template: str, assets: Assets) -> str:
    """``index.html`` with its ``{{name}}`` placeholders filled, every value escaped. The
    page is the same for everyone: nothing of any tenant is in it before a login."""
    values = {"static": assets.prefix}

    def fill(match: re.Match[str]) -> str:
        return html.escape(values[match[1]])

    return _PLACEHOLDER.sub(fill, template)
