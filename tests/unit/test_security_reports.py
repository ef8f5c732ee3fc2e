"""Browser security reports as events (events/security.py): each report kind, Reporting API
batches, the refusals, and what sentry-relay's normalization keeps of the result.

The Chromium bodies below are what Chromium 156 (headless, Debian) really POSTed to a local
collector on this machine for ``script-src 'self'`` and a script from another origin: once
through ``report-uri`` (``application/csp-report``) and once through ``report-to``
(``application/reports+json``). The HPKP/Expect-* inputs are Relay's integration fixtures
(tests/integration/fixtures/security_report/*.input.json); the CSP message/culprit cases are
facts from Relay's security_report.rs tests.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from events.consume import WorkItem, event_outcome, plan_batch
from events.errors import BadRequest
from events.process import EventProcessor, ItemContext
from events.quotas import item_quantities
from events.security import (
    InvalidSecurityReport,
    MediaType,
    ReportContext,
    is_security_media_type,
    normalize_uri,
    parse_media_type,
    report_context,
    security_events,
)

CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
             " HeadlessChrome/156.0.0.0 Safari/537.36")
CHROMIUM_REPORT_URI = (
    b'{"csp-report":{"document-uri":"http://127.0.0.1:37381/","referrer":"",'
    b'"violated-directive":"script-src-elem","effective-directive":"script-src-elem",'
    b'"original-policy":"script-src \'self\'; report-uri http://127.0.0.1:37381/report/",'
    b'"disposition":"enforce","blocked-uri":"http://localhost:37381/evil.js",'
    b'"status-code":200,"script-sample":""}}')
CHROMIUM_REPORT_TO = (
    b'[{"age":1,"body":{"blockedURL":"https://localhost:37469/evil.js","disposition":"enforce",'
    b'"documentURL":"https://127.0.0.1:37469/","effectiveDirective":"script-src-elem",'
    b'"originalPolicy":"script-src \'self\'; report-to csp","referrer":"","sample":"",'
    b'"statusCode":200},"type":"csp-violation","url":"https://127.0.0.1:37469/",'
    b'"user_agent":"' + CHROME_UA.encode() + b'"}]')
CONTEXT = ReportContext(release="web@1.2.3", environment="production", user_agent=CHROME_UA,
                        origin="http://127.0.0.1:37381/")

HPKP = {"date-time": "2014-04-06T13:00:50Z", "hostname": "www.example.com", "port": 443,
        "effective-expiration-date": "2014-05-01T12:40:50Z", "include-subdomains": False,
        "noted-hostname": "example.com",
        "served-certificate-chain": ["-----BEGIN CERTIFICATE-----\n MIIEBDCCAuygBQUAMEIx"
                                     "\n -----END CERTIFICATE-----"],
        "validated-certificate-chain": ["-----BEGIN CERTIFICATE-----\n MIIEBDCCAuygAwIBAgID"
                                        "\n -----END CERTIFICATE-----"],
        "known-pins": ['pin-sha256="d6qzRu9zOECb90Uez27xWltNsj0e1Md7GkYYkVoZWmM="',
                       'pin-sha256="E9CZ9INDbd+2eRQozYqqbQ2yXLVKB9+xcprMF+44U1g="']}
EXPECT_CT = {"expect-ct-report": {
    "date-time": "2014-04-06T13:00:50Z", "hostname": "www.example.com", "port": 443,
    "effective-expiration-date": "2014-05-01T12:40:50Z",
    "served-certificate-chain": ["-----BEGIN CERTIFICATE-----\nABC\n-----END CERTIFICATE-----"],
    "validated-certificate-chain": ["-----BEGIN CERTIFICATE-----\nCDE\n-----END CERTIFICATE-----"],
    "scts": [{"version": 1, "status": "invalid", "source": "embedded",
              "serialized_sct": "ABCD=="}]}}
EXPECT_STAPLE = {"expect-staple-report": {
    "date-time": "2014-04-06T13:00:50Z", "hostname": "www.example.com", "port": 443,
    "response-status": "ERROR_RESPONSE", "cert-status": "REVOKED",
    "effective-expiration-date": "2014-05-01T12:40:50Z",
    "served-certificate-chain": ["-----BEGIN CERTIFICATE-----\nABC\n-----END CERTIFICATE-----"],
    "validated-certificate-chain": ["-----BEGIN CERTIFICATE-----\nCDE\n-----END CERTIFICATE-----"]}}


def one_event(report: object, context: ReportContext = CONTEXT) -> dict[str, Any]:
    events = security_events(orjson.dumps(report), context)
    assert len(events) == 1
    return events[0]


def csp(**fields: object) -> dict[str, Any]:
    return one_event({"csp-report": {"document-uri": "http://example.com/foo", **fields}},
                     ReportContext())


def normalized(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the consumers store it: sentry-relay's normalization (and no scrubbing)."""
    ctx = ItemContext(project_id=7, key_id=3, received_at=dt.datetime.now(dt.UTC),
                      envelope_event_id=event["event_id"], client_ip="10.1.2.3")
    return dict(EventProcessor().process(orjson.dumps(event), ctx).event)


