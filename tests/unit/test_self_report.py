"""Self-reporting's decisions (cluster/self_report.py), without Ray or a receiver: which
events come from the ingest path, the per-process cap, and when a DSN points at this
instance."""

from __future__ import annotations

import json

from cluster.self_report import (
    CONFIG_ENV,
    SETUP_HOOK,
    MinuteCap,
    SelfReportConfig,
    before_send_for,
    config_for,
    dsn_points_at,
    from_ingest,
    ingesting,
    runtime_env,
)
from cluster.settings import Settings


def event(logger: str | None = None, modules: tuple[str, ...] = ()) -> dict[str, object]:
    frames = [{"module": m, "function": "f"} for m in modules]
    return {"logger": logger,
            "exception": {"values": [{"type": "E", "stacktrace": {"frames": frames}}]}}


def test_events_of_the_ingest_path_are_recognized_by_logger_frame_or_context() -> None:
    assert from_ingest(event("crashray.ingest"), False)
    assert from_ingest(event("crashray.handoff"), False)
    assert from_ingest(event("crashray.consumer", ("cluster.cli", "serve_apps.ingest_request")),
                       False)
    assert from_ingest(event("crashray.consumer"), True)
    assert not from_ingest(event("crashray.consumer", ("actors.consumer", "storage.queue")),
                           False)
    assert not from_ingest({"message": "no exception"}, False)


def test_the_cap_allows_so_many_a_minute_and_refills() -> None:
    now = [0.0]
    cap = MinuteCap(3, clock=lambda: now[0])
    assert [cap.take() for _ in range(5)] == [True, True, True, False, False]
    now[0] = 20.0  # a third of a minute: one more
    assert [cap.take(), cap.take()] == [True, False]
    assert cap.dropped == 3


def test_before_send_drops_ingest_events_only_when_the_dsn_points_here() -> None:
    here = SelfReportConfig("http://k@127.0.0.1:9000/2", 1.0, 100, guard_ingest=True)
    elsewhere = SelfReportConfig("https://k@o1.ingest.sentry.io/2", 1.0, 100,
                                 guard_ingest=False)
    guarded, open_ = before_send_for(here, MinuteCap(100)), before_send_for(elsewhere,
                                                                           MinuteCap(100))
    assert guarded(event("crashray.ingest"), {}) is None
    assert open_(event("crashray.ingest"), {}) is not None
    with ingesting():
        assert guarded(event("crashray.notifier"), {}) is None
    sent = guarded(event("crashray.notifier"), {})
    assert sent is not None and sent["tags"]["crashray.process"] == "driver"


def test_a_dsn_points_at_this_instance_by_host_and_port() -> None:
    bases = ["http://127.0.0.1:9000"]
    assert dsn_points_at("http://key@localhost:9000/3", bases)
    assert dsn_points_at("http://key@127.0.0.1:9000/3", bases)
    assert not dsn_points_at("http://key@127.0.0.1:9001/3", bases)
    assert not dsn_points_at("https://key@o1.ingest.sentry.io/3", bases)


def test_off_by_default_and_carried_to_workers_when_set(tmp_path: object) -> None:
    assert config_for(Settings()) is None and runtime_env(None) == {}
    settings = Settings(self_dsn="http://key@127.0.0.1:9000/3", port=9000,
                        self_sample_rate=0.5)
    config = config_for(settings)
    assert config is not None and config.guard_ingest and config.sample_rate == 0.5
    env = runtime_env(config)
    assert env["worker_process_setup_hook"] == SETUP_HOOK
    assert json.loads(env["env_vars"][CONFIG_ENV])["dsn"] == settings.self_dsn
