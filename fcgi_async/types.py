"""The seam between the core and the adapters (and any other FastCGI handler).

The server hands each request to an :class:`Application` as a :class:`Request`. The core never
imports an adapter; an adapter (WSGI, ASGI, a raw handler, a FILTER app) needs only this module,
:mod:`fcgi_async.cgi` and :mod:`fcgi_async.protocol`'s constants.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from .protocol import Role


class ClientDisconnected(OSError):
    """The web server aborted the request or closed its connection.

    An ``OSError`` subclass, as ASGI requires of ``send()`` on a gone client; servers log it
    quietly at debug level.
    """


class Request(Protocol):
    """One FastCGI request as an application sees it.

    All coroutine methods must be awaited on the server's event loop (thread code uses
    ``anyio.from_thread.run``). Exactly one of :meth:`end` or :meth:`fail` finishes a request;
    if the application returns without either, the server finishes it for them (a 500 when
    nothing was sent, :meth:`fail` otherwise).
    """

    @property
    def request_id(self) -> int:
        """The FastCGI request id (1 for nginx, Apache and lighttpd)."""

    @property
    def role(self) -> Role:
        """RESPONDER, AUTHORIZER or FILTER."""

    @property
    def params(self) -> Mapping[bytes, bytes]:
        """The CGI params exactly as the web server sent them (bytes to bytes)."""

    @property
    def keep_conn(self) -> bool:
        """Whether the web server keeps the connection for further requests."""

    @property
    def disconnected(self) -> bool:
        """True once the request was aborted or its connection lost."""

    @property
    def response_started(self) -> bool:
        """True once any STDOUT byte was handed to the transport."""

    #: The :func:`threading.get_ident` of the thread running this request's application code
    #: while one does, else ``None``. An adapter that runs application code in a worker thread
    #: (the WSGI adapter) sets it in that thread before calling the app and clears it after;
    #: the server reads it to put that thread's stack in the slow log, and to know that the
    #: code cannot be cancelled when ``--request-timeout`` ends the request. Adapters that run
    #: on the event loop leave it alone. Costs nothing when unused.
    thread_ident: int | None

    @property
    def logger(self) -> logging.Logger:
        """The logger for this request's application messages (``wsgi.errors`` and friends)."""

    async def receive(self) -> bytes:
        """Return the next chunk of the request body; ``b""`` once it is complete.

        Raises:
            ClientDisconnected: the request was aborted or the connection lost first.
        """

    async def receive_data(self) -> bytes:
        """FILTER role: the next chunk of the DATA stream (the file to filter); ``b""`` at end.

        Reading DATA first drains whatever is left of the body. For other roles: ``b""``.
        """

    async def wait_disconnected(self) -> None:
        """Return once the request is aborted or its connection lost."""

    async def send_stdout(self, data: bytes) -> None:
        """Send response bytes, waiting while the transport's write buffer is full.

        Raises:
            ClientDisconnected: the connection is gone; nothing more can be sent.
        """

    async def send_stderr(self, data: bytes) -> None:
        """Send bytes on the STDERR stream (the web server logs them). Also flow-controlled."""

    async def end(self, stdout: bytes = b"", app_status: int = 0) -> None:
        """Send the last response bytes, close the streams and END_REQUEST in one write.

        Raises:
            ClientDisconnected: the connection is gone.
        """

    def fail(self) -> None:
        """The response broke after it started: make the web server see a failed response.

        Writes a record header no FastCGI peer accepts and closes the connection (see
        docs/architecture.md, Failure rules, and the README): nginx, Apache and lighttpd all
        report an upstream error and cut the client's response short instead of presenting
        it as complete.
        """


@runtime_checkable
class Application(Protocol):
    """What the server runs: a handler per request plus process start-up and shutdown."""

    async def __call__(self, request: Request) -> None:
        """Serve one request, returning when the response is complete."""

    async def startup(self) -> None:
        """Run once before the first request (ASGI lifespan startup).

        Raises:
            Exception: the application cannot start; the server exits with a clear message.
        """

    async def shutdown(self) -> None:
        """Run once after the last request (ASGI lifespan shutdown)."""
