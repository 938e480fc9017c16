"""An asyncio FastCGI client: connection pool, multiplexing, httpx transports.

Talk to php-fpm, our server, or any FastCGI application without a web server::

    async with FastCGIClient("unix:/run/php/php8.2-fpm.sock") as client:
        params = build_params("GET", "/status?json", script_filename="/status")
        response = await client.request(params)
        print(response.status_code, response.get_header("content-type"), response.body)

Nothing hangs or grows without limit by default: :class:`Timeouts` bounds connecting, each
wait for the server (60 s) and the whole exchange (300 s), raising :class:`Timeout`; the
client's ``max_response_bytes`` (64 MiB) and ``max_header_bytes`` (64 KiB) bound what one
response may make it hold, raising :class:`ResponseTooLarge`. Either aborts the request.

:class:`FastCGITransport` and :class:`FastCGISyncTransport` need ``httpx`` (the
``fcgi-async[client]`` extra) and are imported on first use, so this package imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .address import Address, parse_address
from .app import FastCGIApp, FastCGIWSGIApp
from .balancer import FastCGIBalancer
from .errors import (
    CantMultiplex,
    ConnectError,
    ConnectionLost,
    FastCGIError,
    Overloaded,
    PoolClosed,
    ProtocolError,
    RequestRejected,
    ResponseTooLarge,
    Timeout,
    UnknownRole,
)
from .params import build_params
from .pool import USE_CLIENT_DEFAULT, Body, FastCGIClient, Params, get_values
from .response import Response, StreamingResponse
from .timeouts import Timeouts

if TYPE_CHECKING:
    from .transport import FastCGISyncTransport, FastCGITransport

__all__ = [
    "USE_CLIENT_DEFAULT",
    "Address",
    "Body",
    "CantMultiplex",
    "ConnectError",
    "ConnectionLost",
    "FastCGIApp",
    "FastCGIBalancer",
    "FastCGIClient",
    "FastCGIError",
    "FastCGISyncTransport",
    "FastCGITransport",
    "FastCGIWSGIApp",
    "Overloaded",
    "Params",
    "PoolClosed",
    "ProtocolError",
    "RequestRejected",
    "Response",
    "ResponseTooLarge",
    "StreamingResponse",
    "Timeout",
    "Timeouts",
    "UnknownRole",
    "build_params",
    "get_values",
    "parse_address",
]

_LAZY = {"FastCGITransport", "FastCGISyncTransport"}


def __getattr__(name: str) -> Any:
    """Import the httpx transports on first use (httpx is an optional extra)."""
    if name in _LAZY:
        from . import transport

        return getattr(transport, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
