"""Sentry's standard tags of an event, derived when the event is processed (pure).

Sentry indexes more than the tags an SDK sends: when it saves an event it adds tags taken
from the event's attributes, its user, its request and its interfaces
(``src/sentry/event_manager.py``: ``_pull_out_data``, ``_get_or_create_release_many``,
``_get_event_user_many``, ``_derive_plugin_tags_many``, ``_derive_interface_tags_many``).
``event_tags`` does the same on a Relay-normalized event, in Sentry's order and with
Sentry's precedence (``set_tag`` replaces a tag of the same key, a tag plugin never does)::

    tag                     taken from                                   a client tag of that key
    level                   ``level`` (always)                           is replaced
    logger, environment,    the attribute, when it is not empty          is replaced
    transaction
    release                 ``release``                                  (Relay drops it)
    dist                    ``dist``, only with a release                (Relay drops it)
    user                    ``user``: ``id:…``, else ``username:…``,     (Relay drops it)
                            ``email:…``, ``ip:…`` (a valid address only)
    url                     ``request.url``; left out over 200 chars     wins (Sentry's "urls"
                                                                         tag plugin)
    browser, os, runtime,   contexts, by their type (CONTEXT_TAGS):      is replaced
    device, …               ``"{name} {version}"``, ``name``, …
    mechanism, handled      the first exception's mechanism: its type,   is replaced
                            ``yes``/``no``
    server_name, site       Relay has already moved these attributes into the tags

Sentry stores ``release``, ``dist`` and ``user`` under ``sentry:release`` etc. and shows
them without the prefix (``tagstore`` standardized keys); Crashray stores the key shown. A
client tag ``sentry:user`` (Relay keeps it) is read as ``user`` for the same reason.

Limits are Relay's for client tags (spec §4.5, ``MaxChars::TagKey``/``TagValue``): a
derived value over 200 characters is cut to 200 (197 + ``...``, as Relay cuts a client
value and Sentry's ``set_tag`` trims); a value containing a newline, or a key that is not
1-200 characters of ``[A-Za-z0-9_.:-]`` (a context's name can be anything), is not derived
(any client tag of that key stays).

The client's list keeps its order and its entries, including those Relay replaced by
``null`` (their ``_meta.tags`` entries are indexed by position): a derived tag replaces the
value of an existing key in place and a new key is appended.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final, TypeAlias

from events.issue_meta import truncatechars

MAX_TAG_KEY_CHARS: Final = 200  # Relay MaxChars::TagKey (spec §4.5)
MAX_TAG_VALUE_CHARS: Final = 200  # Relay MaxChars::TagValue (spec §4.5)
_TAG_KEY: Final = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_TAG_KEY_CHARS}}}")

#: Tags of a context by its ``type``: (suffix, fields). The tag is the context's name plus
#: ``.suffix`` (just the name for ``""``), its value the fields joined by a space; a context
#: missing one of the fields gives no such tag. Sentry's ``ContextType.context_to_tag_mapping``
#: (src/sentry/interfaces/contexts.py), where ``"{name} {version}"`` is the format.
CONTEXT_TAGS: Final[Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    "app": (("device", ("device_app_hash",)),),
    "device": (("", ("model",)), ("family", ("family",))),
    "runtime": (("", ("name", "version")), ("name", ("name",))),
    "browser": (("", ("name", "version")), ("name", ("name",))),
    "os": (("", ("name", "version")), ("name", ("name",)), ("rooted", ("rooted",))),
    "gpu": (("name", ("name",)), ("vendor", ("vendor_name",))),
    "monitor": (("id", ("id",)), ("slug", ("slug",))),
}

#: Sentry's user-tag keywords in priority order (src/sentry/utils/eventuser.py KEYWORD_MAP:
#: "the order of these keys is significant").
USER_TAG_FIELDS: Final = (("id", "id"), ("username", "username"), ("email", "email"),
                          ("ip_address", "ip"))

#: Internal keys Sentry stores with a ``sentry:`` prefix and shows without it.
_STANDARDIZED: Final = {"sentry:release": "release", "sentry:dist": "dist",
                        "sentry:user": "user"}

TagPair: TypeAlias = list[str | None]


def event_tags(event: Mapping[str, Any]) -> list[TagPair]:
    """The event's tags as Sentry stores them: the client's (after Relay) with Sentry's
    standard tags added (see the module docstring). Never raises on odd shapes."""
    tags = _client_tags(event.get("tags"))
    for key, value in _attribute_tags(event):
        _set(tags, key, value)
    user = user_tag_value(event.get("user"))
    if user is not None:
        _set(tags, "user", user)
    url = _request_url(event)
    if url is not None and _index(tags, "url") is None:
        _set(tags, "url", url)
    for key, value in (*_context_tags(event.get("contexts")),
                       *_mechanism_tags(event.get("exception"))):
        _set(tags, key, value)
    return tags


def user_tag_value(user: object) -> str | None:
    """Sentry's ``sentry:user`` value: the first of ``id:…``, ``username:…``, ``email:…``,
    ``ip:…`` that the user has (an ``ip_address`` that is not an IP address, such as an
    unresolved ``{{auto}}``, does not count: event_manager ``_get_event_user_impl``)."""
    if not isinstance(user, Mapping):
        return None
    for field, keyword in USER_TAG_FIELDS:
        value = _text(user.get(field))
        if value and (field != "ip_address" or _is_ip(value)):
            return f"{keyword}:{value}"
    return None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _client_tags(raw: object) -> list[TagPair]:
    """A copy of Relay's ``[[key, value], ...]`` (a mapping is taken too), ``sentry:``
    internal keys standardized; entries that are not pairs are dropped."""
    pairs: list[Any] = list(raw.items()) if isinstance(raw, Mapping) else (
        raw if isinstance(raw, list) else [])
    tags: list[TagPair] = []
    for pair in pairs:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            key, value = pair
            key = _STANDARDIZED.get(key, key) if isinstance(key, str) else None
            tags.append([key, value if isinstance(value, str) else _text(value)])
    return tags


def _attribute_tags(event: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """level (always), logger/environment/transaction when set (``_pull_out_data``), release
    and, with a release, dist (``_get_or_create_release_many``)."""
    yield "level", _text(event.get("level")) or "error"  # Relay defaults level to error
    for attribute in ("logger", "environment", "transaction"):
        value = _text(event.get(attribute))
        if value:
            yield attribute, value
    release = _text(event.get("release"))
    if release:
        yield "release", release
        dist = _text(event.get("dist"))
        if dist:
            yield "dist", dist


def _request_url(event: Mapping[str, Any]) -> str | None:
    """``request.url`` (Relay has split off the query string), if it fits a tag: Sentry's
    ``TagPlugin.get_tags`` leaves longer values out rather than cutting them."""
    request = event.get("request")
    url = _text(request.get("url")) if isinstance(request, Mapping) else None
    return url if url and len(url) <= MAX_TAG_VALUE_CHARS else None


def _context_tags(contexts: object) -> Iterator[tuple[str, str]]:
    if not isinstance(contexts, Mapping):
        return
    for name, context in contexts.items():
        if not isinstance(name, str) or not isinstance(context, Mapping):
            continue
        kind = context.get("type", name)
        for suffix, fields in CONTEXT_TAGS.get(kind if isinstance(kind, str) else "", ()):
            value = _joined(context, fields)
            if value:
                yield (f"{name}.{suffix}" if suffix else name), value


def _joined(context: Mapping[str, Any], fields: tuple[str, ...]) -> str | None:
    """The fields joined by a space and stripped (Sentry's ``format_index_expr``); ``None``
    when one is missing (Sentry drops ``None`` and ``""`` fields: a KeyError, no tag)."""
    parts = []
    for field in fields:
        part = _text(context.get(field))
        if not part:
            return None
        parts.append(part)
    return " ".join(parts).strip()


def _mechanism_tags(exception: object) -> Iterator[tuple[str, str]]:
    """``mechanism`` and ``handled`` of the first exception's mechanism (Sentry's
    ``Exception.iter_tags`` reads ``values[0]``, the oldest of a chain)."""
    values = exception.get("values") if isinstance(exception, Mapping) else exception
    first = values[0] if isinstance(values, list) and values else None
    mechanism = first.get("mechanism") if isinstance(first, Mapping) else None
    if not isinstance(mechanism, Mapping) or not mechanism:
        return
    kind = _text(mechanism.get("type"))
    if kind:
        yield "mechanism", kind
    handled = mechanism.get("handled")
    if isinstance(handled, bool):
        yield "handled", "yes" if handled else "no"


def _text(value: object) -> str | None:
    """A scalar as Sentry's tag formatting writes it (``True`` → ``yes``), else ``None``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return None


def _index(tags: list[TagPair], key: str) -> int | None:
    return next((n for n, pair in enumerate(tags) if pair[0] == key), None)


def _set(tags: list[TagPair], key: str, value: str) -> None:
    """Sentry's ``set_tag``: the derived value replaces the key's value, in place; a key or
    value that Relay would refuse as a tag is not derived (see the module docstring)."""
    if not value or "\n" in value or not _TAG_KEY.fullmatch(key):
        return
    value = truncatechars(value, MAX_TAG_VALUE_CHARS)
    at = _index(tags, key)
    if at is None:
        tags.append([key, value])
    else:
        tags[at] = [key, value]
