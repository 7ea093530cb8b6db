"""The client's address: the connecting peer's, or what a trusted proxy says in X-Forwarded-For.

X-Forwarded-For is whatever the client wrote, with each proxy appending the address it saw.
Read from the right, every hop up to the first one not in ``FASHION_TRUSTED_PROXIES`` was
added by a proxy we trust; that first one is the client. Anything that is not an IP address
ends the walk, so no client-written text reaches a log line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

_FORWARDED_FOR = b"x-forwarded-for"
_MAX_HOPS = 16  # a proxy chain is a few hops; a longer header is a client's invention

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientAddress:
    """Finds a request's client address, trusting X-Forwarded-For only from ``trusted`` peers."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(t, strict=False) for t in trusted)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def of(self, peer: str | None, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The client's address for a request from ``peer`` carrying ``headers``."""
        if peer is None or not self.networks or not self._trusted(peer):
            return peer
        hops = [
            hop.strip()
            for name, value in headers
            if name == _FORWARDED_FOR
            for hop in value.decode("latin-1").split(",")
        ]
        client = peer
        for hop in reversed(hops[-_MAX_HOPS:]):
            try:
                client = str(ipaddress.ip_address(hop))
            except ValueError:
                break  # not an address: the walk stops at the last hop we could trust
            if not self._trusted(client):
                break
        return client
