"""ServerState: what every connection of one server shares (the app, the config, the counters).

A leaf of the server package: the features (:mod:`fcgi_async.status`, :mod:`fcgi_async.logs`)
and :mod:`fcgi_async.server.timeouts` take a ServerState, so it imports none of them; it needs
only the plain request handle and the request watch, whose modules import it for types only.
See docs/architecture.md for the layers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..protocol import FCGI_MAX_CONNS, FCGI_MAX_REQS, FCGI_MPXS_CONNS, Limits, Role
from ..types import Application
from .connection import RequestHandle
from .timeouts import RequestWatch

if TYPE_CHECKING:
    from ..config import Config
    from ..scoreboard import Scoreboard
    from .connection import FastCGIProtocol

logger = logging.getLogger("fcgi_async.server")


class Sampler(Protocol):
    """A feature the server's ticker samples once a second (the status page)."""

    def sample(self) -> None:
        """Take one sample; an exception is logged and the ticker lives on."""


#: What a :class:`~fcgi_async.server.Server`'s caller passes as ``wrap``: given the app and
#: the fresh state, return the app with the configured features in front of it, setting
#: ``state.handle_class`` and ``state.status`` when a feature needs them
#: (:func:`fcgi_async.features.install_features`).
Wrap = Callable[[Application, "ServerState"], Application]


class ServerState:
    """What every connection of one server shares: the app, the config, the counters."""

    def __init__(self, config: Config, app: Application, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.app = app
        self.loop = loop
        self.limits: Limits = config.limits
        self.roles: tuple[Role, ...] = config.served_roles
        #: TCP peers outside these networks are refused (empty: everyone is allowed).
        self.allowed_networks = config.allowed_networks
        self.connections: set[FastCGIProtocol] = set()
        self.accepting = True
        #: Application tasks still running (a request ends when its task does).
        self.tasks: set[asyncio.Task[None]] = set()
        self.active_requests = 0
        self.total_requests = 0
        self.idle_event = asyncio.Event()
        self.idle_event.set()
        #: Called after the request counters change (a prefork worker reports to its
        #: supervisor's scoreboard through it); None costs one comparison per request.
        self.on_change: Callable[[ServerState], None] | None = None
        #: Requests that ran past ``slowlog_timeout_s`` (php-fpm's "slow requests").
        self.slow_requests = 0
        #: Set once :meth:`request_recycle` was called.
        self.recycle_requested = False
        #: Called (once) by :meth:`request_recycle`; a prefork worker drains and exits through
        #: it so its supervisor replaces it. None: the server runs inline and only logs.
        self.on_recycle: Callable[[str], None] | None = None
        #: Request timeouts and the slow log; None (nothing per request) when both are off.
        self.watch = (
            RequestWatch(self) if config.request_timeout_s or config.slowlog_timeout_s else None
        )
        max_reqs = config.max_connections * (
            config.max_requests_per_connection if config.multiplex else 1
        )
        #: GET_VALUES answers, true to this configuration (spec §4.1).
        self.management_values = {
            FCGI_MAX_CONNS: str(config.max_connections).encode(),
            FCGI_MAX_REQS: str(max_reqs).encode(),
            FCGI_MPXS_CONNS: b"1" if config.multiplex else b"0",
        }
        #: The listening sockets (set by Server.start): the status page's listen queue.
        self.listeners: list[socket.socket] = []
        #: (scoreboard, slot) of this process under a supervisor (the status page adds up
        #: every slot); None inline.
        self.scoreboard_slot: tuple[Scoreboard, int] | None = None
        #: The class of request handles; the caller's wrap sets a subclass (the access log's
        #: LoggedRequestHandle) when a feature needs more than the plain handle.
        self.handle_class: type[RequestHandle] = RequestHandle
        #: Sampled by the server's ticker once a second (the status page's maxima); None when
        #: no feature needs it. Set by the caller's wrap, like ``handle_class``.
        self.status: Sampler | None = None

    def connection_opened(self, proto: FastCGIProtocol) -> bool:
        """Register a connection; False when over ``max_connections`` (caller closes it)."""
        if len(self.connections) >= self.config.max_connections or not self.accepting:
            return False
        self.connections.add(proto)
        return True

    def connection_closed(self, proto: FastCGIProtocol) -> None:
        """Forget a closed connection; its slot is free. Idempotent: a connection aborted for
        its send deadline is forgotten at once, and again when its ``connection_lost`` comes."""
        self.connections.discard(proto)

    def request_started(self, task: asyncio.Task[None]) -> None:
        """Count a request whose application task began; it counts until the task is done.

        Not until its END_REQUEST: application code that outlives its response, an abort or a
        broken connection still runs, and shutdown must wait for it or cancel it.
        """
        self.tasks.add(task)
        task.add_done_callback(self.request_finished)
        if not self.active_requests:
            self.idle_event.clear()
        self.active_requests += 1
        self.total_requests += 1
        if self.on_change is not None:
            self.on_change(self)

    def request_finished(self, task: asyncio.Task[None]) -> None:
        """Count a request whose application task ended (its done callback)."""
        self.tasks.discard(task)
        self.active_requests -= 1
        if self.active_requests == 0:
            self.idle_event.set()
        if self.on_change is not None:
            self.on_change(self)

    def request_recycle(self, reason: str) -> None:
        """Ask for this process to be replaced: application code is stuck in it.

        Under a supervisor (``on_recycle`` set) the worker drains and exits after its running
        requests, like after ``max_requests``, and a fresh one takes its place. Inline, a
        process cannot replace itself: the error log recommends a restart. Only the first call
        acts.
        """
        if self.recycle_requested:
            return
        self.recycle_requested = True
        if self.on_recycle is not None:
            self.on_recycle(reason)
        else:
            logger.error(
                "%s: restart this process (its stuck threads cannot be stopped); with a "
                "supervisor (--workers, --max-requests) workers are recycled automatically",
                reason,
            )


__all__ = ["Sampler", "ServerState", "Wrap"]
