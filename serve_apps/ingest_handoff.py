"""The hand-off of one ``@serve.batch`` batch, in which requests of every organization share
one COPY into the queue: when the queue refuses the batch's data, only the requests whose
data it refuses fail.

The door check (events/storable.py) refuses what the queue is known to refuse; this is the
defence behind it, for whatever the check misses. A refusal for the data's sake
(``storage.queue.UnqueueableData``) halves the batch and tries each half again, so one bad
request among n costs about 2·log2(n) more COPYs and fails alone with a 400; its
neighbours are queued and answered 200. Any other error (PostgreSQL down, a lost connection)
fails the requests of the COPY it happened in, as before: nothing was queued for them and
their SDKs are told to try again (503).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from storage.queue import QueuedItem, UnqueueableData


def hand_off(groups: Sequence[Sequence[QueuedItem]],
             enqueue: Callable[[Sequence[QueuedItem]], None]) -> list[Exception | None]:
    """Queue each request's items (``groups``, one per request) with as few ``enqueue``
    calls as the data allows; for each request, None once its items are durable, else the
    error that kept them out."""
    results: list[Exception | None] = [None] * len(groups)
    parts = [[index for index, group in enumerate(groups) if group]]
    while parts:
        part = parts.pop()
        if not part:
            continue
        try:
            enqueue([item for index in part for item in groups[index]])
        except UnqueueableData as exc:
            if len(part) == 1:
                results[part[0]] = exc
            else:
                middle = len(part) // 2
                parts += [part[middle:], part[:middle]]
        except Exception as exc:
            for index in part:
                results[index] = exc
    return results
