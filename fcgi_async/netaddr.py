"""Who may connect: IP networks from settings, and the one check of a peer against them.

A leaf module (it imports nothing from the package), used by the config (to parse
``allowed_clients``), the connection (at accept) and the status page (per request), so the
three agree. Both sides are normalized the same way: a dual-stack socket reports an IPv4 client
as ``::ffff:a.b.c.d``, and a user may write either spelling in ``--allowed-clients``; an
IPv4-mapped address or network is compared as the IPv4 one it stands for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv4-mapped IPv6 addresses (RFC 4291 §2.5.5.2).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_network(text: str) -> Network:
    """Parse an address or CIDR network (host bits allowed), IPv4-mapped ones as IPv4.

    Raises:
        ValueError: ``text`` is not an IP address or network.
    """
    net = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        mapped = net.network_address.ipv4_mapped
        assert mapped is not None  # every address in ::ffff:0:0/96 maps
        return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}")
    return net


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    """:func:`parse_network` of each; raises ValueError on the first bad one."""
    return tuple(parse_network(text) for text in texts)


def host_allowed(host: str, networks: Iterable[Network]) -> bool:
    """True when the IP address ``host`` (IPv6 zone allowed) lies in one of ``networks``.

    A ``host`` that is not an IP address is never allowed.
    """
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)
