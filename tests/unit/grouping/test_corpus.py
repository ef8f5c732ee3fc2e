"""Real SDK events from the corpus, grouped after Relay normalisation.

The expected values are listed by hand from the frames of each envelope (see the corpus files)
and the §6.5 rules, so a change in what contributes shows up here first.
"""

from __future__ import annotations

import hashlib

import pytest

from events.grouping import group_hashes_for_event
from events.issue_meta import issue_metadata_for_event
from tests.unit.grouping.helpers import CORPUS_DIR, corpus_event, normalize

PYTHON = "python-sdk-2.75.0-exception.envelope"
NODE = "node-sdk-11.12.0-exception.envelope"
NODE_BIG = "node-sdk-11.12.0-exception-44k.envelope"

# Python SDK: all three frames in-app, module "__main__" wins over filename, context lines count.
PYTHON_APP_VALUES = [
    "__main__", "<module>", "try: handle([1, 2, 3])",
    "__main__", "handle", "return compute_ratio(sum(payload), 0)",
    "__main__", "compute_ratio", "def compute_ratio(n, d): return n / d",
    "ZeroDivisionError",
]
# Node SDK, in-app frames: "Object.?" trims to the junk name "?"; Relay drops the bare "?"
# function; module beats filename; context lines count for node.
NODE_APP_FRAMES = [
    "node_client", "})();",
    "node_client",
    'try { handle([1, 2, 3]); } catch (e) { console.log("event_id", Sentry.captureException(e)); }',
    "node_client", "handle",
    "function handle(payload) { return computeRatio(payload.reduce((a, b) => a + b, 0), 0); }",
    "node_client", "computeRatio",
    'function computeRatio(n, d) { if (d === 0) throw new Error("denominator must not be zero");'
    " return n / d; }",
]
# Node internals (in_app false): only in the system variant; functions cut after the last ".".
NODE_SYSTEM_PREFIX = [
    "run_main_module",
    "run_main", "executeUserEntryPoint [as runMain]",
    "loader", "_load",
    "loader", "load",
    "loader", "js",
    "loader", "_compile",
]


def _md5(values: list[str]) -> str:
    return hashlib.md5("".join(values).encode("utf-8")).hexdigest()


def test_corpus_dir_found() -> None:
    assert (CORPUS_DIR / PYTHON).is_file()


def test_python_sdk_event_app_hash_is_in_app_frames_plus_type() -> None:
    result = group_hashes_for_event(normalize(corpus_event(PYTHON)))
    app = result.variants["app"]
    assert list(app.component.iter_values()) == PYTHON_APP_VALUES
    assert app.hash == _md5(PYTHON_APP_VALUES)
    # Every frame is in-app, so system equals app and the hash list holds it once.
    assert result.variants["system"].hash == app.hash
    assert result.hashes == (app.hash,)


def test_node_sdk_event_app_and_system_hashes() -> None:
    result = group_hashes_for_event(normalize(corpus_event(NODE)))
    app_values = [*NODE_APP_FRAMES, "Error"]
    system_values = [*NODE_SYSTEM_PREFIX, *NODE_APP_FRAMES, "Error"]
    assert list(result.variants["app"].component.iter_values()) == app_values
    assert list(result.variants["system"].component.iter_values()) == system_values
    assert result.hashes == (_md5(app_values), _md5(system_values))


@pytest.mark.parametrize("name", [PYTHON, NODE, NODE_BIG])
def test_corpus_grouping_is_stable_and_ignores_event_identity(name: str) -> None:
    event = corpus_event(name)
    first = group_hashes_for_event(normalize(event))
    other = dict(event, event_id="0" * 32, timestamp=1_700_000_000, release="other@2")
    assert group_hashes_for_event(normalize(other)).hashes == first.hashes


@pytest.mark.parametrize("name", [PYTHON, NODE, NODE_BIG])
def test_corpus_exception_value_does_not_change_hash(name: str) -> None:
    """§6.5: the value is ignored when the stack trace contributes."""
    event = corpus_event(name)
    event["exception"]["values"][-1]["value"] = "a completely different message"
    assert (group_hashes_for_event(normalize(event)).hashes
            == group_hashes_for_event(normalize(corpus_event(name))).hashes)


def test_python_sdk_issue_metadata() -> None:
    meta = issue_metadata_for_event(normalize(corpus_event(PYTHON)))
    assert meta.type == "error"
    assert meta.title == "ZeroDivisionError: division by zero"
    assert meta.culprit == "__main__ in compute_ratio"
    assert meta.metadata == {
        "type": "ZeroDivisionError",
        "value": "division by zero",
        "filename": "py_client.py",
        "function": "compute_ratio",
    }


def test_node_sdk_issue_metadata() -> None:
    meta = issue_metadata_for_event(normalize(corpus_event(NODE)))
    assert meta.type == "error"
    assert meta.title == "Error: denominator must not be zero"
    assert meta.culprit == "computeRatio(node_client)"
    assert meta.metadata == {
        "type": "Error",
        "value": "denominator must not be zero",
        "filename": "/srv/app/node_client.js",
        "function": "computeRatio",
    }


def test_node_sdk_anonymous_crash_frame_culprit_uses_question_mark() -> None:
    """The 44k event crashes in an anonymous arrow function (Relay drops its "?" name)."""
    meta = issue_metadata_for_event(normalize(corpus_event(NODE_BIG)))
    assert meta.title == "Error: big event"
    assert meta.culprit == "?(node_client_big)"
    # Metadata skips frames without a function: the crash frame there is "Object.?".
    assert meta.metadata["function"] == "Object.?"
