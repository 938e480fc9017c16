"""The Server: listeners, connections, timeouts and graceful shutdown for one process."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import _compat
from ..types import Application
from .connection import FastCGIProtocol
from .listeners import close_listeners, describe, open_listeners
from .state import ServerState, Wrap

if TYPE_CHECKING:
    from ..config import Config

logger = logging.getLogger("fcgi_async.server")

#: How often the ticker looks for idle and stalled connections, in seconds.
TICK_INTERVAL_S = 1.0


def _unix_server_options(loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """Keep the loop from unlinking a unix socket's file when its server closes.

    The file is removed by whoever bound it (:func:`close_listeners`); a draining prefork
    worker must leave the path its siblings still listen on, and a socket inherited from
    systemd or the web server is never ours to remove. asyncio on 3.13+ and uvloop 0.22+
    (on every Python; by default on 3.13+) take ``cleanup_socket`` and unlink unless told
    not to; older loops neither take it nor unlink. Called once per listener at start.
    """
    try:
        params = inspect.signature(loop.create_unix_server).parameters
    except (TypeError, ValueError):  # no signature to read: a loop that predates the option
        return {}
    return {"cleanup_socket": False} if "cleanup_socket" in params else {}


class Server:
    """Serves an :class:`Application` on the configured listeners in the running loop.

    Args:
        config: the configuration.
        app: the application (an adapter, or any object with the Application shape).
        sockets: listening sockets to serve instead of binding ``config.bind`` (a supervisor
            binds in its parent and passes them here).
        inherited: listening sockets passed to this process (systemd socket activation),
            served instead of the default bind, or besides an explicitly configured one.
        wrap: puts the configured features (status and ping endpoints, access log) in front
            of ``app`` once the state exists; the CLI's runner and supervisor pass
            :func:`fcgi_async.features.install_features`. Without it the server serves ``app``
            as given, and a config that enables a feature is refused (ValueError): the server
            package imports no feature, so that imports point one way (docs/architecture.md).

    Use ``await start()``, then ``await shutdown()``; or ``async with Server(...)``.
    """

    def __init__(
        self,
        config: Config,
        app: Application,
        sockets: Sequence[socket.socket] | None = None,
        *,
        inherited: Sequence[socket.socket] = (),
        wrap: Wrap | None = None,
    ) -> None:
        if wrap is None and (
            config.status_path or config.ping_path or config.access_log is not None
        ):
            raise ValueError(
                "the config enables the status page, ping or the access log: pass "
                "wrap=fcgi_async.features.install_features to Server"
            )
        self.config = config
        self.app = app
        self._wrap = wrap
        self._given_sockets = list(sockets) if sockets is not None else None
        self._inherited = list(inherited)
        self._sockets: list[socket.socket] = []
        self._owns_sockets = False
        #: Unix socket files we created, with their inode: removed at shutdown if still ours.
        self._unix_files: list[tuple[str, int]] = []
        self._servers: list[asyncio.base_events.Server] = []
        self._ticker: asyncio.Task[None] | None = None
        self._state: ServerState | None = None
        self._addresses: list[str] = []
        self._stopped = False

    @property
    def state(self) -> ServerState:
        """The shared state (available once started)."""
        if self._state is None:
            raise RuntimeError("server not started")
        return self._state

    @property
    def bound_addresses(self) -> list[str]:
        """The listening addresses, in ``--bind`` syntax (ports resolved); kept after shutdown."""
        return list(self._addresses)

    def _open_sockets(self) -> list[socket.socket]:
        if self._given_sockets is not None:
            return self._given_sockets
        self._owns_sockets = True
        return open_listeners(self.config, self._inherited, unix_files=self._unix_files)

    async def start(self) -> None:
        """Bind, run the app's startup, then listen. Raises what binding or the startup raised.

        Binding comes first: an address in use fails before the app starts (and would
        otherwise leave it started without a shutdown).
        """
        loop = asyncio.get_running_loop()
        self._state = state = ServerState(self.config, self.app, loop)
        if self._wrap is not None:
            state.app = self._wrap(state.app, state)
        self._sockets = self._open_sockets()
        self._addresses = [describe(s) for s in self._sockets]
        try:
            await self.app.startup()
        except BaseException:
            await self._close_servers()
            raise
        try:
            for sock in self._sockets:
                if sock.family == socket.AF_UNIX:
                    srv = await loop.create_unix_server(
                        lambda: FastCGIProtocol(state),
                        sock=sock,
                        backlog=self.config.backlog,
                        **_unix_server_options(loop),
                    )
                else:
                    srv = await loop.create_server(
                        lambda: FastCGIProtocol(state), sock=sock, backlog=self.config.backlog
                    )
                self._servers.append(srv)
        except BaseException:
            await self._close_servers()
            raise
        state.listeners = self._sockets
        self._ticker = loop.create_task(self._tick())
        for address in self.bound_addresses:
            logger.info("listening on %s", address)

    async def _tick(self) -> None:
        state = self.state
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            now = state.loop.time()
            for proto in list(state.connections):
                proto.check_timeouts(now)
            if state.status is not None:
                try:
                    state.status.sample()
                except Exception:  # the ticker must live on: idle timeouts depend on it
                    logger.exception("sampling the status page's maxima failed")
            if state.watch is not None:
                try:
                    state.watch.check(now)
                except Exception:  # the ticker must live on: idle timeouts depend on it
                    logger.exception("checking request timeouts failed")

    async def _close_servers(self) -> None:
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        if self._owns_sockets:
            # asyncio's Server.close() already closed the sockets, and a closed socket no
            # longer knows its path: the unix files are removed from what start() recorded.
            # Inherited sockets (fd://, fd 0) keep their files; they belong to whoever made them.
            close_listeners(self._sockets, unlink=False)
        for path, inode in self._unix_files:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
        self._unix_files.clear()

    async def stop_listening(self) -> None:
        """Stop accepting connections; open connections and their requests go on.

        A draining prefork worker calls this before :meth:`shutdown`, so that connections
        waiting in the shared listen backlog go to its siblings instead of being refused.
        """
        # asyncio's selector loops finish each accept in a task that needs its Server still
        # open: closing it under them drops those connections (a reset). So stop accepting
        # first, let one loop turn register what was accepted, then close.
        loop = asyncio.get_running_loop()
        if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            for sock in self._sockets:
                loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
        await self._close_servers()

    async def shutdown(self, graceful_timeout_s: float | None = None) -> None:
        """Stop accepting, let running requests finish, then cancel what is left.

        Runs once: later calls (``async with`` after an explicit shutdown) return at once, so
        the app's shutdown (ASGI lifespan) is never run twice.

        Args:
            graceful_timeout_s: how long running requests may take; the config's by default.
        """
        if self._stopped:
            return
        self._stopped = True
        timeout = (
            self.config.graceful_timeout_s if graceful_timeout_s is None else graceful_timeout_s
        )
        state = self.state
        state.accepting = False
        await self._close_servers()
        for proto in list(state.connections):
            proto.stop_accepting()
        if state.active_requests:
            logger.info(
                "waiting up to %.0f s for %d running request(s)", timeout, state.active_requests
            )
            try:
                async with _compat.timeout(timeout):
                    await state.idle_event.wait()
            except TimeoutError:
                logger.warning("graceful timeout: cancelling %d request(s)", state.active_requests)
        tasks = [task for task in state.tasks if not task.done()]
        for proto in list(state.connections):
            proto.abort()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.app.shutdown()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()
