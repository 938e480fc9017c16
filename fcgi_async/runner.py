"""Run a Server in this process until SIGTERM/SIGINT: event loop choice and signal handling."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Any

from . import _compat
from .config import Config
from .features import install_features
from .importer import AppLoadError
from .logs import reopen_log_files
from .server import Server
from .types import Application

logger = logging.getLogger("fcgi_async")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the event loop factory for ``--loop`` (None = asyncio's default)."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise AppLoadError("--loop uvloop given but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


#: The signals that stop a serving process gracefully (SIGUSR1 reopens the log files).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def handle_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Callable[[], None]:
    """Wire a serving process's signals: :data:`STOP_SIGNALS` set ``stop``, SIGUSR1 reopens
    the log files (logrotate's postrotate). Used by :func:`serve` and every supervised worker.

    Returns:
        A function that removes these handlers again.
    """
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, reopen_log_files)

    def remove() -> None:
        for sig in (*STOP_SIGNALS, signal.SIGUSR1):
            loop.remove_signal_handler(sig)

    return remove


async def serve(
    config: Config,
    app: Application,
    sockets: Sequence[socket.socket] | None = None,
    *,
    ready: Callable[[Server], Any] | None = None,
    inherited: Sequence[socket.socket] = (),
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully.

    ``ready`` is called once the server listens; ``inherited`` are systemd's sockets (see
    :class:`~fcgi_async.server.Server`).
    """
    stop = asyncio.Event()
    remove_handlers = handle_signals(asyncio.get_running_loop(), stop)
    server = Server(config, app, sockets, inherited=inherited, wrap=install_features)
    await server.start()
    try:
        if ready is not None:
            ready(server)
        await stop.wait()
        logger.info("stopping: no new connections; finishing running requests")
    finally:
        remove_handlers()
        await server.shutdown()
    logger.info("stopped")


def run(
    config: Config,
    app: Application,
    sockets: Sequence[socket.socket] | None = None,
    *,
    ready: Callable[[Server], Any] | None = None,
    inherited: Sequence[socket.socket] = (),
) -> None:
    """Create the configured event loop and :func:`serve` on it until stopped."""
    _compat.run_with_loop(
        serve(config, app, sockets, ready=ready, inherited=inherited), loop_factory(config.loop)
    )
