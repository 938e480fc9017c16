"""The asyncio binding: one Protocol per connection, listeners, and the Server."""

from .connection import FastCGIProtocol, RequestHandle
from .listeners import BindAddress, BindError, bind_socket, parse_bind
from .server import Server, ServerState

__all__ = [
    "BindAddress",
    "BindError",
    "FastCGIProtocol",
    "RequestHandle",
    "Server",
    "ServerState",
    "bind_socket",
    "parse_bind",
]
