"""The asyncio binding: one Protocol per connection, listeners, and the Server."""

from .connection import FastCGIProtocol, RequestHandle
from .listeners import BindAddress, BindError, bind_socket, parse_bind
from .server import Server
from .state import ServerState, Wrap

__all__ = [
    "BindAddress",
    "BindError",
    "FastCGIProtocol",
    "RequestHandle",
    "Server",
    "ServerState",
    "Wrap",
    "bind_socket",
    "parse_bind",
]
