"""``crashray grouping hash``: how one event groups, offline, under any project's rules.

    crashray grouping hash [--config vN] [--fingerprinting-rules FILE] [--enhancements FILE]
                           < event.json

Reads one event (JSON) on stdin and processes it as the consumers do (``EventProcessor``:
sentry-relay normalization, the default data scrubbing, the standard tags, grouping), with
the rules read from the files applied exactly as a project's settings "Fingerprint Rules"
(``fingerprinting_rules``) and "Stack Trace Rules" (``grouping_enhancements``) are (the same
``grouping_rules_from_text`` the consumers call)
and prints the grouping result as JSON: config, hashes (primary first), the variants with
their component trees, and the fingerprint rule that matched with its title.

Exit status 2, with a message naming the file, line and column, when a rule does not parse;
2 as well when a file cannot be read or stdin is not one JSON object (the CLI's runner,
cluster/cli_common.py, prints them). Imports nothing of Ray.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cluster.cli_common import CliError, command
from events.grouping import DEFAULT_GROUPING_CONFIG, GROUPING_CONFIGS


def add_parsers(sub: Any) -> None:
    """The ``grouping`` command and its ``hash`` sub-command, on ``crashray``'s sub-parsers."""
    grouping = sub.add_parser("grouping", help="grouping tools")
    gsub = grouping.add_subparsers(dest="grouping_command", required=True)
    hash_cmd = gsub.add_parser(
        "hash", help="print the grouping hashes of one event on stdin",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hash_cmd.add_argument("--config", default=DEFAULT_GROUPING_CONFIG,
                          choices=sorted(GROUPING_CONFIGS),
                          help=f"grouping config (default {DEFAULT_GROUPING_CONFIG})")
    hash_cmd.add_argument("--fingerprinting-rules", metavar="FILE", type=Path,
                          help="a project's fingerprint rules (Sentry's syntax)")
    hash_cmd.add_argument("--enhancements", metavar="FILE", type=Path,
                          help="a project's stack-trace rules (Sentry's syntax)")
    command(hash_cmd, cmd_grouping_hash)


def _rules_text(path: Path | None, option: str) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{option} {path}: cannot read it: {exc}") from exc


def _project_rules(args: argparse.Namespace) -> Any:
    """The rules as a project's consumer builds them from its two settings."""
    from events.grouping.fingerprint_rules import FingerprintRuleError, RuleSyntaxError
    from events.grouping.rules import grouping_rules_from_text

    fingerprint_text = _rules_text(args.fingerprinting_rules, "--fingerprinting-rules")
    stacktrace_text = _rules_text(args.enhancements, "--enhancements")
    try:
        return grouping_rules_from_text(fingerprint_text, stacktrace_text)
    except RuleSyntaxError as exc:
        is_fingerprint = isinstance(exc, FingerprintRuleError)
        path = args.fingerprinting_rules if is_fingerprint else args.enhancements
        kind = "fingerprint rule" if is_fingerprint else "stack-trace rule"
        raise CliError(
            f"{path}, line {exc.line}, column {exc.column}: {kind} does not parse: "
            f"{exc.problem}") from exc


def _event_from_stdin() -> dict[str, Any]:
    import orjson

    try:
        event = orjson.loads(sys.stdin.buffer.read())
    except orjson.JSONDecodeError as exc:
        raise CliError(f"stdin is not JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise CliError(
            f"stdin must be one JSON object (an event), not a JSON {type(event).__name__}")
    return event


def cmd_grouping_hash(args: argparse.Namespace) -> int:
    """The consumers' own processing of one event (sentry-relay normalization, the default
    data scrubbing, the standard tags, then grouping with the version and rules given), so
    the hashes printed are the ones a project with these settings would store."""
    import datetime as dt

    import orjson

    from events.process import EventProcessor, ItemContext, ProjectGrouping

    rules = _project_rules(args)  # a CliError: "crashray grouping hash: …", exit 2
    event = _event_from_stdin()
    processor = EventProcessor()
    processor.set_grouping(1, ProjectGrouping(args.config, rules))
    processed = processor.process(orjson.dumps(event), ItemContext(
        project_id=1, key_id=None, received_at=dt.datetime.now(dt.UTC)))
    sys.stdout.write(orjson.dumps(processed.grouping.to_json_dict()).decode() + "\n")
    return 0
