"""Where SDK credentials are and what they say (events/auth.py; spec §1)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from events.auth import (
    Dsn,
    SentryAuth,
    auth_from_dsn,
    auth_from_request,
    find_request_auth,
    parse_dsn,
)
from events.errors import BadRequest, CrashrayError, Unauthorized

KEY = "0123456789abcdef0123456789abcdef"


def _header(value: str) -> dict[str, str]:
    return {"x-sentry-auth": value}


def _error(headers: dict[str, str], query: str = "") -> CrashrayError:
    with pytest.raises(CrashrayError) as caught:
        auth_from_request(headers, query)
    return caught.value


def _request_parts(corpus_dir: Path, corpus_name: str) -> tuple[dict[str, str], str]:
    """A captured request as the HTTP layer sees it: lower-case header names + raw query."""
    request = json.loads((corpus_dir / f"{corpus_name}.request.json").read_text())
    headers = {name.lower(): value for name, value in request["headers"].items()}
    _, _, query = request["path"].partition("?")
    return headers, query


# --- the SDK corpus -----------------------------------------------------------------------


def test_every_sdk_capture_authenticates_as_publickey(corpus_name: str, corpus_dir: Path) -> None:
    headers, query = _request_parts(corpus_dir, corpus_name)
    auth = auth_from_request(headers, query)
    assert auth.public_key == "publickey"
    assert auth.version == 7
    assert auth.client is not None


def test_node_sdk_query_string_auth_accepted(corpus_dir: Path) -> None:
    headers, query = _request_parts(corpus_dir, "node-sdk-11.12.0-exception")
    assert auth_from_request(headers, query) == SentryAuth(
        public_key="publickey",
        version=7,
        client="sentry.javascript.node/11.12.0",
        source="query",
    )


def test_python_sdk_x_sentry_auth_header_accepted(corpus_dir: Path) -> None:
    headers, query = _request_parts(corpus_dir, "python-sdk-2.75.0-exception")
    assert auth_from_request(headers, query) == SentryAuth(
        public_key="publickey",
        version=7,
        client="sentry.python/2.75.0",
        source="x-sentry-auth",
    )


def test_python_sdk_request_with_a_query_key_too_is_multiple_payloads(corpus_dir: Path) -> None:
    headers, _ = _request_parts(corpus_dir, "python-sdk-2.75.0-exception")
    error = _error(headers, "sentry_key=publickey")
    assert error.status == 401
    assert error.detail == "multiple authorization payloads detected"


# --- the four request sources (spec §1.2) --------------------------------------------------


def test_sentry_prefix_is_case_insensitive_and_pairs_are_trimmed() -> None:
    auth = auth_from_request(_header(f"SENTRY  sentry_key = {KEY} ,sentry_version=7"), "")
    assert auth.public_key == KEY
    assert auth.source == "x-sentry-auth"


def test_authorization_header_with_sentry_scheme_accepted() -> None:
    auth = auth_from_request({"authorization": f"Sentry sentry_key={KEY}"}, "")
    assert (auth.public_key, auth.source) == (KEY, "authorization")


def test_basic_authorization_uses_the_part_before_the_colon() -> None:
    token = base64.b64encode(f"{KEY}:secret".encode()).decode()
    auth = auth_from_request({"authorization": f"Basic {token}"}, "")
    assert (auth.public_key, auth.version, auth.source) == (KEY, 7, "basic")


def test_undecodable_basic_authorization_counts_as_no_credentials() -> None:
    error = _error({"authorization": "Basic !!!not-base64"})
    assert (error.status, error.detail) == (401, "missing authorization information")


def test_query_string_is_form_decoded() -> None:
    query = f"sentry_key={KEY}&sentry_client=my+sdk%2F1.0&sentry_version=7"
    auth = auth_from_request({}, query)
    assert (auth.client, auth.source) == ("my sdk/1.0", "query")


def test_secret_and_timestamp_are_accepted_and_ignored() -> None:
    value = f"Sentry sentry_key={KEY}, sentry_secret=s, sentry_timestamp=1700000000"
    assert auth_from_request(_header(value), "").public_key == KEY


# --- failures (spec §1.3) --------------------------------------------------------------------


def test_no_credentials_is_401_missing_authorization_information() -> None:
    error = _error({"user-agent": "curl/8"}, "foo=bar")
    assert (error.status, error.detail) == (401, "missing authorization information")
    assert find_request_auth({}, "") is None


def test_header_without_sentry_prefix_is_ignored() -> None:
    assert _error(_header(f"Bearer sentry_key={KEY}")).detail == (
        "missing authorization information"
    )
    assert find_request_auth({"authorization": "Bearer abc"}, "") is None


def test_header_and_query_string_together_are_401_multiple_payloads() -> None:
    error = _error(_header(f"Sentry sentry_key={KEY}"), f"sentry_key={KEY}")
    assert (error.status, error.detail) == (401, "multiple authorization payloads detected")


def test_x_sentry_auth_and_authorization_together_are_401_multiple_payloads() -> None:
    headers = {**_header(f"Sentry sentry_key={KEY}"), "authorization": f"Sentry sentry_key={KEY}"}
    assert _error(headers).detail == "multiple authorization payloads detected"


@pytest.mark.parametrize(
    "value", ["Sentry sentry_version=7", "Sentry sentry_key=, sentry_version=7", "Sentry "]
)
def test_missing_or_empty_key_is_401_bad_header(value: str) -> None:
    error = _error(_header(value))
    assert (error.status, error.detail) == (401, "bad x-sentry-auth header")
    assert error.causes[0].startswith("missing public key in auth header")


def test_query_mentioning_sentry_without_a_key_is_401_bad_header() -> None:
    error = _error({}, "sentry_version=7")
    assert error.detail == "bad x-sentry-auth header"
    assert "from query" in error.causes[0]


@pytest.mark.parametrize("version", ["abc", "", "-1", "99999999"])
def test_unparsable_version_is_401_bad_header(version: str) -> None:
    error = _error(_header(f"Sentry sentry_key={KEY}, sentry_version={version}"))
    assert (error.status, error.detail) == (401, "bad x-sentry-auth header")
    assert error.causes[0].startswith("invalid value for version")


def test_only_the_major_version_counts_and_absent_version_means_7() -> None:
    assert (
        auth_from_request(_header(f"Sentry sentry_key={KEY}, sentry_version=6.2"), "").version == 6
    )
    assert auth_from_request(_header(f"Sentry sentry_key={KEY}"), "").version == 7


def test_version_newer_than_7_is_400_unsupported() -> None:
    error = _error(_header(f"Sentry sentry_key={KEY}, sentry_version=8"))
    assert (error.status, error.detail) == (400, "unsupported protocol version (8)")


@pytest.mark.parametrize("key", ["a b", "k\u00e9y", "x" * 65, "key'quote"])
def test_malformed_public_key_is_400_bad_dsn_public_key(key: str) -> None:
    error = _error(_header(f"Sentry sentry_key={key}"))
    assert (error.status, error.detail) == (400, "bad sentry DSN public key")


def test_relay_key_flags_are_stripped_from_the_key() -> None:
    assert auth_from_request({}, f"sentry_key={KEY}.no-cache").public_key == KEY


def test_client_falls_back_to_user_agent() -> None:
    auth = auth_from_request({**_header(f"Sentry sentry_key={KEY}"), "user-agent": "ua/1"}, "")
    assert auth.client == "ua/1"
    assert auth_from_request(_header(f"Sentry sentry_key={KEY}"), "").client is None


# --- DSNs (spec §1.1, §1.2 #6) -------------------------------------------------------------


def test_spec_example_dsn_parses_into_its_parts_and_urls() -> None:
    dsn = parse_dsn(f"https://{KEY}@errors.example.org/17")
    assert dsn == Dsn("https", KEY, "errors.example.org", None, "", 17)
    assert dsn.envelope_url == "https://errors.example.org/api/17/envelope/"
    assert dsn.store_url == "https://errors.example.org/api/17/store/"


def test_dsn_keeps_path_prefix_and_port_and_drops_the_secret() -> None:
    dsn = parse_dsn("http://publickey:secret@127.0.0.1:9000/sentry/42/")
    assert (dsn.public_key, dsn.port, dsn.path_prefix, dsn.project_id) == (
        "publickey",
        9000,
        "/sentry",
        42,
    )
    assert dsn.envelope_url == "http://127.0.0.1:9000/sentry/api/42/envelope/"


def test_ipv6_dsn_host_is_bracketed_in_urls() -> None:
    assert (
        parse_dsn(f"http://{KEY}@[::1]:9000/1").envelope_url == "http://[::1]:9000/api/1/envelope/"
    )


@pytest.mark.parametrize(
    "dsn",
    [
        "not a url",
        f"ftp://{KEY}@host/1",
        "https://host/1",
        f"https://{KEY}@/1",
        f"https://{KEY}@host/",
        f"https://{KEY}@host/project",
        f"https://{KEY}@host:99999/1",
    ],
)
def test_unparsable_envelope_dsn_is_401_bad_envelope_authentication_header(dsn: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        auth_from_dsn(dsn)
    assert caught.value.detail == "bad envelope authentication header"
    assert caught.value.causes


def test_envelope_dsn_that_is_not_a_string_is_401() -> None:
    with pytest.raises(Unauthorized):
        auth_from_dsn(42)  # type: ignore[arg-type]


def test_envelope_dsn_with_malformed_key_is_400() -> None:
    with pytest.raises(BadRequest) as caught:
        auth_from_dsn("https://bad key@host/1")
    assert caught.value.detail == "bad sentry DSN public key"


def test_envelope_dsn_auth_speaks_the_latest_version() -> None:
    assert auth_from_dsn("https://publickey@127.0.0.1:9000/1") == SentryAuth(
        public_key="publickey", version=7, client=None, source="envelope-dsn"
    )
