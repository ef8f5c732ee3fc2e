"""``crashray grouping hash`` run as a subprocess (``python -m cluster.cli``): rules from files
applied as a project's settings are, errors naming file, line and column. No Ray: the command
imports none of it (checked below), so these are unit tests."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from events.grouping import DEFAULT_GROUPING_CONFIG, group_hashes_for_event
from events.grouping.rules import grouping_rules_from_text
from tests.unit.grouping.helpers import normalize

REPO = Path(__file__).resolve().parents[3]

EVENT: dict[str, Any] = {
    "platform": "python",
    "exception": {"values": [{"type": "DatabaseError", "value": "connection 5 lost",
                              "stacktrace": {"frames": [
                                  {"module": "vendor.pool", "function": "acquire",
                                   "in_app": True},
                                  {"module": "shop.orders", "function": "save",
                                   "in_app": True}]}}]},
}
FINGERPRINT_RULES = 'type:DatabaseError -> database-failure title="Database trouble"\n'
STACKTRACE_RULES = "# vendored code is not ours\nmodule:vendor.* -group\n"


def crashray_grouping_hash(*args: str, stdin: str = json.dumps(EVENT)
                           ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cluster.cli", "grouping", "hash", *args],
                          input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=env, check=False)


def rules_file(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_importing_the_cli_does_not_import_ray() -> None:
    probe = "import sys, cluster.cli; cluster.cli.build_parser(); print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            check=True)
    assert result.stdout.strip() == "False"


def test_without_rules_it_prints_the_default_grouping() -> None:
    result = crashray_grouping_hash()
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    expected = group_hashes_for_event(normalize(EVENT))
    assert output["config"] == DEFAULT_GROUPING_CONFIG
    assert output["hashes"] == list(expected.hashes)


def test_fingerprint_rules_file_is_applied_with_its_title(tmp_path: Path) -> None:
    result = crashray_grouping_hash(
        "--fingerprinting-rules", rules_file(tmp_path, "fingerprints.txt", FINGERPRINT_RULES))
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["hashes"] == [hashlib.md5(b"database-failure").hexdigest()]
    assert output["fingerprintRule"] == FINGERPRINT_RULES.strip()
    assert output["title"] == "Database trouble"
    assert output["fingerprintRuleBuiltin"] is False


@pytest.mark.parametrize("config", ["v1", "v2", "v3"])
def test_rules_group_as_a_projects_consumer_would(tmp_path: Path, config: str) -> None:
    """Same parsing (``grouping_rules_from_text``, what the consumers call with a project's
    two settings) and same application (``group_hashes_for_event``)."""
    result = crashray_grouping_hash(
        "--config", config,
        "--enhancements", rules_file(tmp_path, "enhancements.txt", STACKTRACE_RULES))
    assert result.returncode == 0, result.stderr
    rules = grouping_rules_from_text("", STACKTRACE_RULES)
    consumer = group_hashes_for_event(normalize(EVENT), config, rules=rules)
    output = json.loads(result.stdout)
    assert output["config"] == config
    assert output["hashes"] == list(consumer.hashes)
    assert output["hashes"] != list(group_hashes_for_event(normalize(EVENT), config).hashes)
    frames = output["variants"]["app"]["component"]["values"][0]["values"][0]["values"]
    assert [f["contributes"] for f in frames] == [False, True]


def test_a_fingerprint_rule_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "fingerprints.txt", FINGERPRINT_RULES + 'message:"x" ->\n')
    result = crashray_grouping_hash("--fingerprinting-rules", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{path}, line 2, column 15: fingerprint rule does not parse" in result.stderr


def test_a_stacktrace_rule_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "enhancements.txt", STACKTRACE_RULES + "function:x +frobnicate\n")
    result = crashray_grouping_hash(
        "--fingerprinting-rules", rules_file(tmp_path, "fingerprints.txt", FINGERPRINT_RULES),
        "--enhancements", path)
    assert result.returncode == 2
    assert f"{path}, line 3, column 12: stack-trace rule does not parse" in result.stderr
    assert "unknown action '+frobnicate'" in result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("--enhancements", "/nonexistent/rules.txt"), json.dumps(EVENT),
         "--enhancements /nonexistent/rules.txt: cannot read it"),
        ((), "{not json", "stdin is not JSON"),
        ((), "[1, 2]", "stdin must be one JSON object (an event), not a JSON list"),
        (("--config", "v9"), json.dumps(EVENT), "invalid choice: 'v9'"),
    ],
)
def test_bad_input_exits_2_saying_what_was_wrong(args: tuple[str, ...], stdin: str,
                                                 message: str) -> None:
    result = crashray_grouping_hash(*args, stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr
