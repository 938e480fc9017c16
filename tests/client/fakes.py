"""Small FastCGI servers with faults our real server does not have, built on the codec."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fcgi_async.protocol import NEED_DATA, RequestReceived, ServerConnection, StdinEnded


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
            async with asyncio.timeout(2):
                await srv.wait_closed()