# --- CSP ------------------------------------------------------------------------------------


def test_chromium_report_uri_report_becomes_a_csp_event_as_relay_builds_it() -> None:
    event = one_event(orjson.loads(CHROMIUM_REPORT_URI))
    assert len(event.pop("event_id")) == 32
    assert event == {
        "type": "csp", "logger": "csp", "release": "web@1.2.3", "environment": "production",
        "logentry": {"formatted": "Blocked 'script' from 'localhost:37381'"},
        "culprit": "script-src-elem",
        "tags": [["effective-directive", "script-src-elem"],
                 ["blocked-uri", "http://localhost:37381/evil.js"],
                 ["blocked-host", "localhost"]],
        "request": {"url": "http://127.0.0.1:37381/",
                    "headers": [["Origin", "http://127.0.0.1:37381/"], ["User-Agent", CHROME_UA]]},
        "csp": {"effective_directive": "script-src-elem",
                "blocked_uri": "http://localhost:37381/evil.js",
                "document_uri": "http://127.0.0.1:37381/",
                "original_policy": "script-src 'self'; report-uri http://127.0.0.1:37381/report/",
                "referrer": "", "status_code": 200, "violated_directive": "script-src-elem",
                "script_sample": "", "disposition": "enforce"},
    }


def test_chromium_reporting_api_batch_gives_one_event_per_csp_violation() -> None:
    deprecation = {"type": "deprecation", "age": 3, "url": "https://127.0.0.1:37469/",
                   "body": {"id": "PrefixedStorageInfo", "message": "deprecated"}}
    batch = orjson.loads(CHROMIUM_REPORT_TO)
    second = {**batch[0], "body": {**batch[0]["body"], "blockedURL": "https://cdn.example/x.js",
                                   "lineNumber": "12", "sourceFile": "https://127.0.0.1/a.js"}}
    events = security_events(orjson.dumps([batch[0], deprecation, second]), CONTEXT)
    assert len(events) == 2
    assert events[0]["event_id"] != events[1]["event_id"]
    first_csp = events[0]["csp"]
    assert first_csp == {"effective_directive": "script-src-elem",
                         "blocked_uri": "https://localhost:37469/evil.js",
                         "document_uri": "https://127.0.0.1:37469/",
                         "original_policy": "script-src 'self'; report-to csp", "referrer": "",
                         "status_code": 200, "violated_directive": "", "script_sample": "",
                         "disposition": "enforce"}
    # Chromium sends no violatedDirective in a Reporting API body: no culprit, as in Relay.
    assert events[0]["culprit"] == ""
    assert events[0]["logentry"] == {"formatted": "Blocked 'script' from 'localhost:37469'"}
    assert events[1]["logentry"] == {"formatted": "Blocked 'script' from 'cdn.example'"}
    assert events[1]["csp"]["line_number"] == 12
    assert events[1]["csp"]["source_file"] == "https://127.0.0.1/a.js"


