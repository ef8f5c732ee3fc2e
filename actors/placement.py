"""Where Crashray's actors run on a Ray cluster, and how long they live.

Two kinds of actor:

- **Home actors** hold something tied to one machine's disk: the deployment keeper (the
  private PostgreSQL under the data directory) and the ClickHouse owner (the embedded chDB
  files). They are pinned to the *home node*: the node carrying the custom resource
  ``crashray_head`` (``ray-cluster.yaml`` gives it to the head node) when the cluster has
  one, else the node the ``crashray`` command runs on. With servers configured
  (``CRASHRAY_POSTGRES_URL``, ``CRASHRAY_CLICKHOUSE_URL``) nothing needs pinning.
- **Pool actors** (consumers, grouping and rate-limit shards) may run anywhere; they are
  spread over the nodes (Ray's ``SPREAD`` strategy) so losing a node loses a share of each
  pool, not all of it. They keep no state of their own that PostgreSQL does not hold.

``crashray up`` owns its actors (they end with it); ``crashray deploy`` makes them
*detached*: named, restartable (``max_restarts``), and alive after the command exits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

#: The custom resource of the node that keeps the data directory (ray-cluster.yaml).
HEAD_RESOURCE: Final = "crashray_head"
#: The share of ``HEAD_RESOURCE`` one home actor asks for: any number of them fit on the
#: node that has one unit, and none on a node without it.
HEAD_RESOURCE_SHARE: Final = 0.001
#: Ray namespace of every Crashray actor.
NAMESPACE: Final = "crashray"


@dataclass(frozen=True)
class Placement:
    """How the actors of one Crashray are placed. The default is ``crashray up`` on a
    local Ray: owned by the driver, no constraint (one node)."""

    #: Actors outlive the command that started them (``crashray deploy``).
    detached: bool = False
    #: Home actors ask for a share of ``HEAD_RESOURCE`` (the cluster has it).
    head_resource: bool = False
    #: Else the node id home actors are pinned to (``None``: no constraint).
    home_node_id: str | None = None
    #: Pool actors are spread over the nodes.
    spread: bool = False

    def _lifetime(self, name: str) -> dict[str, Any]:
        options: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
        if self.detached:
            options["lifetime"] = "detached"
        return options

    def pool(self, name: str) -> dict[str, Any]:
        """``.options(**…)`` of a pool actor named ``name``."""
        options = self._lifetime(name)
        if self.spread:
            options["scheduling_strategy"] = "SPREAD"
        return options

    def home(self, name: str) -> dict[str, Any]:
        """``.options(**…)`` of a home actor named ``name``."""
        options = self._lifetime(name)
        if self.head_resource:
            options["resources"] = {HEAD_RESOURCE: HEAD_RESOURCE_SHARE}
        elif self.home_node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                self.home_node_id, soft=False)
        return options


def cluster_placement(detached: bool) -> Placement:
    """The placement on the Ray this process is connected to: home actors on the node
    with ``HEAD_RESOURCE`` if any node has it, else on this process's node; pool actors
    spread when there is more than one node."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    has_head = any(HEAD_RESOURCE in n.get("Resources", {}) for n in nodes)
    return Placement(detached=detached, head_resource=has_head,
                     home_node_id=None if has_head
                     else ray.get_runtime_context().get_node_id(),
                     spread=len(nodes) > 1)


#: ``crashray up`` on a local Ray (and the tests' runtimes).
LOCAL: Final = Placement()
