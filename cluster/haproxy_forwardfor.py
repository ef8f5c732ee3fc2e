"""Serve's HAProxy, told to append the client's address to ``X-Forwarded-For``.

Ray Serve (2.60, ``RAY_SERVE_ENABLE_HA_PROXY=1``) renders its HAProxy configuration from
``ray/serve/_private/haproxy_templates.py``, which has no ``option forwardfor``: HAProxy
passes a client's own ``X-Forwarded-For`` through unchanged and adds nothing, and every
request reaches a replica from HAProxy's address (127.0.0.1). A replica therefore cannot
know who connected: without this, the client chooses its own address by sending the
header, and clients that do not all share 127.0.0.1.

Serve starts HAProxy through ``RAY_SERVE_HAPROXY_BINARY_PATH`` when it is set
(``_resolve_haproxy_binary``), so ``cluster/runtime.py`` points it at a small shell script
that runs this file with the real binary: it copies the configuration Serve wrote, adds
``option forwardfor`` to its ``defaults`` section (HAProxy then appends the address it
received the connection from, after any the client sent), and runs HAProxy on the copy with
the same arguments. Serve's reloads (``-sf``) come through here too.

Standalone (stdlib only): HAProxy is started by Serve's HAProxy manager actor, whose
``sys.path`` need not include Crashray.
"""

from __future__ import annotations

import os
import sys

#: Added to the ``defaults`` section: every HTTP frontend appends the peer address.
FORWARDFOR = "    option forwardfor"
SUFFIX = ".forwardfor"


def with_forwardfor(config: str) -> str:
    """The configuration with ``option forwardfor`` as the first line of its first
    ``defaults`` section; unchanged when it is already there."""
    lines = config.split("\n")
    if FORWARDFOR in lines:
        return config
    for index, line in enumerate(lines):
        if line.strip() == "defaults":
            return "\n".join([*lines[:index + 1], FORWARDFOR, *lines[index + 1:]])
    raise ValueError("the HAProxy configuration has no defaults section")


def rewritten_arguments(arguments: list[str]) -> list[str]:
    """The arguments with each ``-f <file>`` replaced by the file's forwardfor copy, which
    is written next to it."""
    result = list(arguments)
    for index, argument in enumerate(arguments[:-1]):
        if argument == "-f":
            source = arguments[index + 1]
            with open(source, encoding="utf-8") as original:
                text = with_forwardfor(original.read())
            with open(source + SUFFIX, "w", encoding="utf-8") as copy:
                copy.write(text)
            result[index + 1] = source + SUFFIX
    return result


def main(argv: list[str]) -> None:
    real_binary, *arguments = argv
    os.execv(real_binary, [real_binary, *rewritten_arguments(arguments)])


if __name__ == "__main__":
    main(sys.argv[1:])
