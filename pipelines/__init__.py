"""Crashray's bulk jobs (Ray Data pipelines): import, reprocess, export, rollups."""

from __future__ import annotations

from typing import Any


def blocks_of(items: list[dict[str, Any]], per_block: int = 1) -> Any:
    """A job's input as a Ray Data dataset of one block per ``per_block`` items (one task's
    worth: a slice to export or reprocess, a batch of descriptors to import), however many
    there are. ``ray.data.from_items`` alone makes at most 200 blocks, so a larger job gave
    each task several units, and an import's output (~6.4 KB an event) outgrew the job's
    share of the object store: the executor then ran one processing task at a time
    (measured: a 1,000,000-event import at 497 events/s, one core idle, against 911 with a
    block per batch; bench/RESULTS.md)."""
    import ray.data

    return ray.data.from_items(items, override_num_blocks=-(-len(items) // per_block))
