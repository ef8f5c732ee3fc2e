"""Where actors go (actors/placement.py) and what ``crashray status`` prints, without Ray."""

from __future__ import annotations

from actors.placement import HEAD_RESOURCE, LOCAL, Placement
from cluster.deploy import ClusterStatus
from cluster.deploy_cli import status_lines


def test_a_local_crashray_places_nothing_and_owns_its_actors() -> None:
    assert LOCAL.pool("crashray-consumer-0") == {"name": "crashray-consumer-0",
                                                  "namespace": "crashray"}
    assert LOCAL.home("crashray-clickhouse") == {"name": "crashray-clickhouse",
                                                 "namespace": "crashray"}


def test_a_deployment_pins_home_actors_to_the_head_and_spreads_the_pools() -> None:
    deployed = Placement(detached=True, head_resource=True, spread=True)
    home = deployed.home("crashray-keeper")
    assert home["lifetime"] == "detached" and home["resources"] == {HEAD_RESOURCE: 0.001}
    pool = deployed.pool("crashray-consumer-3")
    assert pool["lifetime"] == "detached" and pool["scheduling_strategy"] == "SPREAD"
    assert "resources" not in pool


def test_without_a_head_resource_home_actors_stay_on_the_commands_node() -> None:
    home = Placement(home_node_id="ab" * 28).home("crashray-clickhouse")
    strategy = home["scheduling_strategy"]
    assert strategy.node_id == "ab" * 28 and strategy.soft is False


def test_status_lines_say_what_runs_where_and_how_far_behind() -> None:
    status = ClusterStatus(
        nodes=[{"node_id": "a" * 56, "address": "10.0.0.5", "alive": True,
                "resources": {"CPU": 4.0, "crashray_head": 1.0}},
               {"node_id": "b" * 56, "address": "10.0.0.6", "alive": False,
                "resources": {}}],
        applications={"ingest": {"ingest": {"status": "HEALTHY",
                                            "replicas": {"RUNNING": 2}}}},
        actors_by_node={"a" * 56: ["crashray-consumer-0", "crashray-keeper"]},
        queue={"items": 12, "bytes": 3400, "oldest_age_s": 1.5, "claimed": 4},
        consumers=[{"name": "crashray-consumer-0", "processed_last_minute": 600,
                    "errors": 1}])
    lines = status_lines(status)
    assert lines[0] == "Nodes: 1 alive of 2"
    assert "  aaaaaaaaaaaa 10.0.0.5 alive 4 CPU (crashray_head)" in lines
    assert "  bbbbbbbbbbbb 10.0.0.6 dead 0 CPU" in lines
    assert "  ingest/ingest: healthy, 2 running" in lines
    assert "  aaaaaaaaaaaa: crashray-consumer-0, crashray-keeper" in lines
    assert ("Queue: 12 item(s) waiting (3400 bytes), oldest 1.5 s, 4 claimed by consumers"
            in lines)
    assert lines[-1] == ("Last minute: 600 item(s) processed (10.0/s) by 1 consumer(s);"
                         " 1 consumer error(s) since start")