def test_a_batch_without_csp_violations_and_a_lone_other_report_give_no_event() -> None:
    other = {"type": "intervention", "body": {"id": "x"}}
    assert security_events(orjson.dumps([other, "junk", 3]), CONTEXT) == []
    assert security_events(orjson.dumps(other), CONTEXT) == []
    assert security_events(b"[]", CONTEXT) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"effective-directive": "img-src", "blocked-uri": "http://google.com/foo"},
     "Blocked 'image' from 'google.com'"),
    ({"effective-directive": "style-src", "blocked-uri": ""}, "Blocked inline 'style'"),
    ({"effective-directive": "script-src", "blocked-uri": "",
      "violated-directive": "script-src 'unsafe-inline'"},
     "Blocked unsafe (eval() or inline) 'script'"),
    ({"effective-directive": "script-src", "blocked-uri": "inline"},
     "Blocked unsafe inline 'script'"),
    ({"effective-directive": "script-src", "blocked-uri": "eval"}, "Blocked unsafe eval() 'script'"),
    ({"effective-directive": "script-src",
      "blocked-uri": "data:text/plain;base64,SGVsbG8sIFdvcmxkIQ%3D%3D"},
     "Blocked 'script' from 'data:'"),
    ({"effective-directive": "script-src", "blocked-uri": "data"}, "Blocked 'script' from 'data:'"),
    ({"effective-directive": "style-src-elem", "blocked-uri": "http://fonts.google.com/foo"},
     "Blocked 'style' from 'fonts.google.com'"),
    ({"effective-directive": "style-src", "blocked-uri": "http://notlocalhost:8000/lol.css"},
     "Blocked 'style' from 'notlocalhost:8000'"),
    ({"violated-directive": "default-src self", "blocked-uri": "http://evilhackerscripts.com"},
     "Blocked 'default-src' from 'evilhackerscripts.com'"),
    ({"effective-directive": "script-src"}, "Blocked unsafe (eval() or inline) 'script'"),
])
def test_csp_message_names_the_blocked_resource_as_relay_does(fields: dict[str, str],
                                                               message: str) -> None:
    assert csp(**fields)["logentry"] == {"formatted": message}


@pytest.mark.parametrize(("violated", "culprit"), [
    ("style-src http://cdn.example.com", "style-src http://cdn.example.com"),
    ("style-src cdn.example.com", "style-src cdn.example.com"),
    ("style-src http://example.com", "style-src 'self'"),
    ("style-src http://example2.com example.com", "style-src http://example2.com 'self'"),
    ("script-src 'none' 'unsafe-eval'", "script-src 'none' 'unsafe-eval'"),
])
def test_csp_culprit_is_the_violated_directive_with_own_origin_as_self(violated: str,
                                                                      culprit: str) -> None:
    event = csp(**{"violated-directive": violated, "effective-directive": "style-src"})
    assert event["culprit"] == culprit


def test_firefox_report_without_effective_directive_uses_the_violated_one() -> None:
    event = csp(**{"violated-directive": "img-src 'self'", "blocked-uri": "https://x.test/a.png"})
    assert event["csp"]["effective_directive"] == "img-src"
    assert event["tags"][0] == ["effective-directive", "img-src"]
    assert event["culprit"] == "img-src 'self'"


def test_missing_blocked_uri_is_self_and_stripe_queries_stay_out_of_tags() -> None:
    assert csp(**{"effective-directive": "script-src"})["csp"]["blocked_uri"] == "self"
    stripe = csp(**{"effective-directive": "script-src",
                    "blocked-uri": "https://api.stripe.com/v1/tokens?card[number]=xxx"})
    assert stripe["tags"] == [["effective-directive", "script-src"],
                              ["blocked-uri", "https://api.stripe.com/v1/tokens"],
                              ["blocked-host", "api.stripe.com"]]


def test_the_referrer_becomes_a_request_header_and_numbers_may_be_strings() -> None:
    event = csp(**{"effective-directive": "font-src", "referrer": "https://www.google.com/",
                   "status-code": "200", "line-number": 24, "column-number": "66270"})
    assert event["request"] == {"url": "http://example.com/foo",
                                "headers": [["Referer", "https://www.google.com/"]]}
    assert (event["csp"]["status_code"], event["csp"]["line_number"],
            event["csp"]["column_number"]) == (200, 24, 66270)


