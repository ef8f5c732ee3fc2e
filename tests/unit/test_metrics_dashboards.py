"""The Grafana dashboard and the Prometheus alert rules against the metrics Crashray
declares (cluster/metrics.py): both parse, every PromQL expression parses (the
``promql-parser`` package, Prometheus's own grammar ported to Rust), and every Crashray
series they query exists, so renaming a metric fails here and not on an operator's
blank panel."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import orjson
import promql_parser
import pytest
import yaml

from cluster import metrics
from cluster.metrics import METRICS, RAY_EXPORT_PREFIX, exported_names
from events.process import EventProcessor, ItemContext

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "grafana" / "crashray.json"
PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning.yaml"
ALERTS = ROOT / "dashboards" / "prometheus" / "crashray-alerts.yml"
#: Grafana's built-in interval variables, as Grafana substitutes them before querying.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h"}
#: Labels Ray's metrics agent adds to every application metric.
RAY_LABELS = {"SessionName", "NodeAddress", "Component", "WorkerId", "Version", "le"}
CRASHRAY_SERIES = re.compile(rf"^{RAY_EXPORT_PREFIX}crashray_")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in _panels(dashboard)
            for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def selectors(node: Any) -> list[Any]:
    """Every vector selector in a parsed PromQL expression."""
    if type(node).__name__ == "VectorSelector":
        return [node]
    found: list[Any] = []
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, int | float | str):
            found += selectors(child)
    for child in getattr(node, "args", None) or []:
        found += selectors(child)
    return found


def grouping_labels(node: Any) -> set[str]:
    """The labels of every ``by (…)`` in a parsed expression."""
    labels: set[str] = set()
    modifier = getattr(node, "modifier", None)
    if type(node).__name__ == "AggregateExpr" and modifier is not None:
        labels |= set(getattr(modifier, "labels", None) or [])
    for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attribute, None)
        if child is not None and not isinstance(child, int | float | str):
            labels |= grouping_labels(child)
    for child in getattr(node, "args", None) or []:
        labels |= grouping_labels(child)
    return labels


def parse(expr: str) -> Any:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def crashray_names(expr: str) -> set[str]:
    return {s.name for s in selectors(parse(expr)) if s.name and CRASHRAY_SERIES.match(s.name)}


def test_metric_names_are_crashray_prefixed_and_unique() -> None:
    names = [spec.name for spec in METRICS]
    assert len(names) == len(set(names))
    for spec in METRICS:
        assert spec.name.startswith("crashray_"), spec.name
        assert (spec.kind == "counter") == spec.name.endswith("_total"), spec.name
        assert (spec.kind == "histogram") == bool(spec.boundaries), spec.name
        assert list(spec.boundaries) == sorted(spec.boundaries), spec.name


def test_no_metric_is_tagged_with_a_tenant() -> None:
    tenant_tags = {"organization", "organization_id", "project", "project_id", "key",
                   "key_id", "event_id", "issue_id", "user"}
    for spec in METRICS:
        assert not tenant_tags & set(spec.tag_keys), spec.name


def test_every_metric_the_issue_lists_is_declared() -> None:
    declared = {spec.name for spec in METRICS}
    assert {"crashray_ingest_requests_total", "crashray_ingest_items_total",
            "crashray_ingest_accept_seconds", "crashray_queue_waiting_items",
            "crashray_queue_oldest_age_seconds", "crashray_stage_seconds",
            "crashray_clickhouse_insert_rows_total", "crashray_clickhouse_insert_bytes_total",
            "crashray_clickhouse_insert_seconds", "crashray_postgres_pool_wait_seconds",
            "crashray_rate_limit_decisions_total", "crashray_rate_limit_leases_total",
            "crashray_notifications_total", "crashray_actor_restarts_total",
            "crashray_dead_letters"} <= declared


@pytest.fixture
def no_metrics_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's metric objects set aside: integration tests that ran earlier in the
    same pytest process, with Ray, made some."""
    monkeypatch.setattr(metrics, "_created", {})


