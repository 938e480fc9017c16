"""The one parser of allowed networks and the one peer check (config, accept, status page)."""

from __future__ import annotations

import ipaddress

import pytest

from fcgi_async.config import Config
from fcgi_async.netaddr import host_allowed, parse_network, parse_networks


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("127.0.0.1", "127.0.0.1/32"),
        ("::ffff:127.0.0.1", "127.0.0.1/32"),
        ("::ffff:10.1.2.3/120", "10.1.2.0/24"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("10.0.0.5/8", "10.0.0.0/8"),
        ("::1", "::1/128"),
        ("::/0", "::/0"),  # wider than the mapped range: stays IPv6
        (" 2001:db8::/32 ", "2001:db8::/32"),
    ],
)
def test_parse_network_maps_ipv4_mapped_to_ipv4(text: str, network: str) -> None:
    assert parse_network(text) == ipaddress.ip_network(network)


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("127.0.0.1", ("::ffff:127.0.0.1",), True),
        ("::ffff:127.0.0.1", ("127.0.0.1",), True),
        ("::ffff:127.0.0.1", ("::ffff:127.0.0.1",), True),
        ("fe80::1%eth0", ("fe80::/10",), True),
        ("127.0.0.2", ("::ffff:127.0.0.1",), False),
        ("not-an-ip", ("0.0.0.0/0", "::/0"), False),
        ("", ("0.0.0.0/0",), False),
    ],
)
def test_host_allowed(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, parse_networks(allowed)) is expected


def test_the_config_uses_the_same_parser() -> None:
    config = Config(allowed_clients=("::ffff:127.0.0.1", "::1"))
    assert config.allowed_networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