@pytest.mark.parametrize(("uri", "expected"), [
    ("", "'self'"), ("self", "'self'"), ("data", "data:"), ("http", "http://"),
    ("http://notlocalhost/", "notlocalhost"), ("https://notlocalhost/", "notlocalhost"),
    ("data://notlocalhost/", "data://notlocalhost"), ("http://notlocalhost/lol.css", "notlocalhost"),
    ("http://notlocalhost:8000/", "notlocalhost:8000"), ("https://Example.COM:443/x", "example.com"),
    ("xyz://notlocalhost/", "xyz://notlocalhost"), ("blob:https://a.test/uuid", "blob:"),
    ("http://[::1]:8080/x", "[::1]:8080"), ("http://:80/", "http://:80/"),
])
def test_normalize_uri_matches_relays_table(uri: str, expected: str) -> None:
    assert normalize_uri(uri) == expected


def test_a_csp_event_keeps_its_interface_through_relay_normalization() -> None:
    stored = normalized(one_event(orjson.loads(CHROMIUM_REPORT_URI)))
    assert stored["type"] == "csp" and stored["logger"] == "csp"
    assert stored["csp"]["blocked_uri"] == "http://localhost:37381/evil.js"
    assert stored["csp"]["effective_directive"] == "script-src-elem"
    assert stored["contexts"]["browser"]["name"] == "HeadlessChrome"
    assert stored["release"] == "web@1.2.3" and stored["environment"] == "production"
    assert "errors" not in stored and "_meta" not in stored


# --- HPKP, Expect-CT, Expect-Staple -----------------------------------------------------------


def test_hpkp_report_becomes_an_event_with_its_report_in_contexts() -> None:
    event = one_event(HPKP, ReportContext())
    event.pop("event_id")
    assert event == {
        "logger": "csp",
        "logentry": {"formatted": "Public key pinning validation failed for 'www.example.com'"},
        "tags": [["hostname", "www.example.com"], ["port", "443"],
                 ["include-subdomains", "false"]],
        "request": {"url": "www.example.com"},
        "contexts": {"hpkp": {
            "type": "hpkp", "date_time": "2014-04-06T13:00:50+00:00",
            "hostname": "www.example.com", "port": 443,
            "effective_expiration_date": "2014-05-01T12:40:50+00:00",
            "include_subdomains": False, "noted_hostname": "example.com",
            "served_certificate_chain": HPKP["served-certificate-chain"],
            "validated_certificate_chain": HPKP["validated-certificate-chain"],
            "known_pins": HPKP["known-pins"]}},
    }


def test_expect_ct_and_expect_staple_reports_name_the_host_as_culprit() -> None:
    ct = one_event(EXPECT_CT, ReportContext())
    assert ct["logentry"] == {"formatted": "Expect-CT failed for 'www.example.com'"}
    assert ct["culprit"] == "www.example.com"
    assert ct["tags"] == [["hostname", "www.example.com"], ["port", "443"]]
    assert ct["contexts"]["expectct"]["scts"] == [
        {"version": 1, "status": "invalid", "source": "embedded", "serialized_sct": "ABCD=="}]
    staple = one_event(EXPECT_STAPLE, ReportContext())
    assert staple["logentry"] == {"formatted": "Expect-Staple failed for 'www.example.com'"}
    assert staple["tags"] == [["hostname", "www.example.com"], ["port", "443"],
                              ["response_status", "ERROR_RESPONSE"], ["cert_status", "REVOKED"]]
    assert staple["contexts"]["expectstaple"]["cert_status"] == "REVOKED"


@pytest.mark.parametrize(("report", "kind"), [(HPKP, "hpkp"), (EXPECT_CT, "expectct"),
                                              (EXPECT_STAPLE, "expectstaple")])
