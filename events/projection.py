"""What grouping reads of a stored event (its *projection*), and the hash of it that every
events row carries (``grouping_projection``), so that ``crashray reprocess`` can tell which
stored events group alike without parsing their bodies (storage/regroup.py).

Events with one projection get the same hashes, issue and processing summary from the same
grouping config, rules and source maps: the projection holds the top-level keys grouping
reads (``GROUPING_KEYS``, events/grouping: strategies, fingerprint and stack-trace rules,
security reports), the ``contexts`` entries it reads, the processing summary the event was
stored with (``DERIVED_KEYS``), and what symbolication reads and writes besides the stack
traces (``debug_meta``, ``errors``). Three parts vary per event and are columns of the row
already, so the stored hash leaves them out and the reprocess job adds those its rules and
symbolicator read, from the columns (storage/regroup.py ``ROW_PROJECTION_SQL``):

- the tags (the ``tags`` map column), which fingerprint rules can match: only the tag keys
  a project's rules name matter, and the stored hash is the same for every value of the
  others. An event whose own fingerprint names a tag has all its tags in the stored hash;
- the release and dist (columns), which a ``release:`` matcher and symbolication read: a
  job adds them for events of a platform its symbolicator handles, or when its rules read
  the release. An event symbolication changed or commented on (``was_symbolicated``) has
  them in the stored hash itself;
- nothing else: the rest of an event (its id, times, user, environment, request, extra)
  is never read by grouping.

``stored_projection`` returns 0, "unknown: parse the body", for the events the columns do
not describe exactly: a ``tags`` value that is not a list of distinct string pairs (the map
column drops repeated keys and null values), and an empty ``errors`` list (which
reprocessing drops, so the stored body would change). Rows written before migration 0007
have 0 too.
"""

from __future__ import annotations

from collections.abc import Mapping
from hashlib import blake2b
from typing import Any, Final

import orjson

from events.symbolicate import SYMBOLICATION_ERRORS

#: Top-level keys of an event that grouping reads (events/grouping: the strategies, the
#: fingerprint and stack-trace rules and their variables, security reports); ``tags`` and
#: ``contexts`` apart.
GROUPING_KEYS: Final = ("exception", "stacktrace", "threads", "platform", "checksum",
                        "message", "logentry", "fingerprint", "csp", "expectct",
                        "expectstaple", "hpkp", "logger", "level", "release", "sdk",
                        "transaction", "type", "culprit")
#: ``contexts`` entries grouping reads (security reports kept there, events/security.py).
GROUPING_CONTEXTS: Final = ("csp", "expectct", "expectstaple", "hpkp")
#: What processing writes into a stored event (events/process.py ``event_summary``).
DERIVED_KEYS: Final = ("title", "culprit", "location", "metadata")
#: What symbolication reads and writes besides the stack traces.
SYMBOLICATION_KEYS: Final = ("release", "dist", "debug_meta", "errors")
#: Keys of the stored hash: grouping's and the summary's, without the per-event columns
#: (release, dist), with what symbolication reads besides them.
_STORED_KEYS: Final = tuple(dict.fromkeys(
    [k for k in (*GROUPING_KEYS, *DERIVED_KEYS, *SYMBOLICATION_KEYS)
     if k not in ("release", "dist")]))
#: No projection known: the reprocess job parses the body.
UNKNOWN: Final = 0


def was_symbolicated(stored: Mapping[str, Any]) -> bool:
    """Whether symbolication changed or commented on the stored event (a stack trace kept
    its minified frames, or an ``errors`` entry of symbolication's)."""
    for key in ("exception", "threads"):
        section = stored.get(key)
        values = section.get("values") if isinstance(section, dict) else None
        if isinstance(values, list) and any(
                isinstance(v, dict) and "raw_stacktrace" in v for v in values):
            return True
    errors = stored.get("errors")
    return isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("type") in SYMBOLICATION_ERRORS for e in errors)


def _plain_tags(tags: object) -> bool:
    """Whether the map column holds exactly ``tags``: distinct string keys, string values."""
    if tags is None:
        return True
    if not isinstance(tags, list):
        return False
    keys = set()
    for pair in tags:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                and isinstance(pair[1], str)) or pair[0] in keys:
            return False
        keys.add(pair[0])
    return True


def stored_projection(event: Mapping[str, Any]) -> int:
    """The ``grouping_projection`` of a stored (processed) event: a non-zero 64-bit hash
    of its projection without tags, release and dist, or ``UNKNOWN`` (see the module)."""
    if event.get("errors") == [] or not _plain_tags(event.get("tags")):
        return UNKNOWN
    picked: dict[str, Any] = {k: event[k] for k in _STORED_KEYS if k in event}
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        picked["contexts"] = {k: contexts[k] for k in GROUPING_CONTEXTS if k in contexts}
    # The columns hold "" for a missing or null release: whether there was one is kept.
    picked["\0release"] = [isinstance(event.get(k), str) for k in ("release", "dist")]
    if was_symbolicated(event):
        picked["release"], picked["dist"] = event.get("release"), event.get("dist")
    if "tags." in str(event.get("fingerprint") or ""):
        picked["tags"] = event.get("tags")
    digest = blake2b(orjson.dumps(picked, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return int.from_bytes(digest.digest(), "little") or 1
