"""Helpers for the protocol tests: a client codec wired to a server codec, and a wire parser.

:class:`ConnectionPair` follows h11's ``tests/helpers.py``: whatever one side frames is fed to
the other side, and the events that come out are returned as lists, so a test reads as a
conversation. :func:`parse_wire` is an independent, deliberately naive record parser used to
check what the encoders put on the wire (padding, split points) without trusting the codec
under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fcgi_async.protocol import (
    ClientConnection,
    ClientEvent,
    ServerConnection,
    ServerEvent,
)
from fcgi_async.protocol.events import _NeedData  # the sentinel's type, for mypy to narrow

Wire = bytes | bytearray | memoryview | Iterable[bytes | memoryview]
"""Anything the encoders return: one buffer, or a list of buffers for ``writelines``."""


def join(data: Wire) -> bytes:
    """Return ``data`` as one ``bytes``, whether it is one buffer or a list of them."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    return b"".join(bytes(part) for part in data)


def server_events(server: ServerConnection) -> list[ServerEvent]:
    """Return every event ``server`` can produce from the bytes it holds, in order."""
    out: list[ServerEvent] = []
    while True:
        event = server.next_event()
        if isinstance(event, _NeedData):
            return out
        out.append(event)


def client_events(client: ClientConnection) -> list[ClientEvent]:
    """Return every event ``client`` can produce from the bytes it holds, in order."""
    out: list[ClientEvent] = []
    while True:
        event = client.next_event()
        if isinstance(event, _NeedData):
            return out
        out.append(event)


def chunks_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """Split ``data`` at the given offsets (sorted, de-duplicated, clipped to the data)."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def byte_at_a_time(data: bytes) -> Iterator[bytes]:
    """Yield ``data`` one byte at a time."""
    for i in range(len(data)):
        yield data[i : i + 1]


def feed_server(server: ServerConnection, pieces: Iterable[bytes]) -> list[ServerEvent]:
    """Feed ``pieces`` one by one, draining events after each; return all events."""
    out: list[ServerEvent] = []
    for piece in pieces:
        server.receive_data(piece)
        out += server_events(server)
    return out


def feed_client(client: ClientConnection, pieces: Iterable[bytes]) -> list[ClientEvent]:
    """Feed ``pieces`` one by one, draining events after each; return all events."""
    out: list[ClientEvent] = []
    for piece in pieces:
        client.receive_data(piece)
        out += client_events(client)
    return out


class ConnectionPair:
    """A :class:`ClientConnection` and a :class:`ServerConnection` joined by a perfect wire.

    Keyword arguments go to the ``ServerConnection``. ``to_server`` and ``to_client`` feed
    framed bytes to one side and return the events it produced; ``replies`` moves whatever
    the server queued on its own (management answers, refusals) to the client.
    """

    def __init__(self, **server_kwargs: Any) -> None:
        self.client = ClientConnection()
        self.server = ServerConnection(**server_kwargs)

    def to_server(self, *frames: Wire) -> list[ServerEvent]:
        """Feed the client's framed output to the server; return the server's events."""
        self.server.receive_data(b"".join(join(f) for f in frames))
        return server_events(self.server)

    def to_client(self, *frames: Wire) -> list[ClientEvent]:
        """Feed the server's framed output to the client; return the client's events."""
        self.client.receive_data(b"".join(join(f) for f in frames))
        return client_events(self.client)

    def replies(self) -> list[ClientEvent]:
        """Move the server's own queued answers to the client; return the client's events."""
        return self.to_client(self.server.data_to_send())

    def request_bytes(
        self,
        request_id: int,
        params: dict[bytes, bytes],
        body: bytes = b"",
        **begin: Any,
    ) -> bytes:
        """Frame a whole request (BEGIN, PARAMS, STDIN with its end) with the client codec."""
        c = self.client
        return (
            c.begin_request(request_id, **begin)
            + join(c.send_params(request_id, params))
            + join(c.send_stdin(request_id, body))
            + c.end_stdin(request_id)
        )


@dataclass(frozen=True)
class WireRecord:
    """One record as :func:`parse_wire` saw it, padding included."""

    version: int
    type: int
    request_id: int
    content: bytes
    padding: bytes


def parse_wire(data: Wire) -> list[WireRecord]:
    """Cut ``data`` into records by hand; fail the test on trailing garbage."""
    raw = join(data)
    out: list[WireRecord] = []
    pos = 0
    while pos < len(raw):
        assert len(raw) - pos >= 8, "truncated header on the wire"
        version, rtype = raw[pos], raw[pos + 1]
        rid = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        clen = int.from_bytes(raw[pos + 4 : pos + 6], "big")
        plen = raw[pos + 6]
        assert raw[pos + 7] == 0, "reserved header byte must be zero"
        start = pos + 8
        end = start + clen + plen
        assert end <= len(raw), "truncated record on the wire"
        out.append(
            WireRecord(version, rtype, rid, raw[start : start + clen], raw[start + clen : end])
        )
        pos = end
    return out


def raw_record(
    rtype: int, request_id: int, content: bytes = b"", padding: int = 0, version: int = 1
) -> bytes:
    """Build a record by hand, with any padding and version, bypassing the codec."""
    return (
        bytes((version, rtype))
        + request_id.to_bytes(2, "big")
        + len(content).to_bytes(2, "big")
        + bytes((padding, 0))
        + content
        + b"\xa5" * padding
    )
