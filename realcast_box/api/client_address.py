"""The client address of an HTTP request, through trusted reverse proxies.

Every part of the box that needs a client's address (rate limits, the audit
log, security events, chat and HLS viewer sessions) calls client_ip, so one
rule decides when X-Forwarded-For counts.

A proxy appends the address it received the request from to
X-Forwarded-For, and a client can put any value in front of it. So the
header counts only when the direct peer is in trusted_proxies, and then the
client is the right-most address that is not a trusted proxy itself.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from aiohttp import web

from realcast_box.appkeys import CONFIG
from realcast_box.config import IpNetwork, parse_trusted_proxies

FORWARDED_FOR = "X-Forwarded-For"
# Entries of X-Forwarded-For walked at most, from the right. A request
# passes a few proxies (a CDN edge, a load balancer, nginx). A longer run of
# trusted entries can only come from a client inside a trusted network, and
# walking the megabyte of them that aiohttp accepts took about a second.
MAX_FORWARDED_HOPS = 20


def client_ip(request: web.Request) -> str | None:
    """Return the client's IP address, or None when the peer address is unknown.

    Without trusted_proxies this is the peer address of the connection.
    """
    peer = request.remote
    networks = _trusted_networks(request.app[CONFIG].trusted_proxies)
    if peer is None or not networks:
        return peer
    return forwarded_client(peer, request.headers.getall(FORWARDED_FOR, ()), networks)


def forwarded_client(
    peer: str, header_values: Iterable[str], networks: tuple[IpNetwork, ...]
) -> str:
    """Return the client address that ``peer`` and its X-Forwarded-For name.

    ``header_values`` are the X-Forwarded-For headers in the order received
    (several headers form one list). Walking from the right, the first
    address outside ``networks`` is the client. An entry that is not an IP
    address stops the walk, and the last trusted hop before it is returned,
    because no later proxy vouches for anything left of it. The walk also
    stops after MAX_FORWARDED_HOPS entries, at the last one reached.
    """
    if not _is_trusted(peer, networks):
        return peer
    hops = [hop.strip() for value in header_values for hop in value.split(",")]
    client = peer
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        address = _parse_hop(hop)
        if address is None:
            return client
        client = address
        if not _is_trusted(address, networks):
            return address
    return client


@functools.lru_cache(maxsize=8)
def _trusted_networks(setting: str) -> tuple[IpNetwork, ...]:
    # load_config has already rejected invalid entries.
    return parse_trusted_proxies(setting)


def _is_trusted(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    """Return whether ``address`` is in one of ``networks``.

    An IPv4 address and its IPv4-mapped IPv6 form (::ffff:a.b.c.d) are the
    same client, so each matches a network written in either form.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    forms: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (ip,)
    if isinstance(ip, ipaddress.IPv4Address):
        forms = (ip, ipaddress.IPv6Address(f"::ffff:{ip}"))
    return any(
        form.version == network.version and form in network
        for form in forms
        for network in networks
    )


def _parse_hop(hop: str) -> str | None:
    """Return the IP address in one X-Forwarded-For entry, or None if it has none.

    Entries are plain addresses, but some proxies add a port ("192.0.2.1:443",
    "[2001:db8::1]:443"), which is dropped. An IPv4-mapped IPv6 address, as a
    dual-stack proxy writes IPv4 clients, is returned as its IPv4 address.
    """
    candidates = [hop]
    if hop.startswith("[") and "]" in hop:
        candidates = [hop[1 : hop.index("]")]]
    elif hop.count(":") == 1:
        candidates.append(hop.split(":", 1)[0])
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if (
            isinstance(address, ipaddress.IPv6Address)
            and address.ipv4_mapped is not None
        ):
            return str(address.ipv4_mapped)
        return str(address)
    return None