def test_recording_without_ray_is_a_no_op(no_metrics_yet: None) -> None:
    # Unit tests run without Ray (tests/unit/conftest.py refuses ray.init): nothing is
    # created and nothing raises.
    metrics.inc("crashray_ingest_requests_total", endpoint="envelope", outcome="accepted",
                reason="")
    metrics.observe("crashray_stage_seconds", 0.1, stage="group")
    metrics.set_gauge("crashray_queue_waiting_items", 3)
    metrics.record_ingest("envelope", 0.0, {"error": 1}, {"attachment": 2}, "rate_limited")
    metrics.record_actor_start("notifier")
    assert metrics._created == {}


def test_dashboard_is_provisionable_json_with_a_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Crashray"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    rows = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert rows == {"Intake", "Refusals", "Accept latency", "Queue lag", "Processing stages",
                    "Storage", "Notifications and errors"}
    for panel in _panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    provisioning = yaml.safe_load(PROVISIONING.read_text())
    assert provisioning["apiVersion"] == 1
    assert provisioning["providers"][0]["type"] == "file"


@pytest.mark.parametrize("expr", dashboard_expressions())
def test_dashboard_query_parses_and_uses_declared_metrics(expr: str) -> None:
    used = crashray_names(expr)
    assert used, f"no Crashray metric in {expr!r}"
    assert used <= exported_names(), f"undeclared: {used - exported_names()}"
    _assert_labels_declared(expr)


def test_alert_rules_have_prometheus_rule_file_shape() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"}
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}, rule
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
            if "for" in rule:
                assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["for"]
    alerts = {rule["alert"] for rule in alert_rules()}
    assert {"CrashrayIntakeStalled", "CrashrayQueueAgeGrowing", "CrashrayConsumersDown",
            "CrashrayDataDiskNearlyFull", "CrashrayNotificationsFailing"} <= alerts


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_expression_parses_and_uses_declared_metrics(rule: dict[str, Any]) -> None:
    used = crashray_names(rule["expr"])
    assert used <= exported_names(), f"undeclared: {used - exported_names()}"
    if not rule["alert"].startswith("Node"):
        assert used, rule["expr"]
    _assert_labels_declared(rule["expr"])


def test_a_renamed_metric_is_caught() -> None:
    assert crashray_names("sum(rate(ray_crashray_ingest_request_total[5m]))") \
        - exported_names() == {"ray_crashray_ingest_request_total"}


def _assert_labels_declared(expr: str) -> None:
    """Grouping and matcher labels are tags of the metrics queried (or Ray's own)."""
    tree = parse(expr)
    crashray = [s for s in selectors(tree) if s.name and CRASHRAY_SERIES.match(s.name)]
    if not crashray:
        return
    tags = set(RAY_LABELS)
    for selector in crashray:
        spec = next(spec for spec in METRICS if selector.name in spec.exported_names())
        tags |= set(spec.tag_keys)
    for selector in crashray:
        for matcher in selector.matchers.matchers:
            assert matcher.name in tags | {"__name__"}, (matcher.name, expr)
    assert grouping_labels(tree) <= tags, (grouping_labels(tree) - tags, expr)


def test_an_undeclared_label_is_caught() -> None:
    with pytest.raises(AssertionError):
        _assert_labels_declared('sum by (project_id) (rate(ray_crashray_ingest_items_total[5m]))')
    with pytest.raises(AssertionError):
        _assert_labels_declared('ray_crashray_dead_letters{organization="acme"}')


