"""Pausing Python's cycle collector while a batch of events is decoded or built.

A batch of processed events is hundreds of thousands of dicts and lists that all stay alive
until the batch is stored. While they pile up, every collection their allocations trigger
walks the ones made so far again: unpickling 5,000 processed events costs ~250 µs an event
with the collector running and ~55 µs with it paused (bench/RESULTS.md, 2026-12-06).
Reference counting still frees everything that is not in a reference cycle while the
collector is paused; the collector resumes, and finds any cycle, when the batch ends, so a
pause must cover one bounded batch, never a whole job.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cycle collector for the block; restore its previous state after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