def test_legacy_reports_survive_relay_normalization_without_errors(report: dict[str, Any],
                                                                  kind: str) -> None:
    """Relay no longer knows these interfaces (it would null an ``hpkp`` key as
    invalid_attribute); the report kept under contexts survives whole."""
    event = one_event(report, CONTEXT)
    stored = normalized(event)
    assert stored["contexts"][kind] == event["contexts"][kind]
    assert stored["type"] == "default" and stored["logger"] == "csp"
    assert stored["logentry"] == event["logentry"]
    assert "errors" not in stored and "_meta" not in stored


def primary_hash(event: dict[str, Any]) -> str:
    ctx = ItemContext(project_id=7, key_id=3, received_at=dt.datetime.now(dt.UTC),
                      envelope_event_id=event["event_id"])
    return str(EventProcessor().process(orjson.dumps(event), ctx).grouping.primary_hash)


def test_a_csp_report_makes_an_issue_of_type_csp_with_directive_and_uri() -> None:
    ctx = ItemContext(project_id=7, key_id=3, received_at=dt.datetime.now(dt.UTC))
    event = csp(**{"effective-directive": "script-src", "violated-directive": "script-src",
                   "blocked-uri": "https://evil.example/x.js"})
    issue = EventProcessor().process(orjson.dumps(event), ctx).issue
    assert issue.type == "csp"
    assert issue.metadata == {"directive": "script-src", "uri": "https://evil.example/x.js",
                              "message": issue.title}
    assert issue.title == "Blocked 'script' from 'evil.example'"


@pytest.mark.parametrize("report", [HPKP, EXPECT_CT, EXPECT_STAPLE])
def test_legacy_reports_group_by_their_kind_and_hostname(report: dict[str, Any]) -> None:
    """Grouping v3 (the default) reads the report where ingest keeps it: one issue per kind
    and host, whatever the port or the day."""
    key = next(iter(report))
    inner = report.get(key) if isinstance(report.get(key), dict) else report
    assert isinstance(inner, dict)

    def with_fields(**fields: object) -> dict[str, Any]:
        changed = {**inner, **fields}
        return one_event({key: changed} if inner is not report else changed, CONTEXT)

    same = primary_hash(with_fields(port=8443, **{"date-time": "2015-01-01T00:00:00Z"}))
    assert primary_hash(with_fields()) == same
    assert primary_hash(with_fields(hostname="other.example.com")) != same
    other_kinds = [r for r in (HPKP, EXPECT_CT, EXPECT_STAPLE) if r is not report]
    assert all(primary_hash(one_event(r, CONTEXT)) != same for r in other_kinds)


# --- refusals ---------------------------------------------------------------------------------


def refusal(body: bytes) -> InvalidSecurityReport:
    with pytest.raises(InvalidSecurityReport) as caught:
        security_events(body, CONTEXT)
    assert caught.value.status == 400
    return caught.value


def test_a_body_that_is_not_json_is_refused_as_invalid_json() -> None:
    error = refusal(b'{"csp-report": {')
    assert error.detail == "invalid JSON data" and error.outcome_reason == "invalid_json"
    assert error.causes[0].startswith("the body is not JSON")


def test_an_object_of_no_known_kind_is_refused_naming_its_keys() -> None:
    error = refusal(b'{"document-uri": "http://a.test/", "blocked-uri": "x"}')
    assert error.detail == "invalid security report type"
    assert error.outcome_reason == "security_report_type"
    assert "the report has blocked-uri, document-uri; a security report has a csp-report" \
        in error.causes[0]
    assert "is a JSON string" in refusal(b'"hello"').causes[0]


