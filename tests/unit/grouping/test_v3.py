"""Grouping v3 (events/grouping/v3.py): what groups together and what stays apart.

The data-driven cases (``cases/v3_*.json``) pin the hashes; these tests pin the behaviour a
user sees: builds of one class with different generated suffixes are one issue, CSP reports
from different pages about the same blocked host are one issue, messages differing only in
ids, addresses and dates are one issue.
"""

from __future__ import annotations

from typing import Any

import pytest

from events.grouping import Component, group_hashes_for_event
from events.grouping.security import normalize_blocked_uri
from tests.unit.grouping.helpers import normalize


def _java_event(*modules: str, platform: str = "java", function: str = "handle"
                ) -> dict[str, Any]:
    return normalize({"platform": platform, "exception": {"values": [{
        "type": "java.lang.IllegalStateException", "value": "boom",
        "stacktrace": {"frames": [{"module": module, "function": function, "in_app": True}
                                  for module in modules]}}]}})


def _primary(event: dict[str, Any], config: str = "v3") -> str:
    return group_hashes_for_event(event, config).primary_hash


@pytest.mark.parametrize(
    ("build_1", "build_2"),
    [
        ("shop.Checkout$$EnhancerBySpringCGLIB$$7f3a9c21", "shop.Checkout$$EnhancerBySpringCGLIB$$0b1c2d3e"),
        ("shop.Checkout$$EnhancerByCGLIB$$7f3a9c21_2", "shop.Checkout$$EnhancerByCGLIB$$aa01"),
        ("shop.Checkout$$FastClassByCGLIB$$7f3a9c21", "shop.Checkout$$FastClassByCGLIB$$51"),
        ("shop.Api$$EnhancerByGuice$$ae46b1bf", "shop.Api$$EnhancerByGuice$$1f2e3d4c"),
        ("shop.Api$EnhancerByGuice$ae46b1bf$FastClassByGuice$caceacd2",
         "shop.Api$EnhancerByGuice$01234567$FastClassByGuice$89abcdef"),
        ("shop.model.User$HibernateProxy$oRWxjAWT", "shop.model.User$HibernateProxy$Zq81LmPa"),
        ("shop.Entries_$$_javassist_74", "shop.Entries_$$_javassist_seam_9"),
        ("shop.core$fn__12345", "shop.core$fn__678"),
        ("sun.reflect.GeneratedMethodAccessor412", "sun.reflect.GeneratedMethodAccessor7"),
        ("jdk.internal.reflect.GeneratedMethodAccessor8", "jdk.internal.reflect.GeneratedMethodAccessor81"),
        ("sun.reflect.GeneratedConstructorAccessor17", "sun.reflect.GeneratedConstructorAccessor3"),
    ],
)
def test_builds_with_different_generated_suffixes_group_together(build_1: str, build_2: str
                                                                 ) -> None:
    assert _primary(_java_event(build_1, "shop.Checkout")) == _primary(
        _java_event(build_2, "shop.Checkout"))


def test_spring_cglib_builds_were_apart_before_v3() -> None:
    first = _java_event("shop.Checkout$$EnhancerBySpringCGLIB$$7f3a9c21")
    second = _java_event("shop.Checkout$$EnhancerBySpringCGLIB$$0b1c2d3e")
    assert _primary(first, "v2") != _primary(second, "v2")
    assert _primary(first) == _primary(second)


def test_a_different_proxied_class_is_a_different_issue() -> None:
    assert _primary(_java_event("shop.Checkout$$EnhancerBySpringCGLIB$$7f3a9c21")) != _primary(
        _java_event("shop.Payment$$EnhancerBySpringCGLIB$$7f3a9c21"))


def _first_frame_parts(event: dict[str, Any]) -> dict[str, Component]:
    """module / filename / function components of the first frame, in the system variant."""
    tree = group_hashes_for_event(event).variants["system"].component
    exception = next(tree.children())
    stacktrace = next(exception.children())
    frame = next(stacktrace.children())
    return {part.id: part for part in frame.children()}


def test_generated_names_are_only_normalized_on_java_frames() -> None:
    """Sentry applies the Java markers (and the lambda rules) to java frames only."""
    assert _primary(_java_event("Job$fn__12345", platform="python")) != _primary(
        _java_event("Job$fn__678", platform="python"))
    lambda_frame = ("Job$$Lambda$12/0x0000000800c2b840", "lambda$run$0")
    python = _first_frame_parts(_java_event(lambda_frame[0], platform="python",
                                            function=lambda_frame[1]))
    assert python["module"].contributes and python["function"].contributes
    java = _first_frame_parts(_java_event(lambda_frame[0], function=lambda_frame[1]))
    assert not java["module"].contributes and not java["function"].contributes


def test_a_java_frame_in_another_platforms_event_is_normalized() -> None:
    def event(module: str) -> dict[str, Any]:
        return normalize({"platform": "python", "exception": {"values": [{"type": "E",
            "stacktrace": {"frames": [{"platform": "java", "module": module,
                                       "function": "run", "in_app": True}]}}]}})

    assert _primary(event("a.B$$EnhancerByCGLIB$$1f")) == _primary(event("a.B$$EnhancerByCGLIB$$2e"))


# --- messages ------------------------------------------------------------------------------


def _message_event(text: str) -> dict[str, Any]:
    return normalize({"platform": "python", "logentry": {"formatted": text}})


