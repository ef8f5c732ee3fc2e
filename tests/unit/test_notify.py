"""What alert notifications say (events/notify.py): Sentry's legacy webhook body, the
signature a receiver verifies, Slack messages, e-mails with escaped HTML, and the retry
decision."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from events.notify import (
    NOTIFY_EVENT_SERVICE_ACTION,
    SENTRY_EMAIL_ACTION,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Destination,
    InvalidNotification,
    InvalidNotifySettings,
    NotifiedIssue,
    NotifiedProject,
    SendOutcome,
    action_destinations,
    delivery_payload,
    email_message,
    http_outcome,
    next_step,
    parse_webhook_urls,
    signature_headers,
    signature_valid,
    slack_message,
    webhook_body,
)

PROJECT = NotifiedProject(id=7, slug="backend", name="Backend API", organization_slug="acme")
EVENT: dict[str, Any] = {
    "event_id": "0476467adf8f499ea795a48fcc4bf290", "level": "error", "logger": "root",
    "platform": "python", "environment": "production", "release": "api@1.2.3",
    "tags": [["environment", "production"], ["server_name", "web-1"]],
    "logentry": {"formatted": "Payment <b>failed</b> & retried"},
    "exception": {"values": [{"type": "ValueError", "value": "bad <input>"}]},
}
ISSUE = NotifiedIssue(id=541485531, title="ValueError: bad <input>", culprit="app.pay in charge",
                      level="error")


def _payload(**overrides: Any) -> dict[str, Any]:
    return delivery_payload(event={**EVENT, **overrides}, issue=ISSUE, project=PROJECT,
                            rule_names=["New issues"], base_url="https://crash.example/")


def test_webhook_body_has_sentry_legacy_plugin_fields() -> None:
    body = webhook_body(_payload())
    assert body["id"] == "541485531"
    assert (body["project"], body["project_slug"], body["project_name"]) == (
        "backend", "backend", "Backend API")
    assert (body["logger"], body["level"], body["culprit"]) == ("root", "error",
                                                                 "app.pay in charge")
    assert body["message"] == "Payment <b>failed</b> & retried"
    assert body["url"] == "https://crash.example/organizations/acme/issues/541485531/"
    assert body["triggering_rules"] == ["New issues"]
    assert body["event"]["id"] == body["event"]["event_id"] == EVENT["event_id"]
    assert body["event"]["exception"] == EVENT["exception"]


def test_webhook_event_tags_are_key_value_pairs_from_either_form() -> None:
    body = webhook_body(_payload(tags={"browser": "Firefox", "os": "Linux"}))
    assert body["event"]["tags"] == [["browser", "Firefox"], ["os", "Linux"]]


def test_webhook_message_falls_back_to_issue_title() -> None:
    event = {k: v for k, v in EVENT.items() if k != "logentry"}
    payload = delivery_payload(event=event, issue=ISSUE, project=PROJECT, rule_names=[],
                               base_url="http://x")
    assert webhook_body(payload)["message"] == "ValueError: bad <input>"


def test_signature_verifies_with_the_secret_and_not_otherwise() -> None:
    body = orjson.dumps(webhook_body(_payload()))
    headers = signature_headers(body, "s3cret", timestamp_s=1_700_000_000)
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == expected
    assert signature_valid(body, "s3cret", headers[SIGNATURE_HEADER])
    assert not signature_valid(body, "other", headers[SIGNATURE_HEADER])
    assert not signature_valid(body + b" ", "s3cret", headers[SIGNATURE_HEADER])


def test_no_secret_no_signature_header() -> None:
    assert SIGNATURE_HEADER not in signature_headers(b"{}", None, timestamp_s=1)


def test_slack_message_links_title_and_escapes_control_characters() -> None:
    message = slack_message(_payload(), channel="#alerts")
    assert message["channel"] == "#alerts"
    assert message["text"] == "[backend] ValueError: bad &lt;input&gt;"
    attachment = message["attachments"][0]
    assert attachment["title_link"] == (
        "https://crash.example/organizations/acme/issues/541485531/")
    assert attachment["text"] == "app.pay in charge"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields == {"Level": "error", "Environment": "production", "Release": "api@1.2.3"}


def test_email_html_escapes_event_values_and_links_the_issue() -> None:
    content = email_message(_payload())
    assert content.subject == "[Crashray] backend: ValueError: bad <input>"
    assert "<input>" not in content.html and "&lt;input&gt;" in content.html
    assert "<b>failed</b>" not in content.html
    assert "Payment &lt;b&gt;failed&lt;/b&gt; &amp; retried" in content.html
    assert ('<a href="https://crash.example/organizations/acme/issues/541485531/">'
            in content.html)
    assert "View the issue: https://crash.example/organizations/acme/issues/541485531/" \
        in content.text
    assert "Environment: production" in content.text


def test_email_subject_is_one_line_whatever_the_title() -> None:
    issue = NotifiedIssue(id=1, title="Boom\r\nBcc: victim@example.com", culprit=None,
                          level="fatal")
    payload = delivery_payload(event=EVENT, issue=issue, project=PROJECT, rule_names=[],
                               base_url="http://x")
    assert "\n" not in email_message(payload).subject
    assert "\r" not in email_message(payload).subject


def test_webhook_urls_one_per_line_blank_lines_and_duplicates_dropped() -> None:
    text = "https://a.example/hook\n\n  http://b.example:8080/x?y=1  \nhttps://a.example/hook\n"
    assert parse_webhook_urls(text) == ["https://a.example/hook", "http://b.example:8080/x?y=1"]


@pytest.mark.parametrize("text, named", [("https://ok.example\nftp://bad.example", "line 2"),
                                         ("not a url", "line 1"), (["x"], "string")])
def test_bad_webhook_urls_name_the_line(text: Any, named: str) -> None:
    with pytest.raises(InvalidNotification, match=named) as caught:
        parse_webhook_urls(text)
    assert caught.value.status == 400


def test_destinations_per_action() -> None:
    urls = ["https://a.example/1", "https://b.example/2"]
    service = {"id": NOTIFY_EVENT_SERVICE_ACTION, "service": "webhooks"}
    assert action_destinations(service, urls, {}) == [Destination("webhook", u) for u in urls]
    member = {"id": SENTRY_EMAIL_ACTION, "targetType": "Member", "targetIdentifier": "3"}
    assert action_destinations(member, [], {3: "dev@example.com"}) == [
        Destination("email", "dev@example.com")]
    with pytest.raises(InvalidNotification, match="user 4 is not a member"):
        action_destinations({**member, "targetIdentifier": 4}, [], {3: "dev@example.com"})
    with pytest.raises(InvalidNotification, match="service 'slack'"):
        action_destinations({**service, "service": "slack"}, urls, {})


def test_http_outcomes_and_backoff() -> None:
    assert http_outcome(204, "").delivered
    assert http_outcome(503, "down").retryable and http_outcome(429, "").retryable
    assert not http_outcome(404, "no such hook").retryable
    assert http_outcome(500, "boom\n trace").error == "HTTP 500: boom trace"
    fail = SendOutcome(False, 500, "HTTP 500")
    delays = [next_step(fail, n, 10, 2.0, 10.0).retry_in_s for n in range(1, 6)]
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert next_step(fail, 10, 10, 2.0, 10.0).status == "failed"
    assert next_step(SendOutcome(False, 404, "x", retryable=False), 1, 10, 2, 10).status \
        == "failed"
    assert next_step(SendOutcome(True, 200), 3, 10, 2, 10).status == "delivered"


def test_a_lease_shorter_than_the_send_timeout_is_refused_naming_both_settings() -> None:
    from actors.notifier import NotifierConfig

    with pytest.raises(InvalidNotifySettings, match=r"CRASHRAY_NOTIFY_LEASE_S.*"
                                                    r"CRASHRAY_NOTIFY_TIMEOUT_S"):
        NotifierConfig(postgres_url="postgresql://x/y", timeout_s=10.0, lease_s=5.0)


def test_notifier_config_from_settings_carries_smtp() -> None:
    from actors.notifier import NotifierConfig
    from cluster.settings import Settings

    settings = Settings(smtp_host="mail.example", smtp_port=2525, smtp_starttls=False,
                        notify_max_attempts=4)
    cfg = NotifierConfig.from_settings(settings, "postgresql://x/y")
    assert cfg.max_attempts == 4
    assert cfg.smtp is not None and (cfg.smtp.host, cfg.smtp.port, cfg.smtp.starttls) == (
        "mail.example", 2525, False)
    assert NotifierConfig.from_settings(Settings(), "postgresql://x/y").smtp is None
