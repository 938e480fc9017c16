"""Fixtures for the client tests: our server in-process, a wire-recording proxy, php-fpm.

Servers listen on 127.0.0.1 port 0 or on unix sockets in temporary directories; readiness is
polled with a deadline; everything started here is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fcgi_async.config import Config
from fcgi_async.features import install_features
from fcgi_async.server import Server
from fcgi_async.types import Request
from tests.protocol.helpers import WireRecord, parse_wire

PHP_FPM = "/usr/sbin/php-fpm8.2"
START_TIMEOUT_S = 15.0

Handler = Callable[[Request], Awaitable[None]]


class RawApp:
    """A raw Application: each request is handed to ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        #: Set when the first request reaches the application.
        self.arrived = asyncio.Event()

    async def __call__(self, request: Request) -> None:
        self.requests.append(request)
        self.arrived.set()
        await self.handler(request)

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


async def read_body(request: Request) -> bytes:
    """The whole request body."""
    body = b""
    while chunk := await request.receive():
        body += chunk
    return body


@contextlib.asynccontextmanager
async def serve(
    handler: Handler, bind: str = "127.0.0.1:0", **config: Any
) -> AsyncIterator[tuple[Server, str, RawApp]]:
    """Run our Server in this loop (127.0.0.1:0 by default) with a raw app.

    Yields ``(server, address, app)``.
    """
    app = RawApp(handler)
    server = Server(Config(bind=(bind,), **config), app, wrap=install_features)
    await server.start()
    try:
        yield server, server.bound_addresses[0], app
    finally:
        await server.shutdown(graceful_timeout_s=0.5)


@dataclass
class Proxy:
    """A TCP proxy that records every byte each way, per connection."""

    target: str
    address: str = ""
    upstream: list[bytearray] = field(default_factory=list)
    downstream: list[bytearray] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def records_up(self, index: int = 0) -> list[WireRecord]:
        """Records the client sent on connection ``index``."""
        return parse_wire(bytes(self.upstream[index]))

    def records_down(self, index: int = 0) -> list[WireRecord]:
        """Records the server sent on connection ``index``."""
        return parse_wire(bytes(self.downstream[index]))


@contextlib.asynccontextmanager
async def recording_proxy(target: str) -> AsyncIterator[Proxy]:
    """Proxy 127.0.0.1:random -> ``target`` (HOST:PORT), recording the wire."""
    proxy = Proxy(target)
    host, _, port = target.rpartition(":")

    async def pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray
    ) -> None:
        try:
            while data := await reader.read(65536):
                log += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up, down = bytearray(), bytearray()
        proxy.upstream.append(up)
        proxy.downstream.append(down)
        s_reader, s_writer = await asyncio.open_connection(host, int(port))
        for coro in (pump(reader, s_writer, up), pump(s_reader, writer, down)):
            task = asyncio.get_running_loop().create_task(coro)
            proxy.tasks.add(task)
            task.add_done_callback(proxy.tasks.discard)

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    proxy.address = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        srv.close()
        for task in list(proxy.tasks):
            task.cancel()
        if proxy.tasks:
            await asyncio.wait(proxy.tasks, timeout=2)
        await srv.wait_closed()


# ------------------------------------------------------------------------------- php-fpm
requires_php_fpm = pytest.mark.skipif(
    not os.path.exists(PHP_FPM), reason=f"{PHP_FPM} is missing (.ci/run installs php8.2-fpm)"
)

ECHO_PHP = r"""<?php
header('Content-Type: application/json');
setcookie('first', 'one');
setcookie('second', 'two');
$files = [];
foreach ($_FILES as $key => $f) {
    $files[$key] = [
        'name' => $f['name'], 'type' => $f['type'], 'size' => $f['size'],
        'error' => $f['error'],
        'content' => $f['error'] === 0 ? base64_encode(file_get_contents($f['tmp_name'])) : null,
    ];
}
echo json_encode([
    'server' => $_SERVER,
    'get' => $_GET,
    'post' => $_POST,
    'files' => $files,
    'cookie' => $_COOKIE,
    'headers' => getallheaders(),
    'input' => file_get_contents('php://input'),
]);
"""

SCRIPTS = {
    "echo.php": ECHO_PHP,
    "notfound.php": "<?php http_response_code(404); echo 'missing';",
    "redirect.php": "<?php header('Location: /elsewhere'); ",
    "stderr.php": "<?php error_log('hello from php'); echo 'ok';",
    "big.php": "<?php echo str_repeat('0123456789abcdef', 65536);",
    "hello.php": "<?php echo 'hello ', $_GET['i'] ?? '', ' ', getmypid();",
    "work.php": "<?php usleep((int)($_GET['us'] ?? 0)); echo 'done ', $_GET['i'] ?? '';",
}


@dataclass
class PhpFpm:
    """A running php-fpm: its socket address and document root."""

    address: str
    socket_path: Path
    root: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    max_children: int = 2
    pm: str = "static"

    def script(self, name: str) -> str:
        """Absolute path of a test script."""
        return str(self.root / name)

    def stop(self) -> None:
        """Stop php-fpm (graceful SIGQUIT, then kill); idempotent."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _can_connect(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


@contextlib.contextmanager
def run_php_fpm(
    base: Path, *, max_children: int = 2, pm: str = "static", pool: str = "test"
) -> Iterator[PhpFpm]:
    """php-fpm in the foreground with its own pool on a unix socket under ``base``.

    ``pm`` is ``static``, ``dynamic`` or ``ondemand``; stopped (SIGQUIT, then kill) on exit or
    earlier by :meth:`PhpFpm.stop`.
    """
    if not os.path.exists(PHP_FPM):
        pytest.skip(f"{PHP_FPM} is missing (.ci/run installs php8.2-fpm)")
    root = base / "www"
    root.mkdir()
    for name, text in SCRIPTS.items():
        (root / name).write_text(text)
    sock = base / "php.sock"
    log = base / "php-fpm.log"
    as_root = os.getuid() == 0
    user = "user = root\ngroup = root\n" if as_root else ""
    extra = "pm.start_servers = 1\npm.min_spare_servers = 1\npm.max_spare_servers = 1\n"
    conf = base / "php-fpm.conf"
    conf.write_text(
        f"""[global]
pid = {base}/php-fpm.pid
error_log = {log}
daemonize = no

[{pool}]
{user}listen = {sock}
pm = {pm}
pm.max_children = {max_children}
{extra if pm == "dynamic" else ""}pm.status_path = /status
ping.path = /ping
ping.response = pong
catch_workers_output = yes
clear_env = yes
"""
    )
    cmd = [PHP_FPM, "-F", "-y", str(conf), "-p", str(base)]
    if as_root:
        cmd.append("-R")
    with open(base / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    fpm = PhpFpm(f"unix:{sock}", sock, root, log, proc, max_children, pm)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (sock.exists() and _can_connect(sock)):
            if proc.poll() is not None:
                pytest.fail(f"php-fpm exited with {proc.returncode}:\n{_read(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"php-fpm not ready after {START_TIMEOUT_S} s:\n{_read(log)}")
            time.sleep(0.02)
        yield fpm
    finally:
        fpm.stop()


@pytest.fixture(scope="module")
def php_fpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhpFpm]:
    """php-fpm (``pm = static``, 2 children) on a unix socket; stopped at teardown."""
    with run_php_fpm(tmp_path_factory.mktemp("fpm")) as fpm:
        yield fpm


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return "(no log)"
