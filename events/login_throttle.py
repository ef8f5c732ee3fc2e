"""How long a login attempt must wait, given the failed logins before it (pure).

A hard per-username lockout lets anyone lock anyone out: five wrong passwords from
anywhere and the owner could not log in for the whole window. Instead:

* **this username from this address**: after ``free_failures`` failures within the window,
  each further attempt waits a delay that doubles from 1 s (1, 2, 4, … up to
  ``max_delay_s``) after the last failure. Only the address that failed is slowed.
* **this username from every address**: past ``address_failures`` failures within the
  window, the same doubling delay, but only for addresses that have themselves failed for
  this username: guessing from many addresses shares one slow lane, while the owner,
  logging in from an address that has not failed, is never held up by others.
* **this address, any usernames**: ``address_failures`` failures within the window refuse
  the address until the oldest of them has left the window (guessing many usernames).

Attempts refused here are not failures (they are not recorded), so a flood of them does not
push the delays further. IPv6 addresses count by their /64 network: one host usually holds
a whole /64 (RFC 4291 §2.5.1, interface identifiers), so rotating within it is no escape.

Upstream: Sentry limits each username to 10 attempts a minute (every attempt, hard; the
``auth:login:username:<md5>`` limit in src/sentry/api/endpoints/auth_login.py) and has an
optional per-address limit (``auth.ip-rate-limit``, off by default; web/forms/accounts.py).
django-axes locks out by address by default (``AXES_LOCKOUT_PARAMETERS = ["ip_address"]``,
``AXES_FAILURE_LIMIT = 3``) and offers the username/address pair, so that one address
failing does not lock the account for everyone (docs/4_configuration.rst).
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

#: Addresses of the same IPv6 network of this size count as one.
IPV6_PREFIX = 64
#: An address may fail this many times more often than one username from it before it is
#: refused: one address may be shared by several people (an office, a NAT).
ADDRESS_FAILURE_FACTOR = 4


@dataclass(frozen=True)
class LoginLimits:
    free_failures: int = 5
    address_failures: int = 5 * ADDRESS_FAILURE_FACTOR
    window_s: float = 300.0
    max_delay_s: float = 60.0

    @classmethod
    def of(cls, max_failures: int, window_s: float, max_delay_s: float) -> LoginLimits:
        """From the settings (``CRASHRAY_LOGIN_MAX_FAILURES`` and its neighbours)."""
        return cls(max_failures, max_failures * ADDRESS_FAILURE_FACTOR, window_s,
                   max_delay_s)


@dataclass(frozen=True)
class RecentFailures:
    """Failed logins within the window, and how long ago (seconds) the relevant one was."""

    pair: int = 0
    pair_last_ago_s: float = 0.0
    username: int = 0
    username_last_ago_s: float = 0.0
    address: int = 0
    address_oldest_ago_s: float = 0.0


def address_key(address: str) -> str:
    """What failures are counted by: the address, or an IPv6 address's /64 network."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/{IPV6_PREFIX}", strict=False))
    return str(parsed)


def delay_s(failures: int, free: int, max_delay_s: float) -> float:
    """The delay after ``failures`` failures of which ``free`` cost nothing: 0 below
    ``free``, then 1 s doubling with each one, at most ``max_delay_s``."""
    if failures < free:
        return 0.0
    return min(2.0 ** min(failures - free, 62), max_delay_s)


def wait_s(recent: RecentFailures, limits: LoginLimits) -> int:
    """Whole seconds this attempt must wait (0: it may be tried now)."""
    waits = [0.0]
    if recent.address >= limits.address_failures:
        waits.append(limits.window_s - recent.address_oldest_ago_s)
    waits.append(delay_s(recent.pair, limits.free_failures, limits.max_delay_s)
                 - recent.pair_last_ago_s)
    if recent.pair > 0:
        waits.append(delay_s(recent.username, limits.address_failures, limits.max_delay_s)
                     - recent.username_last_ago_s)
    return max(0, math.ceil(max(waits)))
