"""``crashray deploy``, ``crashray undeploy`` and ``crashray status`` on an existing Ray
cluster (``cluster/deploy.py``)."""

from __future__ import annotations

import argparse
from typing import Any

from cluster import cli_common
from cluster.cli_common import command
from cluster.cluster_state import metrics_url


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="the Ray cluster (CRASHRAY_RAY_ADDRESS), e.g."
                        " 10.0.0.5:6379 or auto on a node of it")
    cli_common.add_data_dir(parser)


def cmd_deploy(args: argparse.Namespace) -> None:
    from cluster.deploy import deploy, wait_until_serving

    settings = cli_common.settings_from(args)
    print(f"Deploying Crashray onto {settings.ray_address} ...", flush=True)
    info = deploy(settings)
    wait_until_serving(settings)
    cli_common.print_start_info(info, settings)
    print("Crashray is deployed; `crashray status` shows it, `crashray undeploy` removes"
          " it.", flush=True)


def cmd_undeploy(args: argparse.Namespace) -> None:
    from cluster.deploy import undeploy

    settings = cli_common.settings_from(args)
    removed = undeploy(settings)
    print(f"Removed {len(removed.parts)} part(s) of Crashray from {settings.ray_address};"
          f" the data stays in {removed.data_dir} and the configured databases.")


def cmd_status(args: argparse.Namespace) -> None:
    from cluster.deploy import status

    settings = cli_common.settings_from(args)
    for line in status_lines(status(settings)):
        print(line)


def status_lines(s: Any) -> list[str]:
    """``ClusterStatus`` as the lines ``crashray status`` prints."""
    lines = [f"Nodes: {sum(1 for n in s.nodes if n['alive'])} alive of {len(s.nodes)}"]
    for node in s.nodes:
        cpus = node["resources"].get("CPU", 0)
        head = " (crashray_head)" if "crashray_head" in node["resources"] else ""
        lines.append(f"  {node['node_id'][:12]} {node['address']}"
                     f" {'alive' if node['alive'] else 'dead'} {cpus:g} CPU{head}")
        if node.get("metrics_port"):
            lines.append(f"    Metrics: {metrics_url(node['address'], node['metrics_port'])}")
    lines.append("Deployments:")
    for app, deployments in sorted(s.applications.items()):
        for name, d in sorted(deployments.items()):
            replicas = ", ".join(f"{n} {state.lower()}" for state, n in
                                 sorted(d["replicas"].items())) or "no replicas"
            lines.append(f"  {app}/{name}: {d['status'].lower()}, {replicas}")
    lines.append("Actors by node:")
    if not s.actors_by_node:
        lines.append("  (Ray's actor table could not be read)")
    for node, names in sorted(s.actors_by_node.items()):
        lines.append(f"  {node[:12]}: {', '.join(names)}")
    q = s.queue
    lines.append(f"Queue: {q['items']} item(s) waiting ({q['bytes']} bytes), oldest"
                 f" {q['oldest_age_s']:.1f} s, {q['claimed']} claimed by consumers")
    processed = sum(c.get("processed_last_minute", 0) for c in s.consumers)
    errors = sum(c.get("errors", 0) for c in s.consumers)
    lines.append(f"Last minute: {processed} item(s) processed ({processed / 60:.1f}/s) by"
                 f" {len(s.consumers)} consumer(s); {errors} consumer error(s) since start")
    return lines


def add_parsers(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="deploy Crashray onto an existing Ray cluster"
                            " (detached; a second deploy upgrades in place)")
    _add_target(deploy)
    deploy.add_argument("--port", type=int, help="HTTP port (CRASHRAY_PORT, 9000)")
    deploy.add_argument("--host", help="HTTP address (CRASHRAY_HOST, 127.0.0.1)")
    command(deploy, cmd_deploy)
    undeploy = sub.add_parser("undeploy", help="remove Crashray from the Ray cluster (data"
                              " is kept)")
    _add_target(undeploy)
    command(undeploy, cmd_undeploy)
    status = sub.add_parser("status", help="nodes, deployments, actors by node, queue lag"
                            " and the last minute's rates")
    _add_target(status)
    command(status, cmd_status)
