"""FastCGI server addresses: ``unix:PATH``, ``HOST:PORT`` and ``[V6]:PORT``.

The syntax is the server's ``--bind`` syntax, so ``fcgi-async call`` takes whatever
``fcgi-async --bind`` printed. ``unix:@name`` names a Linux abstract socket.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed FastCGI server address.

    Attributes:
        path: the unix socket path (``None`` for TCP); a leading NUL means abstract.
        host: the TCP host name or address (``None`` for unix).
        port: the TCP port (``None`` for unix).
    """

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            abstract = self.path[:1] == "\0"
            return "unix:" + ("@" + self.path[1:] if abstract else self.path)
        if self.host is not None and ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_unix(self) -> bool:
        """True for a unix-domain socket."""
        return self.path is not None


def parse_address(value: str) -> Address:
    """Parse ``unix:PATH``, ``unix:@ABSTRACT``, ``/abs/path``, ``HOST:PORT`` or ``[V6]:PORT``.

    Raises:
        ValueError: the address is malformed (the message quotes it).
    """
    if value.startswith("unix:"):
        path = value[5:]
        if not path:
            raise ValueError(f"address {value!r}: empty unix socket path")
        if path.startswith("@"):
            path = "\0" + path[1:]
        return Address(path=path)
    if value.startswith("/"):
        return Address(path=value)
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":") or not host:
            raise ValueError(f"address {value!r}: expected [IPV6]:PORT")
        return Address(host=host, port=_port(value, rest[1:]))
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {value!r}: expected unix:PATH, HOST:PORT or [IPV6]:PORT")
    if ":" in host:
        raise ValueError(f"address {value!r}: write IPv6 addresses as [IPV6]:PORT")
    return Address(host=host, port=_port(value, port))


def _port(value: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"address {value!r}: port must be a number from 1 to 65535")
    return int(text)


async def open_stream(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream connection to ``address`` (TCP_NODELAY set on TCP).

    Raises:
        OSError: the connection failed (the caller maps it to ``ConnectError``).
    """
    if address.path is not None:
        return await asyncio.open_unix_connection(address.path)
    reader, writer = await asyncio.open_connection(address.host, address.port)
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer
