"""Grouping results remembered by what grouping reads of an event.

Grouping (events/grouping) is a pure function of a few parts of an event, its grouping config
and the project's rules, and costs ~0.3 to 1 ms an event, while the events of one issue mostly
repeat those parts: the same exception types and values and the same stack traces, with
other ids, times, users, tags and frame locals. ``GroupingMemo`` keeps the results by a digest
of those parts (``grouping_key``), so live ingest, ``crashray import`` and ``crashray
reprocess`` group each distinct one once (events/process.py, pipelines/reprocess.py).

What the key holds, and why it is enough:

- the top-level keys grouping reads (``events.projection.GROUPING_KEYS``: the strategies,
  the fingerprint and stack-trace rules and their variables, security reports) and the
  ``contexts`` entries it reads, with every stack frame's locals and source context left
  out (``vars``, ``pre_context``, ``post_context``): no strategy, matcher or fingerprint
  variable reads them, and they differ from one event of an issue to the next;
- the release only when the rules read it (``rules_read_release``: a ``release:`` matcher;
  nothing else in grouping does);
- of the tags, those the rules name (``referenced_tags``, with the built-in rules' own), or
  all of them when a name is a pattern or the event's own fingerprint names a tag;
- the grouping config's name: the memo of a processor belongs to one project's rules, and
  is replaced when they change.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from hashlib import blake2b
from typing import Any, Final

import orjson

from events.grouping import GroupingResult, group_hashes_for_event
from events.grouping.rules import GroupingRules
from events.projection import GROUPING_CONTEXTS, GROUPING_KEYS

#: Tags the built-in fingerprint rules read (events/grouping/builtin_rules.py).
BUILTIN_RULE_TAGS: Final = frozenset({"transaction"})
#: What a stack frame holds that grouping never reads (see the module docstring).
FRAME_KEYS_NOT_READ: Final = frozenset({"vars", "pre_context", "post_context"})
#: Results a memo keeps by default (``CRASHRAY_GROUPING_MEMO_ENTRIES``).
DEFAULT_MEMO_ENTRIES: Final = 5_000
_TAG_REFERENCE = re.compile(r"tags\.([^\s:}\"=,]+)")


def rules_read_release(*rule_texts: str) -> bool:
    """Whether rules may read an event's release (only a fingerprint rule's ``release:``
    matcher does; the built-in rules do not): any mention of the word counts."""
    return any("release" in text.lower() for text in rule_texts)


def referenced_tags(*rule_texts: str) -> frozenset[str] | None:
    """The tag keys (as prefixes) rules may read, from their text; None when a reference
    is a pattern (every tag may matter)."""
    names = {m for text in rule_texts for m in _TAG_REFERENCE.findall(text)}
    if any(c in name for name in names for c in "*?["):
        return None
    return frozenset(names) | BUILTIN_RULE_TAGS


def rule_texts(rules: GroupingRules | None) -> tuple[str, ...]:
    """Every rule's text (fingerprint and stack-trace rules, parsed or not)."""
    if rules is None:
        return ()
    parsed = [r.text for r in (rules.fingerprint.rules if rules.fingerprint else ())]
    parsed += [r.text for r in (rules.stacktrace.rules if rules.stacktrace else ())]
    return (*rules.fingerprint_rules, *rules.stacktrace_rules, *parsed)


def _without_frame_locals(section: object) -> object:
    """An ``exception``/``threads`` section, or a ``stacktrace``, without what its frames
    hold that grouping never reads; the parts that have none are the originals."""
    if isinstance(section, dict):
        frames = section.get("frames")
        if isinstance(frames, list):
            return {**section, "frames": [
                {k: v for k, v in f.items() if k not in FRAME_KEYS_NOT_READ}
                if isinstance(f, dict) and not FRAME_KEYS_NOT_READ.isdisjoint(f) else f
                for f in frames]}
        values = section.get("values")
        if isinstance(values, list):
            return {**section, "values": [_container_without_locals(v) for v in values]}
    return section


def _container_without_locals(value: object) -> object:
    if not isinstance(value, dict):
        return value
    return {k: _without_frame_locals(v) if k in ("stacktrace", "raw_stacktrace") else v
            for k, v in value.items()}


def grouping_key(config: str, event: Mapping[str, Any], tags: frozenset[str] | None,
                 reads_release: bool = True) -> bytes:
    """Everything of ``event`` the grouping of ``config`` can read, as bytes: events with
    one key group alike. ``tags``: the tag keys the rules can read (prefixes; None: all);
    an event's own fingerprint that names a tag makes every tag count. ``reads_release``:
    the rules read the release."""
    picked: dict[str, Any] = {k: event[k] for k in GROUPING_KEYS
                              if k in event and (reads_release or k != "release")}
    for key in ("exception", "threads", "stacktrace"):
        if key in picked:
            picked[key] = _without_frame_locals(picked[key])
    contexts = event.get("contexts")
    if isinstance(contexts, dict):
        picked["contexts"] = {k: contexts[k] for k in GROUPING_CONTEXTS if k in contexts}
    all_tags = tags is None or "tags." in str(event.get("fingerprint") or "")
    pairs = event.get("tags")
    if isinstance(pairs, list):
        picked["tags"] = pairs if all_tags else [
            p for p in pairs if isinstance(p, list) and p and isinstance(p[0], str)
            and any(p[0].startswith(t) for t in tags or ())]
    return config.encode() + b"\0" + orjson.dumps(picked, option=orjson.OPT_SORT_KEYS)


class GroupingMemo:
    """Grouping results by the digest of ``grouping_key``, at most ``max_entries`` (the
    oldest dropped), for one set of rules. Thread-safe: consumers group on several threads."""

    def __init__(self, tags: frozenset[str] | None, max_entries: int = DEFAULT_MEMO_ENTRIES,
                 reads_release: bool = True) -> None:
        self.tags = tags
        self.reads_release = reads_release
        self.max_entries = max_entries
        self._results: OrderedDict[bytes, GroupingResult] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_rules(cls, rules: GroupingRules | None, max_entries: int = DEFAULT_MEMO_ENTRIES
                  ) -> GroupingMemo:
        """A memo for a project's parsed rules (what they read, from their texts)."""
        texts = rule_texts(rules)
        return cls(referenced_tags(*texts), max_entries, rules_read_release(*texts))

    def group(self, event: Mapping[str, Any], config: str, rules: GroupingRules | None
              ) -> GroupingResult:
        if self.max_entries <= 0:
            return group_hashes_for_event(event, config, rules=rules)
        key = blake2b(grouping_key(config, event, self.tags, self.reads_release),
                      digest_size=16).digest()
        with self._lock:
            found = self._results.get(key)
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
        result = group_hashes_for_event(event, config, rules=rules)
        with self._lock:
            self._results[key] = result
            while len(self._results) > self.max_entries:
                self._results.popitem(last=False)
        return result
