"""An asyncio FastCGI client: connection pool, multiplexing, httpx transports.

Talk to php-fpm, our server, or any FastCGI application without a web server::

    async with FastCGIClient("unix:/run/php/php8.2-fpm.sock") as client:
        params = build_params("GET", "/status?json", script_filename="/status")
        response = await client.request(params)
        print(response.status_code, response.get_header("content-type"), response.body)

:class:`FastCGITransport` and :class:`FastCGISyncTransport` need ``httpx`` (the
``fcgi-async[client]`` extra) and are imported on first use, so this package imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .address import Address, parse_address
from .app import FastCGIApp, FastCGIWSGIApp
from .errors import (
    CantMultiplex,
    ConnectError,
    ConnectionLost,
    FastCGIError,
    Overloaded,
    PoolClosed,
    ProtocolError,
    RequestRejected,
    Timeout,
    UnknownRole,
)
from .params import build_params
from .pool import Body, FastCGIClient, Params, get_values
from .response import Response, StreamingResponse
from .timeouts import Timeouts

if TYPE_CHECKING:
    from .transport import FastCGISyncTransport, FastCGITransport

__all__ = [
    "Address",
    "Body",
    "CantMultiplex",
    "ConnectError",
    "ConnectionLost",
    "FastCGIApp",
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
