"""Sentry's issue alert rules: what a rule body may say, what the API answers, and when a rule
fires (events/alert_rules.py, pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.alert_rules import (
    AGE_COMPARISON_FILTER,
    ANOMALY,
    EMAIL_ACTION,
    EVENT_FREQUENCY,
    EVENT_UNIQUE_USER_FREQUENCY,
    EVERY_EVENT,
    FIRST_SEEN_EVENT,
    ISSUE_OCCURRENCES_FILTER,
    LATEST_RELEASE_FILTER,
    LEVEL_FILTER,
    NOTIFY_EMAIL,
    NOTIFY_EVENT_SERVICE,
    REAPPEARED_EVENT,
    REGRESSION_EVENT,
    SLACK_ACTION,
    TAGGED_EVENT_FILTER,
    WEBHOOK_ACTION,
    AlertEvent,
    AlertIssue,
    AlertRule,
    RuleError,
    Window,
    parse_rule,
    percent_increase,
    rule_configuration,
    rule_fires,
    rule_json,
    supported_ids,
    windows_needed,
)
from events.errors import BadRequest

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
WEBHOOK = {"id": NOTIFY_EVENT_SERVICE, "service": "webhooks"}
HOUR = 3600


def body(**fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": "Page me", "actionMatch": "all", "filterMatch": "all",
                            "frequency": 30, "conditions": [], "filters": [],
                            "actions": [WEBHOOK]}
    rule.update(fields)
    return rule


def rule(**fields: Any) -> AlertRule:
    return parse_rule(body(**fields), rule_id=7)


def event(level: str = "error", tags: Mapping[str, str] | None = None,
          release: str | None = "shop@1.0", environment: str | None = "production") -> AlertEvent:
    return AlertEvent(level=level, tags=dict(tags or {}), release=release,
                      environment=environment)


def issue(*, is_new: bool = False, transition: str | None = None, times_seen: int = 10,
          first_seen: dt.datetime = NOW - dt.timedelta(hours=2),
          counts: Mapping[Window, int] | None = None,
          anomalies: tuple[Mapping[str, Any], ...] = (),
          latest_release: str | None = None) -> AlertIssue:
    return AlertIssue(id=1, first_seen=first_seen, times_seen=times_seen, is_new=is_new,
                      transition=transition, counts=dict(counts or {}), anomalies=anomalies,
                      latest_release=latest_release)


def frequency(value: int | str | float, interval: str = "1h", kind: str = EVENT_FREQUENCY,
              **extra: Any) -> dict[str, Any]:
    return {"id": kind, "value": value, "interval": interval, **extra}


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": None}, "name: required"),
    ({"name": "   "}, "name: required"),
    ({"name": 5}, "name: required"),
    ({"name": "x" * 257}, "name: must be at most 256 characters; got 257"),
    ({"actionMatch": "most"}, "actionMatch: must be one of all, any, none; got 'most'"),
    ({"filterMatch": "some"}, "filterMatch: must be one of all, any, none; got 'some'"),
    ({"frequency": 4}, "frequency: must be a whole number of at least 5; got 4"),
    ({"frequency": 43201}, "frequency: must be minutes from 5 to 43200; got 43201"),
    ({"frequency": "often"}, "frequency: must be a whole number"),
    ({"frequency": True}, "frequency: must be a whole number"),
    ({"frequency": 7.5}, "frequency: must be a whole number"),
    ({"environment": 3}, "environment: must be an environment name"),
    ({"environment": "e" * 65}, "environment: must be an environment name of at most 64"),
    ({"actions": []}, "actions: at least one action is required; supported: "
                      f"{NOTIFY_EVENT_SERVICE}"),
    ({"actions": None}, "actions: at least one action is required"),
    ({"actions": WEBHOOK}, "actions: must be a list"),
    ({"conditions": "first seen"}, "conditions: must be a list"),
    ({"conditions": ["first seen"]}, "conditions[0]: must be an object"),
    ({"conditions": [{"interval": "1h"}]}, "conditions[0].id: None is not a supported condition"),
    ({"conditions": [{"id": "sentry.rules.conditions.nope.Nope"}]},
     "conditions[0].id: 'sentry.rules.conditions.nope.Nope' is not a supported condition; "
     f"supported: {FIRST_SEEN_EVENT}"),
    ({"conditions": [{"id": LEVEL_FILTER, "match": "eq", "level": "40"}]},
     "is not a supported condition (it is one of the filters)"),
    ({"filters": [{"id": FIRST_SEEN_EVENT}]},
     "filters[0].id: " f"'{FIRST_SEEN_EVENT}' is not a supported filter (it is one of the "
     "conditions); supported: " f"{LEVEL_FILTER}"),
    ({"actions": [{"id": "sentry.integrations.slack.notify_action.SlackNotifyServiceAction"}]},
     "actions[0].id: 'sentry.integrations.slack.notify_action.SlackNotifyServiceAction' is not "
     "a supported action; supported: "),
    # Frequency conditions.
    ({"conditions": [{"id": EVENT_FREQUENCY, "interval": "1h"}]},
     "conditions[0].value: required: a whole number of at least 0"),
    ({"conditions": [frequency(-1)]}, "conditions[0].value: must be a whole number of at least 0"),
    ({"conditions": [frequency(1.5)]}, "conditions[0].value: must be a whole number"),
    ({"conditions": [{"id": EVENT_FREQUENCY, "value": 10}]},
     "conditions[0].interval: required: one of 1m, 5m, 15m, 1h, 1d, 1w, 30d"),
    ({"conditions": [WEBHOOK, frequency(10, "2h")]},
     "conditions[0].id: "),
    ({"conditions": [frequency(10), frequency(10, "2h")]},
     "conditions[1].interval: must be one of 1m, 5m, 15m, 1h, 1d, 1w, 30d; got '2h'"),
    ({"conditions": [frequency(10, kind=EVENT_UNIQUE_USER_FREQUENCY, interval="7d")]},
     "conditions[0].interval: must be one of 1m, 5m, 15m, 1h, 1d, 1w, 30d; got '7d'"),
    ({"conditions": [frequency(10, comparisonType="ratio")]},
     "conditions[0].comparisonType: must be one of count, percent; got 'ratio'"),
    ({"conditions": [frequency(10, comparisonType="percent")]},
     "conditions[0].comparisonInterval: required when comparisonType is percent: one of 5m, "
     "15m, 1h, 1d, 1w, 30d"),
    ({"conditions": [frequency(10, comparisonType="percent", comparisonInterval="1m")]},
     "conditions[0].comparisonInterval: must be one of 5m, 15m, 1h, 1d, 1w, 30d; got '1m'"),
    # Anomaly condition.
    ({"conditions": [{"id": ANOMALY}]}, "conditions[0].scope: required: one of issue, project"),
    ({"conditions": [{"id": ANOMALY, "scope": "org"}]},
     "conditions[0].scope: must be one of issue, project; got 'org'"),
    ({"conditions": [{"id": ANOMALY, "scope": "issue", "min_score": "high"}]},
     "conditions[0].min_score: must be a finite number; got 'high'"),
    ({"conditions": [{"id": ANOMALY, "scope": "issue", "min_score": float("nan")}]},
     "conditions[0].min_score: must be a finite number"),
    # Filters.
    ({"filters": [{"id": LEVEL_FILTER, "level": "40"}]},
     "filters[0].match: required: one of eq, gte, lte"),
    ({"filters": [{"id": LEVEL_FILTER, "match": "gt", "level": "40"}]},
     "filters[0].match: must be one of eq, gte, lte; got 'gt'"),
    ({"filters": [{"id": LEVEL_FILTER, "match": "eq", "level": "35"}]},
     "filters[0].level: must be one of 0 (sample), 10 (debug), 20 (info), 30 (warning), "
     "40 (error), 50 (fatal); got '35'"),
    ({"filters": [{"id": LEVEL_FILTER, "match": "eq"}]}, "filters[0].level: must be one of"),
    ({"filters": [{"id": TAGGED_EVENT_FILTER, "match": "eq", "value": "x"}]},
     "filters[0].key: required"),
    ({"filters": [{"id": TAGGED_EVENT_FILTER, "key": "browser", "match": "regex", "value": "x"}]},
     "filters[0].match: must be one of eq, ne, sw, nsw, ew, new, co, nc, is, ns, in, nin; got "
     "'regex'"),
    ({"filters": [{"id": TAGGED_EVENT_FILTER, "key": "browser", "match": "eq"}]},
     "filters[0].value: required"),
    ({"filters": [{"id": TAGGED_EVENT_FILTER, "key": "browser", "match": "co", "value": 3}]},
     "filters[0].value: must be a string; got 3"),
    ({"filters": [{"id": TAGGED_EVENT_FILTER, "key": "k" * 201, "match": "is"}]},
     "filters[0].key: must be at most 200 characters; got 201"),
    ({"filters": [{"id": AGE_COMPARISON_FILTER, "value": 3, "time": "hour"}]},
     "filters[0].comparison_type: required: one of older, newer"),
    ({"filters": [{"id": AGE_COMPARISON_FILTER, "comparison_type": "younger", "value": 3,
                   "time": "hour"}]},
     "filters[0].comparison_type: must be one of older, newer; got 'younger'"),
    ({"filters": [{"id": AGE_COMPARISON_FILTER, "comparison_type": "older", "value": 3,
                   "time": "month"}]},
     "filters[0].time: must be one of minute, hour, day, week; got 'month'"),
    ({"filters": [{"id": AGE_COMPARISON_FILTER, "comparison_type": "older", "time": "day"}]},
     "filters[0].value: required"),
    ({"filters": [{"id": ISSUE_OCCURRENCES_FILTER}]}, "filters[0].value: required"),
    ({"filters": [{"id": ISSUE_OCCURRENCES_FILTER, "value": "ten"}]},
     "filters[0].value: must be a whole number of at least 0; got 'ten'"),
    # Actions.
    ({"actions": [{"id": NOTIFY_EVENT_SERVICE}]}, "actions[0].service: required: one of webhooks"),
    ({"actions": [{"id": NOTIFY_EVENT_SERVICE, "service": "pagerduty"}]},
     "actions[0].service: must be one of webhooks; got 'pagerduty'"),
    ({"actions": [{"id": WEBHOOK_ACTION}]}, "actions[0].url: required"),
    ({"actions": [{"id": WEBHOOK_ACTION, "url": "ftp://example.com/hook"}]},
     "actions[0].url: must be an http:// or https:// URL; got 'ftp://example.com/hook'"),
    ({"actions": [{"id": WEBHOOK_ACTION, "url": "https:///nohost"}]},
     "actions[0].url: must be an http:// or https:// URL"),
    ({"actions": [{"id": WEBHOOK_ACTION, "url": "https://example.com/" + "a" * 2048}]},
     "actions[0].url: must be at most 2048 characters"),
    ({"actions": [{"id": WEBHOOK_ACTION, "url": "https://example.com", "secret": 12}]},
     "actions[0].secret: must be a string; got 12"),
    ({"actions": [WEBHOOK, {"id": SLACK_ACTION}]}, "actions[1].webhook_url: required"),
    ({"actions": [{"id": SLACK_ACTION, "webhook_url": "hooks.slack.com/x"}]},
     "actions[0].webhook_url: must be an http:// or https:// URL"),
    ({"actions": [{"id": NOTIFY_EMAIL}]},
     "actions[0].targetType: required: one of IssueOwners, IssueSubscribers, Team, Member"),
    ({"actions": [{"id": NOTIFY_EMAIL, "targetType": "Everyone"}]},
     "actions[0].targetType: must be one of IssueOwners, IssueSubscribers, Team, Member; got 'Everyone'"),
    ({"actions": [{"id": NOTIFY_EMAIL, "targetType": "Member"}]},
     "actions[0].targetIdentifier: required: a whole number of at least 1"),
    ({"actions": [{"id": NOTIFY_EMAIL, "targetType": "Team", "targetIdentifier": "ops"}]},
     "actions[0].targetIdentifier: must be a whole number of at least 1; got 'ops'"),
    ({"actions": [{"id": NOTIFY_EMAIL, "targetType": "IssueOwners",
                   "fallthroughType": "Nobody"}]},
     "actions[0].fallthroughType: must be one of ActiveMembers, AllMembers, NoOne"),
    ({"actions": [{"id": EMAIL_ACTION}]}, "actions[0].to: required: a list of e-mail addresses"),
    ({"actions": [{"id": EMAIL_ACTION, "to": []}]}, "actions[0].to: required"),
    ({"actions": [{"id": EMAIL_ACTION, "to": ["ops@example.com", "not an address"]}]},
     "actions[0].to[1]: must be an e-mail address of at most 254 characters; got "
     "'not an address'"),
    ({"actions": [{"id": EMAIL_ACTION, "to": [f"u{n}@example.com" for n in range(51)]}]},
     "actions[0].to: at most 50 addresses; got 51"),
])
def test_bad_rule_bodies_are_refused_naming_the_field(fields: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rule(body(**fields))
    assert message in caught.value.detail
    assert isinstance(caught.value, BadRequest) and caught.value.status == 400


def test_a_rule_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RuleError, match="the rule must be a JSON object; got"):
        parse_rule([WEBHOOK])  # type: ignore[arg-type]


def test_defaults_are_sentrys() -> None:
    parsed = parse_rule({"name": "  Defaults  ", "actions": [WEBHOOK]})
    assert (parsed.name, parsed.action_match, parsed.filter_match, parsed.frequency_minutes,
            parsed.environment, parsed.conditions, parsed.filters, parsed.id) == (
        "Defaults", "all", "all", 30, None, (), (), None)


@pytest.mark.parametrize(("frequency_minutes", "expected"), [
    (5, 5), (43200, 43200), ("60", 60), (1440.0, 1440)])
def test_frequency_bounds_are_sentrys(frequency_minutes: Any, expected: int) -> None:
    assert rule(frequency=frequency_minutes).frequency_minutes == expected


@pytest.mark.parametrize(("item", "fields"), [
    # Numbers the Sentry UI sends as strings are stored as numbers.
    (frequency("100"), {"value": 100, "interval": "1h", "comparisonType": "count"}),
    (frequency(5, comparisonType="percent", comparisonInterval="1w", name="shown", uuid="u"),
     {"value": 5, "interval": "1h", "comparisonType": "percent", "comparisonInterval": "1w"}),
    ({"id": LEVEL_FILTER, "match": "gte", "level": 40}, {"match": "gte", "level": "40"}),
    ({"id": LEVEL_FILTER, "match": "lte", "level": "warning"}, {"match": "lte", "level": "30"}),
    ({"id": TAGGED_EVENT_FILTER, "key": "browser", "match": "is"},
     {"key": "browser", "match": "is", "value": ""}),
    ({"id": ISSUE_OCCURRENCES_FILTER, "value": "10"}, {"value": 10}),
    ({"id": ANOMALY, "scope": "project", "min_score": "2.5"},
     {"scope": "project", "min_score": 2.5}),
    ({"id": NOTIFY_EMAIL, "targetType": "Member", "targetIdentifier": "42"},
     {"targetType": "Member", "targetIdentifier": 42}),
    ({"id": EMAIL_ACTION, "to": "ops@example.com"}, {"to": ["ops@example.com"]}),
])
def test_item_fields_are_normalized(item: dict[str, Any], fields: dict[str, Any]) -> None:
    section = ("filters" if ".filters." in item["id"] else
               "actions" if ".actions" in item["id"] or ".mail." in item["id"] else "conditions")
    if section == "actions":
        parsed = rule(actions=[item])
        assert dict(parsed.actions[0].fields) == fields
    else:
        parsed = rule(**{section: [item]})
        assert dict(getattr(parsed, section)[0].fields) == fields


# --- the GET answer ------------------------------------------------------------------------

EVERYTHING = body(
    name="Everything", actionMatch="any", filterMatch="none", frequency=60,
    environment="production",
    conditions=[
        {"id": FIRST_SEEN_EVENT}, {"id": REGRESSION_EVENT}, {"id": REAPPEARED_EVENT},
        {"id": EVERY_EVENT}, frequency(100),
        frequency(20, "1d", EVENT_UNIQUE_USER_FREQUENCY),
        frequency(50, "5m", comparisonType="percent", comparisonInterval="1w"),
        frequency(50, "15m", EVENT_UNIQUE_USER_FREQUENCY, comparisonType="percent",
                  comparisonInterval="1d"),
        {"id": ANOMALY, "scope": "issue"}, {"id": ANOMALY, "scope": "project", "min_score": 3},
    ],
    filters=[
        {"id": LEVEL_FILTER, "match": "gte", "level": "40"},
        {"id": TAGGED_EVENT_FILTER, "key": "browser", "match": "sw", "value": "Chrome"},
        {"id": TAGGED_EVENT_FILTER, "key": "user", "match": "ns"},
        {"id": AGE_COMPARISON_FILTER, "comparison_type": "newer", "value": 3, "time": "day"},
        {"id": ISSUE_OCCURRENCES_FILTER, "value": 10},
        {"id": LATEST_RELEASE_FILTER},
    ],
    actions=[
        WEBHOOK, {"id": NOTIFY_EMAIL, "targetType": "IssueOwners", "fallthroughType": "NoOne"},
        {"id": NOTIFY_EMAIL, "targetType": "Team", "targetIdentifier": 3},
        {"id": NOTIFY_EMAIL, "targetType": "IssueSubscribers"},
        {"id": WEBHOOK_ACTION, "url": "https://hooks.example.com/a", "secret": "s3cret"},
        {"id": SLACK_ACTION, "webhook_url": "https://hooks.slack.com/services/T/B/X",
         "channel": "#alerts"},
        {"id": SLACK_ACTION, "webhook_url": "https://chat.example.com/hooks/abc"},
        {"id": EMAIL_ACTION, "to": ["a@example.com", "b@example.com"]},
    ])


def test_the_get_answer_is_sentrys_shape_with_item_names() -> None:
    answer = rule_json(parse_rule(EVERYTHING, rule_id=12))
    assert {key: answer[key] for key in ("id", "name", "actionMatch", "filterMatch",
                                         "frequency", "environment")} == {
        "id": "12", "name": "Everything", "actionMatch": "any", "filterMatch": "none",
        "frequency": 60, "environment": "production"}
    assert [item["name"] for item in answer["conditions"]] == [
        "A new issue is created",
        "The issue changes state from resolved to unresolved",
        "The issue changes state from ignored to unresolved",
        "The event occurs",
        "The issue is seen more than 100 times in 1h",
        "The issue is seen by more than 20 users in 1d",
        "The issue's events in 5m are more than 50% higher than 1w ago",
        "The issue's users in 15m are more than 50% higher than 1d ago",
        "An anomaly is detected in the issue",
        "An anomaly is detected in the project with a score of at least 3",
    ]
    assert [item["name"] for item in answer["filters"]] == [
        "The event's level is greater than or equal to error",
        "The event's tags match browser starts with Chrome",
        "The event's tags match user is not set",
        "The issue is newer than 3 day(s)",
        "The issue has happened at least 10 times",
        "The event is from the latest release",
    ]
    assert [item["name"] for item in answer["actions"]] == [
        "Send a notification via webhooks",
        "Send a notification to IssueOwners",
        "Send a notification to Team 3",
        "Send a notification to IssueSubscribers",
        "Send a webhook to https://hooks.example.com/a",
        "Send a Slack message to #alerts",
        "Send a Slack message to chat.example.com",
        "Send an e-mail to a@example.com, b@example.com",
    ]
    assert answer["conditions"][4] == {"id": EVENT_FREQUENCY, "value": 100, "interval": "1h",
                                       "comparisonType": "count",
                                       "name": "The issue is seen more than 100 times in 1h"}


def test_an_unsaved_rule_answers_id_null() -> None:
    assert rule_json(parse_rule(body()))["id"] is None


@pytest.mark.parametrize("source", [EVERYTHING, body(), body(environment=""),
                                    body(conditions=[frequency("7", "30d")])])
def test_the_get_answer_parses_back_to_the_same_rule(source: dict[str, Any]) -> None:
    parsed = parse_rule(source, rule_id=3)
    assert parse_rule(rule_json(parsed), rule_id=3) == parsed


# --- evaluation: match modes ---------------------------------------------------------------

FIRST = {"id": FIRST_SEEN_EVENT}
REGRESSED = {"id": REGRESSION_EVENT}


@pytest.mark.parametrize(("action_match", "is_new", "transition", "fires"), [
    ("all", True, "regression", True),
    ("all", True, None, False),
    ("all", False, "regression", False),
    ("any", True, None, True),
    ("any", False, "regression", True),
    ("any", False, None, False),
    ("none", False, None, True),
    ("none", True, None, False),
    ("none", False, "regression", False),
])
def test_action_match_combines_conditions(action_match: str, is_new: bool,
                                          transition: str | None, fires: bool) -> None:
    checked = rule(actionMatch=action_match, conditions=[FIRST, REGRESSED])
    assert rule_fires(checked, event(), issue(is_new=is_new, transition=transition),
                      NOW) is fires


@pytest.mark.parametrize("mode", ["all", "any", "none"])
def test_a_rule_without_conditions_or_filters_fires_for_every_event(mode: str) -> None:
    # Sentry's RuleProcessor skips an empty list whatever its match mode.
    checked = rule(actionMatch=mode, filterMatch=mode)
    assert rule_fires(checked, event(), issue(), NOW)


ERROR_OR_WORSE = {"id": LEVEL_FILTER, "match": "gte", "level": "40"}
FROM_CHROME = {"id": TAGGED_EVENT_FILTER, "key": "browser", "match": "sw", "value": "chrome"}


@pytest.mark.parametrize(("filter_match", "level", "browser", "fires"), [
    ("all", "error", "Chrome 120", True),
    ("all", "warning", "Chrome 120", False),
    ("all", "error", "Firefox", False),
    ("any", "warning", "Chrome 120", True),
    ("any", "warning", "Firefox", False),
    ("none", "warning", "Firefox", True),
    ("none", "fatal", "Firefox", False),
])
def test_filter_match_combines_filters_after_conditions(filter_match: str, level: str,
                                                        browser: str, fires: bool) -> None:
    checked = rule(filterMatch=filter_match, conditions=[FIRST],
                   filters=[ERROR_OR_WORSE, FROM_CHROME])
    seen = event(level=level, tags={"browser": browser})
    assert rule_fires(checked, seen, issue(is_new=True), NOW) is fires
    # Filters only narrow: the conditions must still hold.
    assert not rule_fires(checked, seen, issue(is_new=False), NOW)


@given(st.lists(st.booleans(), min_size=1, max_size=6), st.booleans())
def test_none_is_the_negation_of_any_for_the_same_conditions(flags: list[bool],
                                                              as_filters: bool) -> None:
    # Each flag is a tagged_event item on its own key that the event has or not.
    items = [{"id": TAGGED_EVENT_FILTER, "key": f"k{n}", "match": "is"} for n in range(len(flags))]
    tags = {f"k{n}": "v" for n, flag in enumerate(flags) if flag}
    key = "filterMatch" if as_filters else "actionMatch"
    section = "filters" if as_filters else "conditions"
    if not as_filters:  # the same truth through conditions: "new issue" per flag
        items = [FIRST if flag else REGRESSED for flag in flags]
        tags = {}
    seen, subject = event(tags=tags), issue(is_new=True)
    results = {mode: rule_fires(rule(**{key: mode, section: items}), seen, subject, NOW)
               for mode in ("all", "any", "none")}
    assert results["none"] is not results["any"]
    assert results["any"] is any(flags)
    assert results["all"] is all(flags)


# --- evaluation: each condition ------------------------------------------------------------


@pytest.mark.parametrize(("condition", "is_new", "transition", "fires"), [
    (FIRST_SEEN_EVENT, True, None, True),
    (FIRST_SEEN_EVENT, False, None, False),
    (REGRESSION_EVENT, False, "regression", True),
    (REGRESSION_EVENT, False, "reappeared", False),
    (REGRESSION_EVENT, False, None, False),
    (REAPPEARED_EVENT, False, "reappeared", True),
    (REAPPEARED_EVENT, False, "escalating", True),
    (REAPPEARED_EVENT, False, "regression", False),
    (REAPPEARED_EVENT, True, None, False),
    (EVERY_EVENT, False, None, True),
])
def test_state_conditions(condition: str, is_new: bool, transition: str | None,
                          fires: bool) -> None:
    checked = rule(conditions=[{"id": condition}])
    assert rule_fires(checked, event(), issue(is_new=is_new, transition=transition),
                      NOW) is fires


@pytest.mark.parametrize(("kind", "condition"), [
    ("events", EVENT_FREQUENCY), ("users", EVENT_UNIQUE_USER_FREQUENCY)])
@pytest.mark.parametrize(("count", "fires"), [(99, False), (100, False), (101, True)])
def test_frequency_fires_on_strictly_more_than_value(kind: str, condition: str, count: int,
                                                     fires: bool) -> None:
    checked = rule(conditions=[frequency(100, "1h", condition)])
    counts = {Window(kind, HOUR): count}
    assert rule_fires(checked, event(), issue(counts=counts), NOW) is fires


@pytest.mark.parametrize(("current", "week_ago", "fires"), [
    (150, 100, False),  # exactly 50% higher: not more than 50
    (151, 100, True),
    (300, 200, False),
    (301, 200, False),  # 50.5%: Sentry compares the whole percent (50)
    (302, 200, True),
    (1000, 0, False),  # nothing to compare with: Sentry counts a 0% increase
    (50, 100, False),  # a drop is no increase
])
def test_percent_comparison_against_the_same_interval_earlier(current: int, week_ago: int,
                                                              fires: bool) -> None:
    checked = rule(conditions=[frequency(50, "1h", comparisonType="percent",
                                         comparisonInterval="1w")])
    counts = {Window("events", HOUR): current, Window("events", HOUR, 7 * 86400): week_ago}
    assert rule_fires(checked, event(), issue(counts=counts), NOW) is fires


@pytest.mark.parametrize(("current", "earlier", "percent"), [
    (150, 100, 50), (1, 3, 0), (5, 0, 0), (0, 0, 0), (4, 3, 33), (7, 3, 133)])
def test_percent_increase_is_sentrys_whole_percent(current: int, earlier: int,
                                                   percent: int) -> None:
    assert percent_increase(current, earlier) == percent


def test_a_missing_count_window_is_a_caller_error_not_a_silent_zero() -> None:
    checked = rule(conditions=[frequency(1, "5m")])
    with pytest.raises(LookupError, match="pass the counts of windows_needed"):
        rule_fires(checked, event(), issue(counts={Window("events", HOUR): 5}), NOW)


@pytest.mark.parametrize(("condition", "anomalies", "fires"), [
    ({"scope": "issue"}, [{"scope": "issue", "score": 0.1}], True),
    ({"scope": "issue"}, [{"scope": "project", "score": 9}], False),
    ({"scope": "project"}, [{"scope": "project", "score": 9}], True),
    ({"scope": "issue"}, [], False),
    ({"scope": "issue", "min_score": 3}, [{"scope": "issue", "score": 3}], True),
    ({"scope": "issue", "min_score": 3}, [{"scope": "issue", "score": 2.99}], False),
    ({"scope": "issue", "min_score": 3},
     [{"scope": "issue", "score": 1}, {"scope": "issue", "score": 4.5}], True),
    ({"scope": "issue", "min_score": 3}, [{"scope": "issue"}], False),
    ({"scope": "project", "min_score": 3}, [{"scope": "issue", "score": 10}], False),
])
def test_anomaly_condition(condition: dict[str, Any], anomalies: list[dict[str, Any]],
                           fires: bool) -> None:
    checked = rule(conditions=[{"id": ANOMALY, **condition}])
    assert rule_fires(checked, event(), issue(anomalies=tuple(anomalies)), NOW) is fires


# --- evaluation: each filter ---------------------------------------------------------------


@pytest.mark.parametrize(("match", "level", "event_level", "passes"), [
    ("eq", "40", "error", True),
    ("eq", "40", "fatal", False),
    ("gte", "40", "error", True),
    ("gte", "40", "fatal", True),
    ("gte", "40", "warning", False),
    ("lte", "30", "warning", True),
    ("lte", "30", "info", True),
    ("lte", "30", "debug", True),
    ("lte", "30", "error", False),
    ("gte", "0", "sample", True),
    ("gte", "10", "verbose", False),  # a level Sentry does not know never passes
])
def test_level_filter_uses_sentrys_level_order(match: str, level: str, event_level: str,
                                               passes: bool) -> None:
    checked = rule(filters=[{"id": LEVEL_FILTER, "match": match, "level": level}])
    assert rule_fires(checked, event(level=event_level), issue(), NOW) is passes


@pytest.mark.parametrize(("key", "match", "value", "tags", "passes"), [
    ("browser", "eq", "Chrome", {"browser": "chrome"}, True),  # case-insensitive
    ("Browser", "eq", "chrome", {"browser": "Chrome"}, True),
    ("browser", "eq", "Chrome", {"browser": "Chrome 120"}, False),
    ("browser", "eq", "Chrome", {}, False),
    ("browser", "ne", "Chrome", {"browser": "Firefox"}, True),
    ("browser", "ne", "Chrome", {"browser": "Chrome"}, False),
    ("browser", "ne", "Chrome", {}, True),
    ("browser", "sw", "chr", {"browser": "Chrome 120"}, True),
    ("browser", "sw", "120", {"browser": "Chrome 120"}, False),
    ("browser", "nsw", "chr", {"browser": "Chrome 120"}, False),
    ("browser", "nsw", "fire", {"browser": "Chrome 120"}, True),
    ("browser", "ew", "120", {"browser": "Chrome 120"}, True),
    ("browser", "ew", "chrome", {"browser": "Chrome 120"}, False),
    ("browser", "new", "120", {"browser": "Chrome 120"}, False),
    ("browser", "new", "119", {"browser": "Chrome 120"}, True),
    ("url", "co", "/checkout", {"url": "https://shop/checkout/pay"}, True),
    ("url", "co", "/cart", {"url": "https://shop/checkout/pay"}, False),
    ("url", "nc", "/cart", {"url": "https://shop/checkout/pay"}, True),
    ("url", "nc", "/checkout", {"url": "https://shop/checkout/pay"}, False),
    ("user", "is", "", {"user": "id:1"}, True),
    ("user", "is", "", {}, False),
    ("user", "ns", "", {}, True),
    ("user", "ns", "", {"user": "id:1"}, False),
    ("os", "in", "linux, windows", {"os": "Windows"}, True),
    ("os", "in", "linux,windows", {"os": "macOS"}, False),
    ("os", "nin", "linux,windows", {"os": "macOS"}, True),
    ("os", "nin", "linux,windows", {"os": "linux"}, False),
    # Sentry's standardized keys: "sentry:release" is matched as "release".
    ("release", "eq", "shop@2.0", {"sentry:release": "shop@2.0"}, True),
])
def test_tagged_event_filter_matches_like_sentry(key: str, match: str, value: str,
                                                 tags: dict[str, str], passes: bool) -> None:
    checked = rule(filters=[{"id": TAGGED_EVENT_FILTER, "key": key, "match": match,
                             "value": value}])
    seen = event(tags=tags, release=None, environment=None)
    assert rule_fires(checked, seen, issue(), NOW) is passes


@pytest.mark.parametrize(("key", "value", "passes"), [
    ("release", "shop@1.0", True), ("environment", "production", True),
    ("level", "error", True), ("release", "shop@2.0", False)])
def test_tagged_event_filter_sees_level_release_and_environment(key: str, value: str,
                                                                passes: bool) -> None:
    checked = rule(filters=[{"id": TAGGED_EVENT_FILTER, "key": key, "match": "eq",
                             "value": value}])
    assert rule_fires(checked, event(tags={}), issue(), NOW) is passes


@pytest.mark.parametrize(("comparison", "value", "unit", "age", "passes"), [
    ("older", 1, "hour", dt.timedelta(hours=2), True),
    ("older", 3, "hour", dt.timedelta(hours=2), False),
    ("older", 2, "hour", dt.timedelta(hours=2), False),  # exactly that old: neither
    ("newer", 2, "hour", dt.timedelta(hours=2), False),
    ("newer", 3, "hour", dt.timedelta(hours=2), True),
    ("newer", 10, "minute", dt.timedelta(minutes=5), True),
    ("older", 1, "day", dt.timedelta(days=2), True),
    ("newer", 1, "week", dt.timedelta(days=8), False),
    ("older", 1, "week", dt.timedelta(days=8), True),
])
def test_age_comparison_filter(comparison: str, value: int, unit: str, age: dt.timedelta,
                               passes: bool) -> None:
    checked = rule(filters=[{"id": AGE_COMPARISON_FILTER, "comparison_type": comparison,
                             "value": value, "time": unit}])
    assert rule_fires(checked, event(), issue(first_seen=NOW - age), NOW) is passes


@pytest.mark.parametrize(("times_seen", "passes"), [(9, False), (10, True), (11, True)])
def test_issue_occurrences_filter_is_at_least(times_seen: int, passes: bool) -> None:
    checked = rule(filters=[{"id": ISSUE_OCCURRENCES_FILTER, "value": 10}])
    assert rule_fires(checked, event(), issue(times_seen=times_seen), NOW) is passes


@pytest.mark.parametrize(("release", "tags", "latest", "passes"), [
    ("shop@1.0", {}, "shop@1.0", True),
    ("shop@1.0", {}, "SHOP@1.0", True),
    ("shop@0.9", {}, "shop@1.0", False),
    (None, {}, "shop@1.0", False),
    (None, {"sentry:release": "shop@1.0"}, "shop@1.0", True),
    ("shop@1.0", {}, None, False),  # a project without releases
])
def test_latest_release_filter(release: str | None, tags: dict[str, str], latest: str | None,
                               passes: bool) -> None:
    checked = rule(filters=[{"id": LATEST_RELEASE_FILTER}])
    seen = event(release=release, tags=tags)
    assert rule_fires(checked, seen, issue(latest_release=latest), NOW) is passes


# --- environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(("environment", "fires"), [
    ("production", True), ("staging", False), (None, False)])
def test_a_rule_environment_restricts_to_that_environments_events(environment: str | None,
                                                                  fires: bool) -> None:
    checked = rule(environment="production")
    assert rule_fires(checked, event(environment=environment), issue(), NOW) is fires


def test_a_rule_without_environment_takes_every_environment() -> None:
    for environment in ("production", "staging", None):
        assert rule_fires(rule(), event(environment=environment), issue(), NOW)


def test_a_rule_with_environment_counts_only_that_environment() -> None:
    checked = rule(environment="production", conditions=[frequency(5)])
    counts = {Window("events", HOUR, 0, "production"): 3, Window("events", HOUR, 0, None): 50}
    assert not rule_fires(checked, event(), issue(counts=counts), NOW)
    counts[Window("events", HOUR, 0, "production")] = 6
    assert rule_fires(checked, event(), issue(counts=counts), NOW)


# --- windows_needed ------------------------------------------------------------------------


def test_windows_needed_are_exactly_the_frequency_windows() -> None:
    rules = [
        rule(conditions=[FIRST, frequency(10, "1m"), frequency(10, "1m")]),
        rule(conditions=[frequency(3, "1d", EVENT_UNIQUE_USER_FREQUENCY)],
             filters=[{"id": ISSUE_OCCURRENCES_FILTER, "value": 3}]),
        rule(environment="production",
             conditions=[frequency(50, "15m", comparisonType="percent", comparisonInterval="1h")]),
        rule(conditions=[{"id": ANOMALY, "scope": "issue"}]),
    ]
    assert windows_needed(rules) == {
        Window("events", 60),
        Window("users", 86400),
        Window("events", 900, 0, "production"),
        Window("events", 900, 3600, "production"),
    }
    assert windows_needed([rule(conditions=[FIRST])]) == set()
    assert windows_needed([]) == set()


SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400, "1w": 604800,
           "30d": 2592000}


@given(st.lists(st.tuples(st.sampled_from(list(SECONDS)),
                          st.sampled_from([None, "5m", "15m", "1h", "1d", "1w", "30d"]),
                          st.sampled_from([EVENT_FREQUENCY, EVENT_UNIQUE_USER_FREQUENCY]),
                          st.integers(0, 1000)),
                min_size=1, max_size=5),
       st.sampled_from([None, "production"]))
def test_rules_evaluate_on_exactly_the_windows_needed(
        specs: list[tuple[str, str | None, str, int]], environment: str | None) -> None:
    expected: set[Window] = set()
    conditions: list[dict[str, Any]] = []
    for interval, compared, condition, value in specs:
        kind = "events" if condition == EVENT_FREQUENCY else "users"
        expected.add(Window(kind, SECONDS[interval], 0, environment))
        extra: dict[str, str] = {}
        if compared:
            expected.add(Window(kind, SECONDS[interval], SECONDS[compared], environment))
            extra = {"comparisonType": "percent", "comparisonInterval": compared}
        conditions.append(frequency(value, interval, condition, **extra))
    checked = rule(environment=environment, conditions=conditions)
    assert windows_needed([checked]) == expected
    counts = dict.fromkeys(expected, 1)
    for item in conditions:  # each alone: it reads its windows and no other
        alone = rule(environment=environment, conditions=[item])
        rule_fires(alone, event(environment=environment), issue(counts=counts), NOW)
        for window in windows_needed([alone]):
            fewer = {w: c for w, c in counts.items() if w != window}
            with pytest.raises(LookupError):
                rule_fires(alone, event(environment=environment), issue(counts=fewer), NOW)


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_count_condition_is_count_greater_than_value(value: int, count: int) -> None:
    checked = rule(conditions=[frequency(value, "5m")])
    fired = rule_fires(checked, event(), issue(counts={Window("events", 300): count}), NOW)
    assert fired is (count > value)


# --- round trip over generated rules -------------------------------------------------------

_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF), min_size=1, max_size=20)
_CONDITIONS = st.one_of(
    st.sampled_from([{"id": FIRST_SEEN_EVENT}, {"id": REGRESSION_EVENT},
                     {"id": REAPPEARED_EVENT}, {"id": EVERY_EVENT}]),
    st.builds(lambda kind, value, interval, compared: frequency(
        value, interval, kind,
        **({"comparisonType": "percent", "comparisonInterval": compared} if compared else {})),
        st.sampled_from([EVENT_FREQUENCY, EVENT_UNIQUE_USER_FREQUENCY]),
        st.one_of(st.integers(0, 10**6), st.integers(0, 10**6).map(str)),
        st.sampled_from(list(SECONDS)),
        st.sampled_from([None, "5m", "15m", "1h", "1d", "1w", "30d"])),
    st.builds(lambda scope, score: {"id": ANOMALY, "scope": scope,
                                    **({"min_score": score} if score is not None else {})},
              st.sampled_from(["issue", "project"]),
              st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))))
_FILTERS = st.one_of(
    st.builds(lambda match, level: {"id": LEVEL_FILTER, "match": match, "level": level},
              st.sampled_from(["eq", "gte", "lte"]),
              st.sampled_from(["0", "10", "20", "30", "40", "50", 40, "fatal"])),
    st.builds(lambda key, match, value: {"id": TAGGED_EVENT_FILTER, "key": key,
                                         "match": match, "value": value},
              _TEXT, st.sampled_from(["eq", "ne", "sw", "nsw", "ew", "new", "co", "nc",
                                      "in", "nin"]), _TEXT),
    st.builds(lambda key, match: {"id": TAGGED_EVENT_FILTER, "key": key, "match": match},
              _TEXT, st.sampled_from(["is", "ns"])),
    st.builds(lambda comparison, value, unit: {"id": AGE_COMPARISON_FILTER,
                                               "comparison_type": comparison, "value": value,
                                               "time": unit},
              st.sampled_from(["older", "newer"]), st.integers(0, 1000),
              st.sampled_from(["minute", "hour", "day", "week"])),
    st.builds(lambda value: {"id": ISSUE_OCCURRENCES_FILTER, "value": value},
              st.integers(0, 10**6)),
    st.just({"id": LATEST_RELEASE_FILTER}))
_ACTIONS = st.one_of(
    st.just(WEBHOOK),
    st.builds(lambda target, ident: {"id": NOTIFY_EMAIL, "targetType": target,
                                     "targetIdentifier": ident},
              st.sampled_from(["Team", "Member"]), st.integers(1, 10**9)),
    st.just({"id": NOTIFY_EMAIL, "targetType": "IssueOwners", "fallthroughType": "AllMembers"}),
    st.builds(lambda secret: {"id": WEBHOOK_ACTION, "url": "https://example.com/hook",
                              "secret": secret}, _TEXT),
    st.just({"id": SLACK_ACTION, "webhook_url": "https://hooks.slack.com/services/A/B/C"}),
    st.just({"id": EMAIL_ACTION, "to": ["ops@example.com"]}))


@given(name=_TEXT.filter(str.strip), action_match=st.sampled_from(["all", "any", "none"]),
       filter_match=st.sampled_from(["all", "any", "none"]),
       frequency_minutes=st.integers(5, 43200),
       environment=st.one_of(st.none(), st.text(min_size=1, max_size=64)),
       conditions=st.lists(_CONDITIONS, max_size=4), filters=st.lists(_FILTERS, max_size=4),
       actions=st.lists(_ACTIONS, min_size=1, max_size=3))
def test_any_valid_rule_round_trips_through_the_get_answer(
        name: str, action_match: str, filter_match: str, frequency_minutes: int,
        environment: str | None, conditions: list[dict[str, Any]],
        filters: list[dict[str, Any]], actions: list[dict[str, Any]]) -> None:
    parsed = parse_rule({"name": name, "actionMatch": action_match,
                         "filterMatch": filter_match, "frequency": frequency_minutes,
                         "environment": environment, "conditions": conditions,
                         "filters": filters, "actions": actions}, rule_id=99)
    answer = rule_json(parsed)
    assert parse_rule(answer, rule_id=99) == parsed
    assert all(isinstance(item["name"], str) and item["name"]
               for section in ("conditions", "filters", "actions") for item in answer[section])


def test_the_editor_configuration_lists_every_supported_id_with_its_fields() -> None:
    configuration = rule_configuration()
    listed = {section: [entry["id"] for entry in entries]
              for section, entries in configuration.items()}
    assert listed == {section: list(supported_ids(section))
                      for section in ("actions", "conditions", "filters")}
    by_id = {entry["id"]: entry for entries in configuration.values() for entry in entries}
    assert by_id[EVENT_FREQUENCY]["label"] == (
        "The issue is seen more than {value} times in {interval}")
    assert [key for key, _ in by_id[EVENT_FREQUENCY]["formFields"]["interval"]["choices"]] == [
        "1m", "5m", "15m", "1h", "1d", "1w", "30d"]
    assert by_id[LEVEL_FILTER]["formFields"]["level"]["choices"][0] == ["50", "fatal"]
    assert "formFields" not in by_id[FIRST_SEEN_EVENT]
    # Every form field is a field the item takes: a form filled in from it parses.
    assert set(by_id[TAGGED_EVENT_FILTER]["formFields"]) == {"key", "match", "value"}


def test_an_email_list_may_come_as_one_comma_separated_field() -> None:
    parsed = rule(actions=[{"id": EMAIL_ACTION, "to": "a@example.com, b@example.com,"}])
    assert parsed.actions[0].fields == {"to": ["a@example.com", "b@example.com"]}
