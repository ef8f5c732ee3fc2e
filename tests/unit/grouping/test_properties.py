"""Property test: grouping never raises on whatever shape Relay lets through."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.grouping import GROUPING_CONFIGS, group_hashes_for_event
from events.issue_meta import issue_metadata_for_event
from tests.unit.grouping.helpers import normalize

_scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=30)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_frame_keys = st.sampled_from([
    "function", "raw_function", "module", "filename", "abs_path", "context_line", "in_app",
    "platform", "lineno", "colno", "package", "data",
])
_frames = st.lists(st.dictionaries(_frame_keys, _json, max_size=6), max_size=5)
_mechanism = st.dictionaries(
    st.sampled_from(["type", "synthetic", "exception_id", "parent_id", "is_exception_group", "meta"]),
    _json | st.integers(0, 3) | st.booleans(), max_size=5,
)
_exception = st.fixed_dictionaries({}, optional={
    "type": _json, "value": _json, "mechanism": _mechanism | _json,
    "stacktrace": st.fixed_dictionaries({"frames": _frames}) | _json,
})
_event_keys = {
    "platform": st.sampled_from(["python", "javascript", "node", "java", "ruby", "php", "native"])
    | _json,
    "exception": st.fixed_dictionaries({"values": st.lists(_exception, max_size=4)}) | _json,
    "threads": st.lists(st.fixed_dictionaries({}, optional={
        "crashed": _json, "current": _json, "stacktrace": st.fixed_dictionaries({"frames": _frames}),
    }), max_size=3) | _json,
    "stacktrace": st.fixed_dictionaries({"frames": _frames}) | _json,
    "logentry": _json, "message": _json, "fingerprint": st.lists(_json, max_size=4) | _json,
    "tags": _json, "transaction": _json, "checksum": _json, "level": _json, "logger": _json,
    "culprit": _json, "request": _json, "sdk": _json,
}
_events = st.fixed_dictionaries({}, optional=_event_keys) | st.dictionaries(
    st.text(max_size=12), _json, max_size=6)


@pytest.mark.parametrize("config", sorted(GROUPING_CONFIGS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_events)
def test_grouping_never_raises_on_normalized_events(config: str, raw: dict[str, Any]) -> None:
    event = normalize(raw)
    result = group_hashes_for_event(event, config)
    assert result.hashes
    assert all(len(h) <= 128 for h in result.hashes)
    assert result.to_json_dict()["config"] == config
    meta = issue_metadata_for_event(event)
    assert meta.type in {"error", "default"}
    assert len(meta.culprit) <= 200


@pytest.mark.parametrize("config", sorted(GROUPING_CONFIGS))
@settings(max_examples=200, deadline=None)
@given(raw=_events)
def test_grouping_never_raises_on_raw_unnormalized_shapes(config: str, raw: dict[str, Any]
                                                          ) -> None:
    """Even without Relay in front, odd shapes are skipped rather than raising."""
    assert group_hashes_for_event(raw, config).hashes
    issue_metadata_for_event(raw)
