"""A tiny asyncio FastCGI client for the operations tests: one request per connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fcgi_async.protocol import (
    NEED_DATA,
    ClientConnection,
    RequestEnded,
    StderrReceived,
    StdoutReceived,
)

#: Upper bound for one request.
TIMEOUT_S = 10.0


@dataclass
class Response:
    """What came back: the CGI status and headers, the body and STDERR bytes."""

    status: int
    headers: dict[str, str]
    body: bytes
    stderr: bytes = b""
    raw: bytes = field(default=b"", repr=False)


def split_response(stdout: bytes, stderr: bytes = b"") -> Response:
    """Parse a CGI response (``Status:`` header, default 200)."""
    head, _, body = stdout.partition(b"\r\n\r\n")
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(headers.get("status", "200").split()[0])
    return Response(status, headers, body, stderr, stdout)


def params_for(uri: str, method: str = "GET", **extra: str | None) -> dict[bytes, bytes]:
    """nginx-like params for ``uri`` (REMOTE_ADDR 127.0.0.1 unless given in ``extra``)."""
    path, _, query = uri.partition("?")
    params: dict[str, str | None] = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": uri,
        "DOCUMENT_URI": path,
        "SCRIPT_NAME": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
    }
    params.update(extra)
    return {k.encode(): v.encode() for k, v in params.items() if v is not None}


async def fcgi_request(
    address: tuple[str, int] | str,
    params: dict[bytes, bytes],
    body: bytes = b"",
    request_id: int = 1,
) -> Response:
    """Send one request on a fresh connection (TCP ``(host, port)`` or a unix path)."""

    async def run() -> Response:
        if isinstance(address, str):
            reader, writer = await asyncio.open_unix_connection(address)
        else:
            reader, writer = await asyncio.open_connection(*address)
        try:
            conn = ClientConnection()
            out = [conn.begin_request(request_id, keep_conn=False)]
            out.extend(bytes(b) for b in conn.send_params(request_id, params))
            if body:
                out.extend(bytes(b) for b in conn.send_stdin(request_id, body))
            out.append(conn.end_stdin(request_id))
            writer.write(b"".join(out))
            stdout = bytearray()
            stderr = bytearray()
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("closed before END_REQUEST")
                    conn.receive_data(data)
                elif isinstance(event, StdoutReceived):
                    stdout += event.data
                elif isinstance(event, StderrReceived):
                    stderr += event.data
                elif isinstance(event, RequestEnded):
                    return split_response(bytes(stdout), bytes(stderr))
        finally:
            writer.close()

    return await asyncio.wait_for(run(), TIMEOUT_S)