def test_event_processor_accounts_time_per_stage_and_starts_again_when_taken() -> None:
    processor = EventProcessor(symbolicator=lambda event, project_id, org_id: event)
    ctx = ItemContext(project_id=1, key_id=1, received_at=dt.datetime.now(dt.UTC))
    for _ in range(3):
        processor.process(orjson.dumps({"message": "boom", "level": "error"}), ctx)
    taken = processor.take_stage_seconds()
    assert set(taken) == {"normalize", "scrub", "symbolicate", "group"}
    assert set(taken) <= set(metrics.STAGES)
    assert all(seconds > 0 for seconds in taken.values())
    assert processor.take_stage_seconds() == {}


def test_status_prints_a_metrics_url_per_node() -> None:
    from cluster.deploy import ClusterStatus
    from cluster.deploy_cli import status_lines

    nodes = [{"node_id": "a" * 56, "address": "10.0.0.5", "alive": True,
              "resources": {"CPU": 2.0}, "metrics_port": 9091},
             {"node_id": "b" * 56, "address": "fd00::7", "alive": True,
              "resources": {"CPU": 4.0}, "metrics_port": 40123}]
    lines = status_lines(ClusterStatus(
        nodes, {}, {}, {"items": 0, "bytes": 0, "oldest_age_s": 0.0, "claimed": 0}, []))
    assert "    Metrics: http://10.0.0.5:9091/metrics" in lines
    assert "    Metrics: http://[fd00::7]:40123/metrics" in lines


def test_names_and_descriptions_are_ascii_as_ray_requires() -> None:
    for spec in METRICS:
        assert spec.name.isascii() and spec.description.isascii(), spec.name
        assert all(key.isascii() for key in spec.tag_keys), spec.name


def test_a_wrong_tag_fails_without_ray_too() -> None:
    with pytest.raises(ValueError, match="takes tags"):
        metrics.inc("crashray_notifications_total", kind="webhook")
    with pytest.raises(ValueError, match="takes tags"):
        metrics.observe("crashray_stage_seconds", 1.0, stage="group", project_id="7")


def test_every_call_site_helper_uses_the_declared_tags(no_metrics_yet: None) -> None:
    # Without Ray nothing is recorded, but the tags are checked: each helper's calls
    # match their metric's declaration.
    from actors.rate_limit import record_decisions
    from events.errors import Overloaded, RateLimited
    from events.quotas import Decision, Lease, RateLimit
    from serve_apps.ingest_metrics import endpoint_of, record_answer
    from storage.queue import QueuedItem

    now = dt.datetime.now(dt.UTC)
    items = [QueuedItem(1, 1, 1, "event", None, now, b"{}"),
             QueuedItem(1, 1, 1, "attachment", None, now, b"xx"),
             QueuedItem(1, 1, 1, "transaction", None, now, b"{}")]
    limit = RateLimit(frozenset({"transaction"}), "project", "quota", 60)
    record_answer(endpoint_of("/api/1/envelope/"), 0.0, items)
    record_answer("envelope", 0.0, items, [limit], RateLimited("limited", 60, "60::project"))
    record_answer("store", 0.0, [], (), Overloaded("failed to queue envelope"))
    assert endpoint_of("/api/1/minidump/") == "unknown"
    lease = Lease(1, 1, 1, "error", 5, 0.0, ())
    record_decisions([Decision(frozenset({"error"}), (limit,), (lease,))],
                     [(1, ("q", 1), 0, 3)])
    metrics.record_stages({"normalize": 0.1, "insert": 0.2})
    metrics.record_clickhouse_insert("events", 3, 1200, 0.01)
    metrics.record_consumer_items("claimed", ["event", "event", "transaction"])
    for spec in METRICS:
        if spec.kind == "gauge":
            metrics.set_gauge(spec.name, 1.0, **dict.fromkeys(spec.tag_keys, "x"))
    assert metrics._created == {}


@pytest.mark.parametrize(("value", "enabled"), [
    (None, True), ("true", True), ("1", True), ("false", False), (" Off ", False),
    ("0", False), ("no", False)])
def test_metrics_enabled_setting(value: str | None, enabled: bool) -> None:
    assert metrics.parse_enabled(value) is enabled
