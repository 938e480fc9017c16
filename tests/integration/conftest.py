"""Fixtures that start in-process Servers in the test's event loop (and stop them).

The raw-socket tests run on both asyncio's loop and uvloop, which the CLI uses by default:
their transports differ in flow control, ``write_eof`` and close timing.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on CPython/POSIX
    uvloop = None  # type: ignore[assignment]

from fcgi_async.config import Config
from fcgi_async.features import install_features
from fcgi_async.server import Server
from fcgi_async.types import Application


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run ``test_raw_sockets.py`` on asyncio and uvloop; other tests here on asyncio only."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if item.path.name == "test_raw_sockets.py" and uvloop is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories


class Servers:
    """Starts Servers on loopback port 0 (or given binds); stops the ones still running."""

    def __init__(self) -> None:
        self.running: list[Server] = []

    async def start(self, app: Application, **settings: object) -> Server:
        """Start a Server for ``app``; ``settings`` are Config fields (bind defaults to port 0)."""
        settings.setdefault("bind", ("127.0.0.1:0",))
        server = Server(Config().replace(**settings), app, wrap=install_features)
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