@pytest.mark.parametrize(("report", "field", "rule"), [
    ({"csp-report": {"effective-directive": "script-src", "line-number": -3}},
     "csp-report.line-number", "expected a non-negative integer or a string of digits, got -3"),
    ({"csp-report": {"effective-directive": "bogus-src", "violated-directive": "nope"}},
     "csp-report.effective-directive", "expected a CSP directive"),
    ({"csp-report": {"effective-directive": "script-src", "blocked-uri": 7}},
     "csp-report.blocked-uri", "expected a string, got 7"),
    ({"csp-report": "script-src"}, "csp-report", "expected a JSON object"),
    ({"type": "csp-violation", "body": None}, "body", "expected a JSON object, got nothing"),
    ({"known-pins": ["x"], "port": 443}, "hostname", "is required"),
    ({"known-pins": "pin", "hostname": "a.test"}, "known-pins", "expected a list of strings"),
    ({"known-pins": [], "hostname": "a.test", "date-time": "yesterday"}, "date-time",
     "expected an RFC 3339 date-time, got 'yesterday'"),
    ({"expect-ct-report": {"hostname": "a.test", "scts": [{"status": "bogus"}]}},
     "expect-ct-report.scts[0].status", "expected one of unknown, valid, invalid"),
    ({"expect-staple-report": {"hostname": "a.test", "port": "443"}}, "expect-staple-report.port",
     "expected an integer"),
])
def test_a_malformed_report_is_refused_naming_the_field(report: dict[str, Any], field: str,
                                                        rule: str) -> None:
    error = refusal(orjson.dumps(report))
    assert error.detail == "invalid security report"
    assert error.outcome_reason == "security_report"
    assert f"the report, field {field}: {rule}" in error.causes[0]


def test_a_bad_report_in_a_batch_is_named_by_its_position() -> None:
    good = orjson.loads(CHROMIUM_REPORT_TO)[0]
    bad = {**good, "body": {**good["body"], "lineNumber": "twelve"}}
    error = refusal(orjson.dumps([good, {"type": "deprecation"}, bad]))
    assert "report 3 of 3, field body.lineNumber: expected a non-negative integer" \
        in error.causes[0]


# --- the request around the reports ----------------------------------------------------------


@pytest.mark.parametrize(("header", "accepted"), [
    ("application/csp-report", True), ("application/reports+json", True),
    ("application/json; charset=utf-8", True), ("Application/CSP-Report", True),
    ("application/expect-ct-report+json", True), ("application/expect-ct-report", True),
    ("application/expect-staple-report", True), ("text/plain", False),
    ("application/x-www-form-urlencoded", False), ("application/reports", False),
])
def test_the_content_types_relay_takes_for_security_reports(header: str, accepted: bool) -> None:
    assert is_security_media_type(parse_media_type(header)) is accepted


def test_a_content_type_without_a_slash_is_relays_mime_parse_error() -> None:
    assert parse_media_type("application/reports+json") == MediaType("application", "reports",
                                                                      "json")
    for header in (None, "", "csp-report"):
        with pytest.raises(BadRequest) as caught:
            parse_media_type(header)
        assert caught.value.detail == ("mime parse error: a slash (/) was missing between the"
                                       " type and subtype")


def test_release_environment_origin_and_user_agent_come_from_the_request() -> None:
    context = report_context(
        "sentry_key=abc&sentry_version=7&sentry_release=web%401.0&sentry_environment=staging",
        {"origin": "https://App.example:443", "user-agent": "UA/1",
         "referer": "https://other.example/page"})
    assert context == ReportContext("web@1.0", "staging", "UA/1", "https://app.example/")
    assert report_context("", {"origin": "null", "referer": "http://b.test:8080/p?q=1"}
                          ).origin == "http://b.test:8080/p?q=1"
    assert report_context("sentry_release=", {}) == ReportContext()


# --- what a converted report costs and counts as ----------------------------------------------


def test_a_security_item_costs_one_security_unit_and_is_counted_as_security() -> None:
    assert item_quantities("security", 900) == (("security", 1),)
    event = one_event(HPKP)
    item = WorkItem(queue_id=1, attempts=0, organization_id=1, project_id=7, key_id=3,
                    item_type="security", event_id=event["event_id"],
                    received_at=dt.datetime.now(dt.UTC), payload=orjson.dumps(event), meta={})
    plan = plan_batch([item], EventProcessor())
    assert [w.queue_id for w, _ in plan.events] == [1] and not plan.invalid
    _, processed = plan.events[0]
    assert event_outcome(item, processed, discarded=False).category == "security"
    garbage = WorkItem(**{**item.__dict__, "queue_id": 2, "payload": b"[1]"})
    assert plan_batch([garbage], EventProcessor()).outcomes[0].category == "security"
