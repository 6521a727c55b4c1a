"""Callback URLs are user input: never let them reach internal addresses.

At send time the host is resolved and every address must be public
(`is_global`, after unwrapping IPv4-mapped and NAT64 IPv6 forms). For plain
http the request then goes to the checked IP itself (Host header kept), so a
DNS answer that changes between check and connect (rebinding) cannot
redirect it. For https the TLS handshake needs the hostname, so the
connection resolves again: a rebinding attacker with a valid certificate for
their own name could still win that race; put the senders behind an egress
proxy where that matters. Attempts share one client whose pool keeps
connections alive (client.py): the check still runs before every attempt,
an http connection is keyed by the checked IP, and an https one may have
been opened by an earlier attempt a few seconds before, to the address its
own lookup found then. Redirects are never followed.
AGENTOS_WEBHOOK_ALLOW_PRIVATE=1 lifts the guard for local development.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_EXTRA_BLOCKED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10")]


class BlockedAddress(Exception):
    pass


def private_allowed() -> bool:
    return bool(settings.AGENTOS_WEBHOOK_ALLOW_PRIVATE)


def _unwrap(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(raw: str) -> bool:
    address = _unwrap(ipaddress.ip_address(raw.split("%")[0]))
    if any(address in network for network in _EXTRA_BLOCKED if network.version == address.version):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def resolve_checked(url: str) -> tuple[str, dict[str, str]]:
    """The URL to connect to and the headers to add, or BlockedAddress."""
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError as exc:  # a broken IPv6 host, a port out of range
        raise BlockedAddress(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise BlockedAddress(f"not an http(s) URL: {url!r}")
    if private_allowed():
        return url, {}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedAddress(f"cannot resolve {host}: {exc}") from exc
    addresses = sorted({info[4][0] for info in infos})
    refused = [a for a in addresses if not is_public(a)]
    if not addresses or refused:
        raise BlockedAddress(f"{host} resolves to a non-public address ({', '.join(refused or addresses)})")
    if parts.scheme == "https":
        return url, {}
    pinned = addresses[0]
    netloc = f"[{pinned}]" if ":" in pinned else pinned
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), {"Host": parts.netloc}
