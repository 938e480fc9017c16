"""A fake :class:`fcgi_async.types.Request` for adapter tests: no sockets, no codec.

It records what the adapter sends and lets a test feed the body, gate flow control, and
simulate the web server going away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from fcgi_async.protocol import Role
from fcgi_async.types import ClientDisconnected


class FakeRequest:
    """Implements the Request protocol in memory.

    Args:
        params: CGI params; str keys/values are encoded as latin-1 for convenience.
        body: chunks of the request body; ``None`` means the test feeds them with ``feed``.
        data: FILTER-role DATA chunks.
    """

    def __init__(
        self,
        params: Mapping[str | bytes, str | bytes] | None = None,
        body: Iterable[bytes] | None = (),
        *,
        role: Role = Role.RESPONDER,
        data: Iterable[bytes] = (),
        keep_conn: bool = True,
    ) -> None:
        def enc(v: str | bytes) -> bytes:
            return v.encode("latin-1") if isinstance(v, str) else v

        base: dict[str | bytes, str | bytes] = {
            "REQUEST_METHOD": "GET",
            "REQUEST_URI": "/",
            "SCRIPT_NAME": "/",
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "5555",
            "SERVER_ADDR": "127.0.0.1",
            "CONTENT_LENGTH": "",
            "CONTENT_TYPE": "",
        }
        base.update(params or {})
        self._params = {enc(k): enc(v) for k, v in base.items()}
        self._role = role
        self._keep_conn = keep_conn
        self._body: asyncio.Queue[bytes] = asyncio.Queue()
        if body is not None:
            for chunk in body:
                if chunk:
                    self._body.put_nowait(chunk)
            self._body.put_nowait(b"")
        self._data = [c for c in data if c] + [b""]
        self._body_done = False
        self._disconnected = asyncio.Event()
        #: Cleared to simulate a full transport write buffer: sends wait until it is set.
        self.writable = asyncio.Event()
        self.writable.set()
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.ended = False
        self.failed = False
        self.app_status: int | None = None
        self.writes = 0
        #: Set by adapters that run the request's code in a thread (Request.thread_ident).
        self.thread_ident: int | None = None
        self._logger = logging.getLogger("fcgi_async.test.app")

    # Request protocol -------------------------------------------------------------
    @property
    def request_id(self) -> int:
        return 1

    @property
    def role(self) -> Role:
        return self._role

    @property
    def params(self) -> Mapping[bytes, bytes]:
        return self._params

    @property
    def keep_conn(self) -> bool:
        return self._keep_conn

    @property
    def disconnected(self) -> bool:
        return self._disconnected.is_set()

    @property
    def response_started(self) -> bool:
        return any(self.stdout)

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    async def receive(self) -> bytes:
        if self._body_done:
            return b""
        if self.disconnected:
            raise ClientDisconnected("client went away")
        get = asyncio.ensure_future(self._body.get())
        gone = asyncio.ensure_future(self._disconnected.wait())
        done, _ = await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            gone.cancel()
            chunk = get.result()
            if not chunk:
                self._body_done = True
            return chunk
        get.cancel()
        raise ClientDisconnected("client went away")

    async def receive_data(self) -> bytes:
        while not self._body_done:
            await self.receive()
        return self._data.pop(0) if self._data else b""

    async def wait_disconnected(self) -> None:
        await self._disconnected.wait()

    async def _gate(self) -> None:
        if self.disconnected or self.ended or self.failed:
            raise ClientDisconnected("client went away")
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected("client went away")

    async def send_stdout(self, data: bytes) -> None:
        await self._gate()
        if data:  # as the real handle: an empty send checks and waits, but writes nothing
            self.writes += 1
            self.stdout.append(bytes(data))

    async def send_stderr(self, data: bytes) -> None:
        await self._gate()
        self.stderr.append(bytes(data))

    async def end(self, stdout: bytes = b"", app_status: int = 0) -> None:
        await self._gate()
        self.writes += 1
        if stdout:
            self.stdout.append(bytes(stdout))
        self.ended = True
        self.app_status = app_status

    def fail(self) -> None:
        self.failed = True
        self._disconnected.set()

    # Test controls ----------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        """Deliver a body chunk (``b""`` ends the body)."""
        self._body.put_nowait(chunk)

    def disconnect(self) -> None:
        """Simulate the web server closing the connection or sending ABORT_REQUEST."""
        self._disconnected.set()

    @property
    def output(self) -> bytes:
        """Everything sent on STDOUT, joined."""
        return b"".join(self.stdout)

    def parsed(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Split the CGI response into (status, headers, body)."""
        head, _, body = self.output.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            value = value.strip()
            if name.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((name, value))
        return status, headers, body
