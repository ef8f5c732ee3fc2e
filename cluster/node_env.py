"""The environment ``ray start`` needs on each node of a Ray cluster that runs Crashray.

``crashray up`` starts its own Ray and sets Serve's environment in its own process
(``cluster.runtime.apply_ray_environment`` and ``haproxy_environment``); the processes Ray
starts inherit it. On a cluster started with ``ray start`` (``ray-cluster.yaml``), Serve's
controller, its proxies and HAProxy, and the replicas are started by each node's raylet
and inherit the raylet's environment instead, so every node's start command runs::

    python -m cluster.node_env --out ~/.crashray/ray-node.env

and exports that file's variables before ``ray start``. It holds what the runtime sets for
a local Ray, computed by the same code: throughput-optimized Serve with HAProxy
(``RAY_SERVE_ENV``), uvicorn trusting no proxy (``FORWARDED_ALLOW_IPS``), and HAProxy's
files, limits and Crashray's launcher (``RAY_SERVE_HAPROXY_*``, cluster/haproxy.py) from
the ``CRASHRAY_HAPROXY_*`` settings. Two things differ, because a node runs one Serve:
HAProxy's statistics and metrics ports are Serve's fixed ones (8404, 9101) unless
``CRASHRAY_HAPROXY_STATS_PORT`` / ``CRASHRAY_HAPROXY_METRICS_PORT`` name others, so a
Prometheus server finds them on every node; and the file is written at each start, under
the open-files limit ``ray start`` runs with, which sizes HAProxy's ``maxconn``.

``HEAD_NODE_RESOURCE`` is the custom Ray resource only the head node carries
(``ray-cluster.yaml``): with the embedded defaults, what must live on one machine (the
private PostgreSQL, the embedded ClickHouse engine's owner) asks for it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Final

from actors.placement import HEAD_RESOURCE
from cluster import cli_common
from cluster.runtime import RAY_SERVE_ENV, UVICORN_TRUSTS_NO_PROXY, haproxy_environment
from cluster.settings import Settings

#: The custom resource of the head node (``ray start --resources``): one unit, of which
#: each home actor asks a share (``actors/placement.py``).
HEAD_NODE_RESOURCE: Final = HEAD_RESOURCE
#: Where the start commands of ``ray-cluster.yaml`` write the file.
DEFAULT_OUT: Final = "~/.crashray/ray-node.env"


def node_environment(settings: Settings, node_dir: Path) -> dict[str, str]:
    """The variables ``ray start`` needs on this node; ``node_dir`` names the node's
    HAProxy files (they go to a private directory named after it, as ``crashray up``'s)."""
    env = dict(RAY_SERVE_ENV)
    # As apply_ray_environment: the uvicorn in each replica would otherwise believe
    # X-Forwarded-For from 127.0.0.1, which behind HAProxy is every request.
    env["FORWARDED_ALLOW_IPS"] = UVICORN_TRUSTS_NO_PROXY
    haproxy = haproxy_environment(node_dir, settings)
    if not settings.haproxy_stats_port:
        del haproxy["RAY_SERVE_HAPROXY_STATS_PORT"]
    if not settings.haproxy_metrics_port:
        del haproxy["RAY_SERVE_HAPROXY_METRICS_PORT"]
    env.update(haproxy)
    return env


def env_file_text(env: dict[str, str]) -> str:
    """``NAME=value`` lines a shell reads with ``set -a; . FILE; set +a``."""
    head = "# Written by `python -m cluster.node_env` at `ray start`; do not edit.\n"
    return head + "".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items())


def write_env_file(args: argparse.Namespace) -> None:
    settings = cli_common.settings_from(args)
    out = Path(args.out).expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(env_file_text(node_environment(settings, out.parent)))
    partial.replace(out)  # a start that reads it sees the whole file or the previous one
    print(f"wrote {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cluster.node_env",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"the file to write (default {DEFAULT_OUT})")
    cli_common.command(parser, write_env_file)
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli_common.run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
