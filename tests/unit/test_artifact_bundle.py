"""Artifact bundles and chunks as sentry-cli uploads them (events/artifact_bundle.py): the
real bundle sentry-cli 3.8.2 built, bare zips, and every way a bundle or chunk is refused."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from events.artifact_bundle import (
    SYSB_MAGIC,
    BundleError,
    check_chunk,
    gunzip_bounded,
    normalize_debug_id,
    read_bundle,
    url_candidates,
)

#: What ``sentry-cli sourcemaps upload --release shop@1.0 --dist web`` (3.8.2) sent for
#: esbuild's output of tests/e2e/sourcemaps/src after ``sentry-cli sourcemaps inject``.
REAL_BUNDLE = Path(__file__).parents[1] / "fixtures" / "artifacts" \
    / "sentry-cli-3.8.2-esbuild.bundle"
DEBUG_ID = "02a57355-c72d-5a48-acad-2451625ecdab"


def zipped(manifest: Any, files: dict[str, bytes], sysb: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if manifest is not None:
            archive.writestr("manifest.json", manifest if isinstance(manifest, bytes)
                             else json.dumps(manifest))
        for name, content in files.items():
            archive.writestr(name, content)
    return (SYSB_MAGIC + b"\x02\x00\x00\x00" if sysb else b"") + out.getvalue()


def one_file_manifest(**entry: Any) -> dict[str, Any]:
    return {"files": {"files/_/_/a.js": {"url": "~/a.js", "type": "minified_source",
                                         "headers": {}, **entry}}}


def test_the_bundle_sentry_cli_built_gives_its_files_urls_kinds_and_debug_ids() -> None:
    bundle = read_bundle(REAL_BUNDLE.read_bytes(), 10**6)
    by_url = {f.url: f for f in bundle.files}
    assert sorted(by_url) == ["~/app.min.js", "~/app.min.js.map"]
    script, source_map = by_url["~/app.min.js"], by_url["~/app.min.js.map"]
    assert (script.kind, source_map.kind) == ("minified_source", "source_map")
    assert script.debug_id == source_map.debug_id == DEBUG_ID
    assert script.headers["sourcemap"] == "app.min.js.map"
    assert f"//# debugId={DEBUG_ID}".encode() in script.content
    assert json.loads(source_map.content)["debugId"] == DEBUG_ID
    assert (bundle.attributes["release"], bundle.attributes["dist"]) == ("shop@1.0", "web")


def test_a_bare_zip_without_the_sysb_header_is_read_too() -> None:
    bundle = read_bundle(zipped(one_file_manifest(), {"files/_/_/a.js": b"x()"}, sysb=False),
                         1000)
    assert [(f.url, f.content) for f in bundle.files] == [("~/a.js", b"x()")]


@pytest.mark.parametrize("header", ["debug-id", "Debug-Id", "debug_id"])
def test_debug_ids_are_found_under_any_header_spelling_and_normalized(header: str) -> None:
    manifest = one_file_manifest(headers={header: DEBUG_ID.replace("-", "").upper()})
    bundle = read_bundle(zipped(manifest, {"files/_/_/a.js": b"x()"}), 1000)
    assert bundle.files[0].debug_id == DEBUG_ID


@pytest.mark.parametrize(("data", "message"), [
    (b"PK not really", "not a zip archive"),
    (zipped(None, {"a.js": b""}), "no manifest.json"),
    (zipped(b"{nope", {}), "manifest.json is not valid JSON"),
    (zipped([], {}), "must be a JSON object"),
    (zipped(one_file_manifest(), {}), "the zip has no file 'files/_/_/a.js'"),
    (zipped(one_file_manifest(type="movie"), {"files/_/_/a.js": b""}), "\"type\" is 'movie'"),
    (zipped(one_file_manifest(url=""), {"files/_/_/a.js": b""}), "\"url\" must be"),
    (zipped(one_file_manifest(headers={"x": 1}), {"files/_/_/a.js": b""}), "\"headers\""),
    (zipped(one_file_manifest(), {"files/_/_/a.js": b"x" * 2000}),
     "2000 bytes unpacked; at most 1000"),
])
def test_a_bundle_that_cannot_be_read_is_refused_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(BundleError) as raised:
        read_bundle(data, 1000)
    assert message in raised.value.detail


def test_a_chunk_is_taken_under_its_own_sha1_only() -> None:
    data = b"chunk of a bundle"
    sha1 = hashlib.sha1(data).hexdigest()
    assert check_chunk(sha1.upper(), data) == sha1
    with pytest.raises(BundleError, match=f"has sha1 {sha1}"):
        check_chunk("0" * 40, data)
    with pytest.raises(BundleError, match="40 hex digits"):
        check_chunk("app.min.js", data)


def test_a_gzipped_chunk_is_unpacked_within_the_chunk_size_only() -> None:
    assert gunzip_bounded(gzip.compress(b"a" * 100), 100, "chunk") == b"a" * 100
    with pytest.raises(BundleError, match="more than 100 bytes once gunzipped"):
        gunzip_bounded(gzip.compress(b"a" * 101), 100, "chunk")
    with pytest.raises(BundleError, match="not valid gzip"):
        gunzip_bounded(b"plain", 100, "chunk")


def test_debug_ids_normalize_to_lower_case_uuids_with_dashes() -> None:
    assert normalize_debug_id(DEBUG_ID.upper()) == DEBUG_ID
    assert normalize_debug_id(DEBUG_ID.replace("-", "")) == DEBUG_ID
    assert normalize_debug_id("not-a-uuid") is None


@pytest.mark.parametrize(("url", "expected"), [
    ("https://cdn.example.com/static/app.js",
     ["https://cdn.example.com/static/app.js", "~/static/app.js"]),
    ("https://cdn.example.com/app.js?v=3",
     ["https://cdn.example.com/app.js?v=3", "~/app.js?v=3", "~/app.js"]),
    ("app:///main.js", ["app:///main.js", "~/main.js"]),
    ("~/app.js", ["~/app.js"]),
])
def test_a_frame_url_matches_its_tilde_path_as_sentry_names_files(
        url: str, expected: list[str]) -> None:
    assert url_candidates(url) == expected


@pytest.mark.parametrize(("name", "content", "kind"), [
    ("~/app.min.js.map", b"anything", "source_map"),
    ("~/app.js", b' {"version":3,"mappings":"AAAA"}', "source_map"),
    ("~/app.min.js", b"function a(){}//# sourceMappingURL=app.min.js.map", "minified_source"),
])
def test_a_release_file_is_a_source_map_by_name_or_content(name: str, content: bytes,
                                                           kind: str) -> None:
    from storage.artifacts import release_file_kind

    assert release_file_kind(name, content) == kind
