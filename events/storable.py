"""What the hand-off can store (pure): the door check of every value ingest puts into an
item's queue metadata (item headers, the envelope's ``sent_at``, the client's name).

The queue (storage/queue.py) writes that metadata with orjson into a PostgreSQL ``jsonb``
column, in one COPY per hand-off batch that holds requests of every organization. A value
either of them refuses fails the whole COPY, so it is refused here, alone, with a 400 that
names the field. They refuse:

* a NUL character (``\\u0000``) in a string or a key: ``jsonb`` cannot hold it ("unsupported
  Unicode escape sequence", PostgreSQL's json.c);
* an integer outside -2^63 .. 2^64-1: orjson encodes 64-bit integers only;
* a lone surrogate (``"\\ud800"``, which Python's json decoder lets through): not UTF-8;
* nesting deeper than orjson's recursion limit (254 levels, of which the queue's metadata
  uses two): refused beyond ``MAX_DEPTH``.

Relay keeps item headers it does not know as they are; so does Crashray, within these rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from events.errors import UnstorableValue

__all__ = ["MAX_DEPTH", "MAX_INT", "MIN_INT", "check_storable", "check_storable_fields"]

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
#: Nesting levels a stored value may have: orjson stops at 254, the queue's metadata wraps
#: an item header in two (``meta`` → ``item_headers``); SDKs send flat headers.
MAX_DEPTH = 200

_ADVICE = {
    "NUL character": "the queue stores it as JSON in PostgreSQL (jsonb), which cannot hold a"
                     " NUL character (\\u0000); remove it",
    "integer above 64 bits": f"the queue's JSON holds integers from {MIN_INT} to {MAX_INT};"
                             " send larger numbers as strings",
    "lone surrogate": "a lone UTF-16 surrogate is not Unicode text; send well-formed UTF-8",
    "nesting": "send flatter values",
}


def check_storable(value: object, where: str) -> None:
    """Raise ``UnstorableValue`` naming ``where`` (and the path inside the value) when the
    queue could not store ``value``."""
    found = _first_problem(value, 1)
    if found is not None:
        path, problem, seen = found
        advice = _ADVICE.get(problem, _ADVICE["nesting"])
        raise UnstorableValue(f"{where}{path}: {problem}", [f"seen {seen}; {advice}"])


def check_storable_fields(fields: Mapping[str, object], where: str) -> None:
    """``check_storable`` for each field of a header object, named ``{where} "name"``."""
    for name, value in fields.items():
        check_storable(name, f"{where} name {_quoted(name)}")
        check_storable(value, f"{where} {_quoted(name)}")


def _first_problem(value: object, depth: int) -> tuple[str, str, str] | None:
    """(path inside the value, problem, the offending value shown), or None when storable;
    ``depth`` counts the objects and arrays around ``value``, itself included."""
    if isinstance(value, str):
        problem = _text_problem(value)
        return None if problem is None else ("", problem, _shown(value))
    if isinstance(value, bool) or not isinstance(value, int | dict | list):
        return None  # None, floats (orjson writes inf and nan as null) and booleans
    if isinstance(value, int):
        return None if MIN_INT <= value <= MAX_INT else ("", "integer above 64 bits", _shown(value))
    if depth > MAX_DEPTH:
        return "", f"nested deeper than {MAX_DEPTH} levels", f"more than {MAX_DEPTH} levels"
    entries = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in entries:
        step = f"[{_quoted(key)}]" if isinstance(key, str) else f"[{key}]"
        if isinstance(key, str) and (problem := _text_problem(key)) is not None:
            return step, problem, _shown(key)
        found = _first_problem(child, depth + 1)
        if found is not None:
            return step + found[0], found[1], found[2]
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogate"
    return None


def _quoted(name: str) -> str:
    """A name as a JSON string (ASCII, escapes visible), cut short."""
    return json.dumps(name[:60])


def _shown(value: object) -> str:
    text = json.dumps(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
