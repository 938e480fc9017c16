"""Fixtures: a raw FastCGI application module in tmp_path and supervised servers running it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .helpers import Supervised

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="prefork needs os.fork")

#: A raw Application: answers "<pid> <version>"; /slow sleeps, /hang blocks the event loop.
#: The version is read from version.txt at import time, so a reload shows new code. A "crash"
#: file makes its startup fail; a "use-applog" file makes it log each request to app.log.
APP = """
import asyncio, logging, os, time
_here = os.path.dirname(os.path.abspath(__file__))
try:
    with open(os.path.join(_here, "version.txt")) as f:
        VERSION = f.read().strip()
except FileNotFoundError:
    VERSION = "1"


if os.path.exists(os.path.join(_here, "use-applog")):
    logging.getLogger().addHandler(logging.FileHandler(os.path.join(_here, "app.log")))
_applog = logging.getLogger("app")


class App:
    async def startup(self):
        if os.path.exists(os.path.join(_here, "crash")):
            raise RuntimeError("startup refuses: the crash file exists")

    async def shutdown(self):
        pass

    async def __call__(self, request):
        uri = request.params.get(b"REQUEST_URI", b"/")
        if uri.startswith(b"/slow"):
            open(os.path.join(_here, f"slow-{os.getpid()}"), "w").close()
            await asyncio.sleep(float(uri.partition(b"?")[2] or 1.5))
        elif uri.startswith(b"/hang"):
            time.sleep(60)
        _applog.warning("served by %d", os.getpid())
        body = f"{os.getpid()} {VERSION}".encode()
        await request.end(b"Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n" + body)


app = App()
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding app.py (see APP)."""
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


@pytest.fixture
def supervised(app_dir: Path) -> Iterator[Callable[..., Supervised]]:
    """Start ``fcgi-async app:app`` with extra flags; everything is killed at teardown."""
    started: list[Supervised] = []

    def start(*args: str) -> Supervised:
        server = Supervised(app_dir, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()
