"""Turning one accepted event item into a stored event: normalize, scrub, symbolicate,
tag, group.

Pure code (no Ray, no I/O): consumers call ``EventProcessor.process`` for every claimed
event item. Normalization and PII scrubbing are sentry-relay's own (``StoreNormalizer``,
``pii_strip_event``), so the stored event is what Sentry would store. A consumer that
has an artifact store passes a ``Symbolicator`` (events/symbolicate.py: source maps),
applied before grouping so that minified frames group by their original code. As Sentry's
``EventManager.save`` does, the standard tags are then derived (events/tags.py) before the
event is grouped (fingerprint rules such as ``tags.transaction:*`` see them), and the
event's ``title``, ``culprit``, ``location`` and ``metadata`` are written into the stored
event (``_materialize_metadata_many``), so the event API reads them from the event.

    events.errors.BadRequest
    └── InvalidEvent           the item is not an event Relay accepts; outcome "invalid"
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
import sentry_relay

from events.errors import BadRequest
from events.grouping import DEFAULT_GROUPING_CONFIG, GroupingResult
from events.grouping.rules import GroupingRules
from events.grouping_memo import DEFAULT_MEMO_ENTRIES, GroupingMemo
from events.issue_meta import IssueMetadata, issue_metadata_for_event
from events.ownership import Owner, OwnershipRules, event_facts, issue_owner
from events.pii_config import PrunablePiiConfig
from events.tags import event_tags

#: Relay's window for event timestamps (spec §4.4: MAX_SECS_IN_FUTURE/PAST).
MAX_SECS_IN_FUTURE = 60
MAX_SECS_IN_PAST = 30 * 24 * 3600


class InvalidEvent(BadRequest):
    """The payload cannot become an event; ``reason`` is the outcome reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


#: What SDKs write for "the address this event came from" (spec §4.6; the browser SDK
#: with ``sendDefaultPii``).
AUTO_IP = "{{auto}}"


def with_client_ip(event: dict[str, Any], client_ip: str | None) -> dict[str, Any]:
    """``{{auto}}`` in ``user.ip_address`` and ``request.env.REMOTE_ADDR`` replaced by the
    address ingest saw the event come from (spec §4.6: the peer, or what a trusted proxy
    saw), or removed when it saw none. sentry-relay's StoreNormalizer leaves both as they
    are; scrubbing runs afterwards, so a project that scrubs addresses still stores none."""
    user = event.get("user")
    if isinstance(user, dict) and user.get("ip_address") == AUTO_IP:
        derived = user.get("sentry_user") == f"ip:{AUTO_IP}"  # Relay's user key, from it
        user = {k: v for k, v in user.items()
                if k != "ip_address" and not (derived and k == "sentry_user")}
        if client_ip:
            user["ip_address"] = client_ip
            if derived:
                user["sentry_user"] = f"ip:{client_ip}"
        event = {**event, "user": user}
    request = event.get("request")
    env = request.get("env") if isinstance(request, dict) else None
    if isinstance(request, dict) and isinstance(env, dict) and env.get("REMOTE_ADDR") == AUTO_IP:
        env = {k: v for k, v in env.items() if k != "REMOTE_ADDR"}
        if client_ip:
            env["REMOTE_ADDR"] = client_ip
        event = {**event, "request": {**request, "env": env}}
    return event


@dataclass(frozen=True)
class ItemContext:
    """What ingest knew about the request that carried the item."""

    project_id: int
    key_id: int | None
    received_at: dt.datetime
    envelope_event_id: str | None = None
    client_ip: str | None = None
    sent_at: str | None = None
    client: str | None = None
    organization_id: int | None = None
    #: How far before ``received_at`` an event's timestamp may lie before Relay replaces it
    #: with ``received_at``: Relay's window for live events; ``crashray import`` widens it,
    #: as imported history keeps its own timestamps (pipelines/import_events.py).
    max_secs_in_past: int = MAX_SECS_IN_PAST


#: Resolves an event's stack traces (source maps; events/symbolicate.py) before it is
#: grouped: ``(event, project_id, organization_id) -> event``. It must return the event
#: unchanged when it has nothing to do, and never raise for a map it cannot apply (the
#: reason goes into the event's ``errors``).
Symbolicator = Callable[[dict[str, Any], int, int | None], dict[str, Any]]


@dataclass(frozen=True)
class ProcessedEvent:
    event_id: str
    event: Mapping[str, Any]
    grouping: GroupingResult
    issue: IssueMetadata
    timestamp: dt.datetime
    received: dt.datetime
    #: The event under the project's previous grouping version, during a transition.
    secondary_grouping: GroupingResult | None = None
    #: Who the project's ownership rules name for it (a new issue is assigned to them).
    owner: Owner | None = None

    def for_storage(self) -> ProcessedEvent:
        """The event with what storing reads only: its grouping results without their
        variants (the component trees; the grouping-info API groups the stored event
        again), about a third lighter to pickle for a job's write tasks."""
        secondary = self.secondary_grouping
        return replace(self, grouping=replace(self.grouping, variants={}),
                       secondary_grouping=None if secondary is None
                       else replace(secondary, variants={}))


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _as_given(value: bytes) -> bytes:
    """sentry-relay's ``json_dumps`` for arguments that are JSON already."""
    return value


