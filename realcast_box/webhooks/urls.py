"""Webhook URL checks: the form of the URL and the deny list of addresses.

A box lives on a LAN, so loopback and private receivers are allowed. What
the deny list (the webhook_deny_list setting) names is rejected: by default
link-local addresses and cloud metadata services.

A URL is checked when it is saved and before every attempt. The API also
resolves a host name and rejects it when it resolves to a denied address.
Every connection of the webhook client goes through ``DenyListResolver``,
which fails on denied addresses after DNS. So a name whose records change
after the check (DNS rebinding) cannot reach them either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

MAX_URL_LENGTH = 2048
# Seconds a host name lookup may take when a URL is saved.
RESOLVE_TIMEOUT = 3.0

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DeniedAddressError(OSError):
    """A webhook host resolved to an address on the deny list."""


@dataclass(frozen=True)
class DenyList:
    """Networks and host names that webhooks may not reach."""

    networks: tuple[IpNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> DenyList:
        """Parse a comma-separated list of IP networks, addresses and host names.

        Raises ValueError naming an entry that is neither an address nor a
        valid host name.
        """
        networks: list[IpNetwork] = []
        hosts: set[str] = set()
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not name or not all(
                character.isalnum() or character in "-." for character in name
            ):
                raise ValueError(
                    f"invalid deny list entry {entry!r}: expected an IP network"
                    " (169.254.0.0/16), an IP address or a host name"
                )
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def denies_address(self, address: IpAddress) -> bool:
        # An IPv4-mapped IPv6 address (::ffff:169.254.169.254) reaches the
        # IPv4 address, so it is checked as that.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def denies_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts


def parse_ip(host: str) -> IpAddress | None:
    """Return ``host`` as an IP address, or None for a host name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str, deny_list: DenyList) -> URL:
    """Return the parsed URL, or raise ValueError saying what is wrong with it.

    The URL must be absolute http or https with a host, without user
    credentials or a fragment, and its host must not be on the deny list.
    """
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(character.isspace() or not character.isprintable() for character in url):
        raise ValueError("must not contain spaces or control characters")
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"invalid URL {url!r}: the scheme must be http or https")
    if not parsed.host:
        raise ValueError(f"invalid URL {url!r}: a host is required")
    if parsed.user is not None or parsed.password is not None:
        raise ValueError(
            "must not contain credentials: check the webhook signatures instead"
        )
    if parsed.fragment:
        raise ValueError(f"invalid URL {url!r}: remove the #fragment")
    if port == 0:
        raise ValueError(f"invalid URL {url!r}: port 0 is not a port to connect to")
    check_host(parsed.host, deny_list)
    return parsed


def check_host(host: str, deny_list: DenyList) -> None:
    """Raise ValueError when the host or its IP address is on the deny list."""
    address = parse_ip(host)
    if address is not None and deny_list.denies_address(address):
        raise ValueError(
            f"address {address} is denied (link-local or cloud metadata);"
            " webhook_deny_list sets the denied networks"
        )
    if address is None and deny_list.denies_host(host):
        raise ValueError(
            f"host {host} is denied; webhook_deny_list sets the denied hosts"
        )


async def check_resolved_host(host: str, deny_list: DenyList) -> None:
    """Resolve a host name and raise ValueError if an address is denied.

    A name that does not resolve (yet) passes: its attempts fail and show
    the lookup error in the delivery log.
    """
    if parse_ip(host) is not None or not deny_list.networks:
        return
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if deny_list.denies_address(address):
            raise ValueError(
                f"host {host} resolves to the denied address {address}"
                " (link-local or cloud metadata); webhook_deny_list sets the"
                " denied networks"
            )


class DenyListResolver(AbstractResolver):
    """A DNS resolver that raises DeniedAddressError for denied addresses.

    aiohttp connects only to addresses its resolver returns, so no webhook
    connection reaches a denied address through a host name. IP literals
    skip the resolver, and ``check_url`` covers them before each attempt.
    """

    def __init__(self, deny_list: DenyList) -> None:
        self._deny_list = deny_list
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            address = parse_ip(str(result["host"]).split("%")[0])
            if address is not None and self._deny_list.denies_address(address):
                raise DeniedAddressError(
                    f"host {host} resolves to the denied address {address}"
                    " (webhook_deny_list)"
                )
        return results

    async def close(self) -> None:
        await self._resolver.close()
