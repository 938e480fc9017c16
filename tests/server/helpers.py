"""A fake transport and a harness that drive one :class:`FastCGIProtocol` without sockets.

After uvicorn's ``tests/protocols/test_http.py`` ``MockTransport``: the test plays the web
server by framing records with :class:`ClientConnection` and handing them to
``data_received``; the fake transport records every ``write``/``writelines`` call (one entry
per call, so coalescing is observable), whether reading is paused, and whether the protocol
closed or aborted the connection. Closing schedules ``connection_lost`` the way asyncio does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from fcgi_async.config import Config
from fcgi_async.protocol import NEED_DATA, ClientConnection, ClientEvent, Role
from fcgi_async.server.connection import FastCGIProtocol
from fcgi_async.server.state import ServerState
from fcgi_async.types import Request

Handler = Callable[[Request], Awaitable[None]]


class App:
    """A raw Application that runs ``handler`` for each request and remembers the requests."""

    def __init__(self, handler: Handler, startup_error: Exception | None = None) -> None:
        self.handler = handler
        self.startup_error = startup_error
        self.requests: list[Request] = []
        self.lifecycle: list[str] = []

    async def __call__(self, request: Request) -> None:
        self.requests.append(request)
        await self.handler(request)

    async def startup(self) -> None:
        self.lifecycle.append("startup")
        if self.startup_error is not None:
            raise self.startup_error

    async def shutdown(self) -> None:
        self.lifecycle.append("shutdown")


class FakeTransport(asyncio.Transport):
    """Records what the protocol does to its transport."""

    def __init__(
        self, protocol: asyncio.Protocol, peername: Any = ("127.0.0.1", 40000), sock: Any = None
    ) -> None:
        super().__init__()
        self._protocol = protocol
        self._extra = {"peername": peername, "sockname": ("127.0.0.1", 9000), "socket": sock}
        self.writes: list[bytes] = []
        self.read_paused = False
        self.closed = False
        self.aborted = False
        self.eof_written = False
        #: What get_write_buffer_size() reports: output the "kernel" has not taken. While it is
        #: above 0, close() waits (as asyncio's does) until the test calls flush() or lose().
        self.buffer_size = 0
        self._lost = False

    # -- what the protocol calls
    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self._lost, "write after connection_lost"
        assert not self.eof_written, "write after write_eof"
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        assert not self._lost, "write after connection_lost"
        assert not self.eof_written, "write after write_eof"
        self.writes.append(b"".join(bytes(d) for d in list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        assert not self.read_paused, "paused twice"
        self.read_paused = True

    def resume_reading(self) -> None:
        assert self.read_paused, "resumed while not paused"
        self.read_paused = False

    def is_reading(self) -> bool:
        return not self.read_paused

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.buffer_size:
                asyncio.get_running_loop().call_soon(self._connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.buffer_size = 0
        self.closed = True
        asyncio.get_running_loop().call_soon(self._connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    # -- what the test calls
    def _connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(exc)

    def flush(self) -> None:
        """The peer read everything: a close waiting for it completes now."""
        self.buffer_size = 0
        if self.closed:
            asyncio.get_running_loop().call_soon(self._connection_lost, None)

    def lose(self, exc: Exception | None = None) -> None:
        """The peer went away: the protocol hears ``connection_lost`` now."""
        self.closed = True
        self._connection_lost(exc)

    @property
    def output(self) -> bytes:
        return b"".join(self.writes)


class Harness:
    """One protocol on a fake transport, with a client codec playing the web server.

    Every harness is remembered in :attr:`live`; the ``conftest`` fixture drops their
    connections and cancels leftover application tasks after each test.
    """

    live: ClassVar[list[Harness]] = []

    def __init__(
        self,
        handler: Handler,
        config: Config | None = None,
        state: ServerState | None = None,
    ) -> None:
        self.app = App(handler)
        self.config = config or Config()
        self.state = state or ServerState(self.config, self.app, asyncio.get_running_loop())
        self.proto = FastCGIProtocol(self.state)
        self.transport = FakeTransport(self.proto)
        self.proto.connection_made(self.transport)
        self.client = ClientConnection()
        self._seen = 0
        Harness.live.append(self)

    def feed(self, *frames: bytes | Iterable[bytes | memoryview]) -> None:
        """Hand framed bytes to the protocol in one ``data_received`` call."""
        data = b"".join(
            f if isinstance(f, bytes) else b"".join(bytes(p) for p in f) for f in frames
        )
        self.proto.data_received(data)

    def request_bytes(
        self,
        rid: int = 1,
        params: Mapping[bytes, bytes] | None = None,
        body: bytes | None = b"",
        *,
        role: Role = Role.RESPONDER,
        keep_conn: bool = True,
    ) -> bytes:
        """Frame BEGIN_REQUEST, PARAMS and (unless ``body`` is None) the whole STDIN stream."""
        c = self.client
        out = c.begin_request(rid, role=role, keep_conn=keep_conn)
        out += b"".join(bytes(b) for b in c.send_params(rid, params or {b"REQUEST_METHOD": b"GET"}))
        if body is not None:
            out += b"".join(bytes(b) for b in c.send_stdin(rid, body)) + c.end_stdin(rid)
        return out

    def events(self) -> list[ClientEvent]:
        """Parse what the protocol wrote since the last call; return the client's events."""
        new = self.transport.output[self._seen :]
        self._seen += len(new)
        self.client.receive_data(new)
        out: list[ClientEvent] = []
        while (event := self.client.next_event()) is not NEED_DATA:
            out.append(event)  # type: ignore[arg-type]
        return out


async def wait_until(cond: Callable[[], object], within_s: float = 5.0) -> None:
    """Let the loop run until ``cond()`` is true; fail after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(0.001)


async def settle(rounds: int = 20) -> None:
    """Give every ready task a few turns of the loop (to show that something does NOT happen)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