@dataclass(frozen=True)
class ProjectGrouping:
    """How a project groups: its grouping config and rules, and during a version transition
    the previous config (``secondary_config``) until ``secondary_until``."""

    config: str = DEFAULT_GROUPING_CONFIG
    rules: GroupingRules | None = None
    secondary_config: str | None = None
    secondary_until: dt.datetime | None = None

    def secondary_at(self, now: dt.datetime) -> str | None:
        """The secondary config if the transition is still on at ``now``."""
        if self.secondary_config is None or self.secondary_until is None:
            return None
        return self.secondary_config if now < self.secondary_until else None


class EventProcessor:
    """Normalizes, scrubs and groups events; holds the per-project settings for that."""

    def __init__(self, symbolicator: Symbolicator | None = None,
                 grouping_memo_entries: int = DEFAULT_MEMO_ENTRIES) -> None:
        self._pii_configs: dict[int, PrunablePiiConfig | None] = {}
        #: Each project's grouping, with its grouping results by what grouping reads
        #: (events/grouping_memo.py; ``grouping_memo_entries`` each, 0: none): one entry, so
        #: a thread never groups with one project setting into the memo of another.
        self._grouping: dict[int, tuple[ProjectGrouping, GroupingMemo]] = {}
        self._memo_entries = grouping_memo_entries
        self._ownership: dict[int, OwnershipRules] = {}
        #: None: no symbolication (no artifact store configured); events stay as sent.
        self._symbolicator = symbolicator
        #: Seconds spent per stage since the last ``take_stage_seconds`` (the consumer
        #: reports them per batch as ``crashray_stage_seconds``; cluster/metrics.py).
        self._stage_seconds: dict[str, float] = {}
        #: ``process`` may run on several threads (``CRASHRAY_CONSUMER_THREADS``): the
        #: stage seconds, and the symbolicator (its map cache), are used under a lock each.
        self._stage_lock = threading.Lock()
        self._symbolicate_lock = threading.Lock()

    def set_grouping(self, project_id: int, grouping: ProjectGrouping) -> None:
        """Install a project's grouping; its memo is kept while the grouping is the same."""
        current = self._grouping.get(project_id)
        if current is None or current[0] != grouping:
            self._grouping[project_id] = (grouping, GroupingMemo.for_rules(
                grouping.rules, self._memo_entries))

    def grouping_memo(self, project_id: int) -> GroupingMemo:
        """The project's memo (a fresh one for a project with no settings installed)."""
        return self._project_grouping(project_id)[1]

    def _project_grouping(self, project_id: int) -> tuple[ProjectGrouping, GroupingMemo]:
        found = self._grouping.get(project_id)
        if found is None:
            memo = GroupingMemo.for_rules(None, self._memo_entries)
            found = self._grouping.setdefault(project_id, (ProjectGrouping(), memo))
        return found

    def set_ownership(self, project_id: int, rules: OwnershipRules) -> None:
        """Install a project's parsed ownership rules (events/ownership.py)."""
        self._ownership[project_id] = rules

    def set_scrubbing(self, project_id: int, datascrubbing: Mapping[str, Any]) -> None:
        """Install a project's legacy data-scrubbing options (Sentry's project settings)."""
        config = sentry_relay.convert_datascrubbing_config(  # type: ignore[attr-defined]
            dict(datascrubbing), json_dumps=_dumps, json_loads=orjson.loads)
        self._pii_configs[project_id] = PrunablePiiConfig(config) if config else None

    def take_stage_seconds(self) -> dict[str, float]:
        """Seconds spent per stage (normalize, scrub, symbolicate, group) since the last
        call, and start counting again."""
        with self._stage_lock:
            taken, self._stage_seconds = self._stage_seconds, {}
        return taken

    def _spent(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        with self._stage_lock:
            self._stage_seconds[stage] = self._stage_seconds.get(stage, 0.0) + now - started
        return now

    def process(self, payload: bytes, ctx: ItemContext) -> ProcessedEvent:
        started = time.perf_counter()
        parse_event_json(payload)  # refuse non-objects before Relay sees them
        # Relay reads the raw bytes itself: handing it a dict would re-encode the event
        # with the stdlib json module, which costs more than the normalization.
        normalized = with_client_ip(self._normalize(payload, ctx), ctx.client_ip)
        if ctx.envelope_event_id:
            # The envelope header's event_id takes precedence (spec §2.2).
            normalized["event_id"] = ctx.envelope_event_id
        started = self._spent("normalize", started)
        scrubbed = self._scrub(normalized, ctx.project_id)
        started = self._spent("scrub", started)
        if self._symbolicator is not None:
            # After Relay's normalization and scrubbing (Sentry symbolicates what Relay
            # forwarded), before tags and grouping: grouping sees the original frames.
            with self._symbolicate_lock:
                scrubbed = self._symbolicator(scrubbed, ctx.project_id, ctx.organization_id)
            started = self._spent("symbolicate", started)
        tagged = {**scrubbed, "tags": event_tags(scrubbed)}
        project, memo = self._project_grouping(ctx.project_id)
        grouping = memo.group(grouping_input(project.config, scrubbed, tagged),
                              project.config, project.rules)
        secondary_config = project.secondary_at(ctx.received_at)
        secondary = None if secondary_config is None else memo.group(
            grouping_input(secondary_config, scrubbed, tagged), secondary_config,
            project.rules)
        issue = issue_metadata_for_event(tagged)
        if grouping.title:  # a fingerprint rule's title="…" names the issue (§6.7)
            issue = replace(issue, title=grouping.title)
        rules = self._ownership.get(ctx.project_id)
        owner = issue_owner(rules, event_facts(tagged)) if rules and rules.rules else None
        self._spent("group", started)
        return ProcessedEvent(
            event_id=str(tagged["event_id"]),
            event={**tagged, **event_summary(issue)},
            grouping=grouping,
            issue=issue,
            timestamp=_from_unix(tagged.get("timestamp"), ctx.received_at),
            received=_from_unix(tagged.get("received"), ctx.received_at),
            secondary_grouping=secondary,
            owner=owner,
        )

    def _normalize(self, payload: bytes, ctx: ItemContext) -> dict[str, Any]:
        normalizer = sentry_relay.StoreNormalizer(  # type: ignore[attr-defined]
            project_id=ctx.project_id,
            client_ip=ctx.client_ip,
            client=ctx.client,
            key_id=None if ctx.key_id is None else str(ctx.key_id),
            protocol_version="7",
            received_at=ctx.received_at.isoformat(),
            sent_at=ctx.sent_at,
            max_secs_in_future=MAX_SECS_IN_FUTURE,
            max_secs_in_past=ctx.max_secs_in_past,
            enable_trimming=True,
            normalize_user_agent=True,
            remove_other=True,
            json_dumps=_dumps,
        )
        try:
            result: dict[str, Any] = normalizer.normalize_event(raw_event=payload,
                                                               json_loads=orjson.loads)
        except sentry_relay.RelayError as exc:  # type: ignore[attr-defined]
            raise InvalidEvent("invalid_data", f"sentry-relay rejected the event: {exc}") from exc
        return result

    def _scrub(self, event: dict[str, Any], project_id: int) -> dict[str, Any]:
        config = self._pii_configs.get(project_id)
        if config is None:
            return event  # scrubbing turned off for this project: Relay makes no config
        # Both given as JSON already: the event's is serialized once, and the configuration
        # is the project's without what cannot match this event (events/pii_config.py).
        event_json = orjson.dumps(event)
        scrubbed: dict[str, Any] = sentry_relay.pii_strip_event(  # type: ignore[attr-defined]
            config.json_for(event_json), event_json, json_dumps=_as_given,
            json_loads=orjson.loads)
        return scrubbed


#: Grouping versions frozen before tags were derived: they group the event with the tags
#: its client sent (their hashes must not change, e.g. v2's built-in hydration-error rule
#: matches on ``tags.transaction``); later versions see the derived tags, as Sentry's do.
UNTAGGED_GROUPING_CONFIGS = frozenset({"v1", "v2"})


def grouping_input(config: str, untagged: Mapping[str, Any], tagged: Mapping[str, Any]
                   ) -> Mapping[str, Any]:
    """The event a grouping version groups: see ``UNTAGGED_GROUPING_CONFIGS``."""
    return untagged if config in UNTAGGED_GROUPING_CONFIGS else tagged


def event_summary(issue: IssueMetadata) -> dict[str, Any]:
    """What Sentry writes into an event when it saves it (event_manager
    ``materialize_metadata``): ``title``, ``culprit``, ``metadata`` and ``location``, the
    crash frame's file of an error event and ``None`` otherwise (eventtypes
    ``ErrorEvent.get_location``/``BaseEvent.get_location``)."""
    location = issue.metadata.get("filename") if issue.type == "error" else None
    return {"title": issue.title, "culprit": issue.culprit, "location": location,
            "metadata": dict(issue.metadata)}


def parse_event_json(payload: bytes) -> dict[str, Any]:
    """The event object in an item payload; anything else is an invalid event."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"event payload is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise InvalidEvent("invalid_json",
                           f"event payload is a JSON {type(event).__name__}, not an object")
    return event


def _from_unix(value: object, default: dt.datetime) -> dt.datetime:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    return default
