"""Small FastCGI servers with faults our real server does not have, built on the codec."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from fcgi_async import _compat
from fcgi_async.protocol import (
    NEED_DATA,
    RequestAborted,
    RequestReceived,
    ServerConnection,
    StdinEnded,
)


@dataclass
class FakeServer:
    """What a fake server saw."""

    address: str = ""
    connections: int = 0
    requests: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


@contextlib.asynccontextmanager
async def fake_server(
    *,
    answer_get_values: bool = True,
    close_after_response: bool = False,
    close_mid_response: bool = False,
    close_first_mid_response: bool = False,
    drop_second_request: bool = False,
    response: bytes = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nfake",
) -> AsyncIterator[FakeServer]:
    """A one-request-at-a-time responder on 127.0.0.1:0 with optional faults.

    Args:
        answer_get_values: when False, GET_VALUES is never answered (the connection stays open).
        close_after_response: close every connection after END_REQUEST, ignoring KEEP_CONN.
        close_mid_response: send half the response, then close without END_REQUEST.
        close_first_mid_response: the same for the first request only; later requests are
            answered normally.
        drop_second_request: close a connection, unanswered, when a second request arrives on
            it (a keep-alive connection the server gave up on just as the client reused it).
        response: the STDOUT of every request.
    """
    state = FakeServer()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        codec = ServerConnection(multiplex=False)
        served = 0
        try:
            while data := await reader.read(65536):
                codec.receive_data(data)
                while (event := codec.next_event()) is not NEED_DATA:
                    if isinstance(event, RequestReceived):
                        if drop_second_request and served:
                            writer.close()
                            return
                        state.requests += 1
                        served += 1
                    if isinstance(event, StdinEnded):
                        rid = event.request_id
                        if close_mid_response or (close_first_mid_response and state.requests == 1):
                            writer.writelines(codec.send_stdout(rid, response[:20]))
                            await writer.drain()
                            writer.close()
                            return
                        writer.writelines(codec.end_request(rid, response))
                        await writer.drain()
                        if close_after_response:
                            writer.close()
                            return
                out = codec.data_to_send()
                if out and answer_get_values:
                    writer.write(out)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    state.address = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        srv.close()
        for writer in state.writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with _compat.timeout(2):
                await srv.wait_closed()


@dataclass
class FloodServer:
    """What a flooding server saw and did."""

    address: str = ""
    connections: int = 0
    #: Flood bytes (STDOUT or STDERR payload, the head included) handed to the transport.
    sent: int = 0
    #: Set when the client sent ABORT_REQUEST for a flooded request.
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the client closed a connection while a flood ran on it.
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when a flood reached its ``limit`` (the client never stopped it).
    exhausted: asyncio.Event = field(default_factory=asyncio.Event)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)


FLOOD_PIECE = b"x" * 65535
#: What a flood server answers to requests other than ``/flood``.
PLAIN_RESPONSE = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok"


@contextlib.asynccontextmanager
async def flood_server(
    *,
    stream: Literal["stdout", "stderr"] = "stdout",
    head: bytes = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n",
    limit: int = 64 * 1024 * 1024,
    multiplex: bool = False,
    piece: bytes = FLOOD_PIECE,
) -> AsyncIterator[FloodServer]:
    """A responder on 127.0.0.1:0 that answers ``/flood`` with ``head`` on STDOUT, then
    ``piece`` after ``piece`` on ``stream`` until the client aborts or closes, or ``limit``
    bytes were sent (then it ends the request normally, so a client without a cap finishes).
    Other requests get :data:`PLAIN_RESPONSE`. With ``multiplex`` it says FCGI_MPXS_CONNS=1 and
    answers ABORT_REQUEST with END_REQUEST, keeping the connection.
    """
    state = FloodServer()
    values = {b"FCGI_MPXS_CONNS": b"1" if multiplex else b"0"}

    async def flood(
        codec: ServerConnection,
        writer: asyncio.StreamWriter,
        rid: int,
        stop: asyncio.Event,
        running: set[int],
    ) -> None:
        send = codec.send_stdout if stream == "stdout" else codec.send_stderr
        sent = 0
        try:
            if head:
                writer.writelines(codec.send_stdout(rid, head))
                sent += len(head)
            while sent < limit and not stop.is_set() and not writer.is_closing():
                writer.writelines(send(rid, piece))
                if _compat.WRITELINES_MAY_NOT_PAUSE:  # else drain() never yields to the reader
                    _compat.pause_if_full(writer.transport)
                sent += len(piece)
                state.sent += len(piece)
                await writer.drain()
            if stop.is_set() or writer.is_closing():
                return
            state.exhausted.set()
            running.discard(rid)
            writer.writelines(codec.end_request(rid))
        except OSError:
            pass  # the client closed the connection: ``closed`` is set by on_client

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        state.writers.append(writer)
        codec = ServerConnection(multiplex=multiplex, management_values=values)
        floods: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        running: set[int] = set()
        uris: dict[int, bytes] = {}
        try:
            while data := await reader.read(65536):
                codec.receive_data(data)
                while (event := codec.next_event()) is not NEED_DATA:
                    if isinstance(event, RequestReceived):
                        uris[event.request_id] = event.params.get(b"REQUEST_URI", b"")
                    elif isinstance(event, StdinEnded):
                        rid = event.request_id
                        if uris.pop(rid, b"") == b"/flood":
                            stop = asyncio.Event()
                            running.add(rid)
                            task = asyncio.create_task(flood(codec, writer, rid, stop, running))
                            floods[rid] = (task, stop)
                        else:
                            writer.writelines(codec.end_request(rid, PLAIN_RESPONSE))
                    elif isinstance(event, RequestAborted):
                        state.aborted.set()
                        running.discard(event.request_id)
                        task, stop = floods.pop(event.request_id)
                        stop.set()
                        await task
                        writer.writelines(codec.end_request(event.request_id))
                out = codec.data_to_send()
                if out:
                    writer.write(out)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if running:
                state.closed.set()
            for task, stop in floods.values():
                stop.set()
                task.cancel()
            writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    state.address = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        yield state
    finally:
        srv.close()
        for writer in state.writers:
            writer.close()
        with contextlib.suppress(TimeoutError):
            async with _compat.timeout(2):
                await srv.wait_closed()
