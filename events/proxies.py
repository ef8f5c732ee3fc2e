"""Which address a request comes from, when proxies stand between the client and us (pure).

Every proxy that forwards a request appends the address it received it from to
``X-Forwarded-For`` (MDN, RFC 7239 §5.2 for ``Forwarded``), so the list reads
``client, proxy1, proxy2`` and only the entries appended by proxies we trust are believed:
walking from the right, trusted hops are skipped and the first other address is the client.
Everything left of it may have been written by the client itself. This is what uvicorn's
``ProxyHeadersMiddleware`` and django-ipware (django-axes' ``AXES_IPWARE_PROXY_COUNT``) do;
the trust list is ``CRASHRAY_TRUSTED_PROXIES`` (cluster/settings.py).

A trusted entry is an address (``127.0.0.1``) or a network (``10.0.0.0/8``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(trusted: Sequence[str]) -> tuple[_Network, ...]:
    """The trust list parsed; each list once per process (it is a setting, and ingest asks
    for every request: parsing two entries cost ~10 µs a request)."""
    return _parsed_networks(tuple(trusted))


@functools.lru_cache(maxsize=16)
def _parsed_networks(trusted: tuple[str, ...]) -> tuple[_Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in trusted
                 if entry.strip())


def _is_trusted(host: str, networks: Sequence[_Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _host(entry: str) -> str:
    """An X-Forwarded-For entry without its port (``1.2.3.4:56``, ``[::1]:56``)."""
    entry = entry.strip()
    if entry.startswith("[") and "]" in entry:
        return entry[1:entry.index("]")]
    if entry.count(":") == 1:
        return entry.split(":", 1)[0]
    return entry


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """The client's address: ``peer`` (who connected to us) unless it is a trusted proxy,
    else the rightmost ``X-Forwarded-For`` entry not appended by a trusted proxy (if every
    entry is trusted, the leftmost: the client was a proxy itself)."""
    networks = _networks(trusted)
    if not forwarded_for or not _is_trusted(peer, networks):
        return peer
    hops = [_host(entry) for entry in forwarded_for.split(",") if entry.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            return hop
    return hops[0] if hops else peer
