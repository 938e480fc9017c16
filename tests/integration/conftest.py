"""Fixtures that start in-process Servers in the test's event loop (and stop them)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fcgi_async.config import Config
from fcgi_async.server import Server
from fcgi_async.types import Application


class Servers:
    """Starts Servers on loopback port 0 (or given binds); stops the ones still running."""

    def __init__(self) -> None:
        self.running: list[Server] = []

    async def start(self, app: Application, **settings: object) -> Server:
        """Start a Server for ``app``; ``settings`` are Config fields (bind defaults to port 0)."""
        settings.setdefault("bind", ("127.0.0.1:0",))
        server = Server(Config().replace(**settings), app)
        await server.start()
        self.running.append(server)
        return server

    async def stop(self, server: Server, graceful_timeout_s: float = 5.0) -> None:
        """Shut ``server`` down (once)."""
        self.running.remove(server)
        await server.shutdown(graceful_timeout_s)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Start servers with ``await servers.start(app, **config)``; all are stopped at teardown."""
    pool = Servers()
    yield pool
    for server in list(pool.running):
        await pool.stop(server, graceful_timeout_s=1.0)


@pytest.fixture
def short_tmp(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory whose paths fit in a unix socket address (108 bytes)."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="fa-") as name:
        yield Path(name)