def test_messages_differing_only_in_an_id_an_ip_and_a_date_group_together() -> None:
    first = _message_event("Payment 81723 from 10.1.2.3 declined at 2024-05-07 08:30:00")
    second = _message_event("Payment 99 from 192.168.7.200 declined at 2025-01-31 23:59:59")
    other = _message_event("Refund 81723 from 10.1.2.3 declined at 2024-05-07 08:30:00")
    assert _primary(first) == _primary(second) != _primary(other)


def test_exception_values_without_stack_trace_use_the_v3_table() -> None:
    def event(order: str) -> dict[str, Any]:
        return normalize({"platform": "python", "exception": {"values": [
            {"type": "LookupError", "value": f"order {order} missing"}]}})

    # 8+ digits are <hex> in Sentry's current table; v1's table made them <int>, so both
    # versions group these two, but only v3 agrees with Sentry on the stored value.
    values = group_hashes_for_event(event("123456789"), "v3").variants["app"].component
    assert list(values.iter_values()) == ["LookupError", "order <hex> missing"]
    assert _primary(event("123456789")) == _primary(event("987654321"))


# --- security reports ------------------------------------------------------------------------


def _csp_event(directive: str, blocked: str, page: str = "https://shop.example.com/cart",
               violated: str | None = None) -> dict[str, Any]:
    return normalize({"type": "csp", "logentry": {"formatted": f"Blocked {blocked} on {page}"},
                      "csp": {"effective_directive": directive, "blocked_uri": blocked,
                              "document_uri": page,
                              "violated_directive": violated or f"{directive} 'self'"}})


def test_csp_reports_from_two_pages_blocking_one_host_under_one_directive_group_together() -> None:
    first = _csp_event("script-src", "https://cdn.tracker.example/a.js?v=1")
    second = _csp_event("script-src", "http://cdn.tracker.example/other/b.js",
                        page="https://shop.example.com/account")
    assert _primary(first) == _primary(second)
    assert group_hashes_for_event(first).variants["default"].hash == _primary(first)


def test_csp_reports_with_another_directive_or_host_or_port_are_other_issues() -> None:
    base = _primary(_csp_event("script-src", "https://cdn.tracker.example/a.js"))
    assert base != _primary(_csp_event("connect-src", "https://cdn.tracker.example/a.js"))
    assert base != _primary(_csp_event("script-src", "https://ads.tracker.example/a.js"))
    assert base != _primary(_csp_event("script-src", "https://cdn.tracker.example:8443/a.js"))


def test_csp_inline_and_eval_violations_group_by_the_keyword() -> None:
    inline = _csp_event("script-src", "self", violated="script-src 'self' 'unsafe-inline'")
    inline_again = _csp_event("script-src", "", violated="script-src 'unsafe-inline' 'self'",
                              page="https://shop.example.com/other")
    evaluated = _csp_event("script-src", "'self'", violated="script-src 'self' 'unsafe-eval'")
    assert _primary(inline) == _primary(inline_again) != _primary(evaluated)
    values = list(group_hashes_for_event(inline).variants["default"].component.iter_values())
    assert values == ["script-src", "'unsafe-inline'"]


def test_a_security_report_outranks_the_message_and_an_exception_outranks_it() -> None:
    report = _csp_event("img-src", "data:image/png;base64,iVBORw0KGgo=")
    default = group_hashes_for_event(report).variants["default"].component
    assert list(default.iter_values()) == ["img-src", "data:"]
    with_exception = normalize({**report, "exception": {"values": [
        {"type": "TypeError", "value": "x"}]}})
    assert list(group_hashes_for_event(with_exception).variants["app"].component.iter_values()
                ) == ["TypeError", "x"]
    assert group_hashes_for_event(with_exception).variants["default"].hash is None


def _hostname_report(key: str, hostname: str, port: int) -> dict[str, Any]:
    event = normalize({"logentry": {"formatted": f"report for {hostname}"}})
    # sentry-relay's store normalization drops these interfaces; the security endpoint sets
    # them after it (see test_cases.py).
    return {**event, "type": key, key: {"hostname": hostname, "port": port}}


@pytest.mark.parametrize("key", ["hpkp", "expectct", "expectstaple"])
def test_hostname_reports_group_by_hostname_and_kind(key: str) -> None:
    first = _primary(_hostname_report(key, "www.example.com", 443))
    assert first == _primary(_hostname_report(key, "www.example.com", 8443))
    assert first != _primary(_hostname_report(key, "api.example.com", 443))
    others = {"hpkp", "expectct", "expectstaple"} - {key}
    assert all(first != _primary(_hostname_report(o, "www.example.com", 443)) for o in others)


@pytest.mark.parametrize(
    ("blocked", "normalized"),
    [
        ("", "'self'"), ("self", "'self'"), ("'self'", "'self'"),
        ("data", "data:"), ("blob", "blob:"), ("inline", "inline:"), ("https", "https://"),
        ("data:image/png;base64,AAAA", "data:"), ("blob:https://shop.example.com/1f2e", "blob:"),
        ("https://cdn.example.com/x.js?a=1", "cdn.example.com"),
        ("HTTP://cdn.example.com:8080/x.js", "cdn.example.com:8080"),
        ("wss://feed.example.com/live", "wss://feed.example.com"),
        ("chrome-extension://abcdefgh/inject.js", "chrome-extension://abcdefgh"),
        ("about:blank", "about:"),
        ("https://[not-a-url/path?q", "[not-a-url"),
    ],
)
def test_blocked_uri_normalization(blocked: str, normalized: str) -> None:
    assert normalize_blocked_uri(blocked) == normalized
