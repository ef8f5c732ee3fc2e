"""The head processes a one-node Crashray leaves out of the local Ray it starts.

``ray.init`` on a machine with no Ray starts a head node: the GCS server and the raylet, the
raylet's dashboard (metrics) and runtime-env agents, and three processes that serve nothing
a one-node Crashray uses (bench/RESULTS.md measured ~175 MiB of PSS and ~1.6 % of a core
between them, idle):

- Ray's API server (``dashboard/dashboard.py``, in its minimal form even with
  ``include_dashboard=False``): the state API (``ray list actors``, ``ray summary``) and job
  submission. Crashray reads which actor runs where from the GCS's actor table instead
  (``cluster_state.actor_nodes``, for ``crashray status`` and the operator page).
- the log monitor: streams workers' output to drivers, which ``crashray up`` turns off
  (``log_to_driver=False``); the workers' log files are written either way.
- the autoscaler monitor: Ray's node autoscaler, which has no node to add on one machine
  (Crashray's consumer pool autoscaler is its own actor).

``ray.init`` has no argument for any of them (``ray start`` has ``--include-log-monitor``
and ``--no-monitor``, but not ``crashray up``'s way of owning its Ray), so while it starts the
node the three ``Node`` methods that start them do nothing. Ray itself runs without an API
server when that one fails to start (it does not stop the node), so nothing else depends on
it. ``CRASHRAY_RAY_HEAD_TOOLS=true`` keeps all three, for an operator who wants Ray's own
tools against a one-node instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: The ``ray._private.node.Node`` methods that start the three processes (Ray 2.60).
LEFT_OUT = ("start_api_server", "start_log_monitor", "start_monitor")


@contextmanager
def lean_head(enabled: bool) -> Iterator[None]:
    """While the block starts a local Ray (``ray.init`` with no address), leave out the head
    processes named in ``LEFT_OUT``; with ``enabled`` false, change nothing."""
    if not enabled:
        yield
        return
    from ray._private import node

    saved = {name: node.Node.__dict__[name] for name in LEFT_OUT}

    def left_out(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    try:
        for name in LEFT_OUT:
            setattr(node.Node, name, left_out)
        yield
    finally:
        for name, method in saved.items():
            setattr(node.Node, name, method)
