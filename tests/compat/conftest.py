"""Fixtures for the compatibility tests: fcgi-async as a subprocess, a real nginx in front.

Everything listens on loopback or on unix sockets inside pytest's temporary directories, on
free ports; readiness is polled with a deadline; every process started here is stopped at
teardown (fcgi-async with SIGTERM, and it must exit cleanly).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

NGINX = "/usr/sbin/nginx"
FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"
APPS_DIR = Path(__file__).parent / "apps"
REPO_ROOT = Path(__file__).resolve().parents[2]

#: How long a process gets to become ready or to exit before the test fails.
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0

#: The two raw test applications, one per adapter.
TEST_APPS = {"wsgi": "wsgi_app:app", "asgi": "asgi_app:app"}

requires_nginx = pytest.mark.skipif(
    not os.path.exists(NGINX), reason=f"{NGINX} is missing (.ci/run installs the nginx package)"
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _can_connect(address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(address)
        except OSError:
            return False
        return True


def wait_until_connectable(
    address: str | tuple[str, int], proc: subprocess.Popen[bytes], log: Path, what: str
) -> None:
    """Poll connect() until it succeeds; fail with the log if the process dies or time runs out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode} at start-up:\n{_tail(log)}")
        if _can_connect(address):
            return
        time.sleep(0.02)
    stop_process(proc, what, log, check=False)
    pytest.fail(f"{what} not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def stop_process(
    proc: subprocess.Popen[bytes], what: str, log: Path, *, sig: int = signal.SIGTERM, check: bool
) -> None:
    """Signal ``proc`` and wait for it; with ``check``, fail unless it exits with status 0."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
            if check:
                pytest.fail(f"{what} ignored {signal.Signals(sig).name}:\n{_tail(log)}")
            return
    if check and proc.returncode != 0:
        pytest.fail(f"{what} exited with {proc.returncode}:\n{_tail(log)}")


@dataclass
class FcgiServer:
    """A running ``python -m fcgi_async`` subprocess."""

    proc: subprocess.Popen[bytes]
    address: str | tuple[str, int]
    log: Path
    gate_dir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def nginx_address(self) -> str:
        """The address as nginx's ``fastcgi_pass``/``server`` wants it."""
        if isinstance(self.address, str):
            return f"unix:{self.address}"
        return f"{self.address[0]}:{self.address[1]}"

    @property
    def cgi_fcgi_address(self) -> str:
        """The address as ``cgi-fcgi -connect`` wants it."""
        if isinstance(self.address, str):
            return self.address
        return f"{self.address[0]}:{self.address[1]}"

    def rss_kib(self) -> int:
        """The server's resident memory (VmRSS) in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def socket_inodes(self) -> set[str]:
        """The inodes of the sockets the server process holds open right now."""
        inodes = set()
        fd_dir = Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:"):
                    inodes.add(target)
        return inodes

    def log_text(self) -> str:
        """The server's whole log (stdout and stderr) so far."""
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_fcgi_async(
    app: str,
    workdir: Path,
    *,
    tcp: bool = False,
    app_dir: Path = APPS_DIR,
    extra_args: Sequence[str] = (),
    name: str = "app",
) -> Iterator[FcgiServer]:
    """Start fcgi-async serving ``app``, yield it when connectable, SIGTERM it afterwards."""
    address: str | tuple[str, int]
    if tcp:
        address = ("127.0.0.1", free_port())
        bind = f"{address[0]}:{address[1]}"
    else:
        address = str(workdir / f"{name}.sock")
        bind = f"unix:{address}"
    gate_dir = workdir / f"{name}-gates"
    gate_dir.mkdir(exist_ok=True)
    log = workdir / f"{name}.log"
    env = dict(os.environ, COMPAT_GATE_DIR=str(gate_dir), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    argv = [
        sys.executable,
        "-m",
        "fcgi_async",
        app,
        "--bind",
        bind,
        "--app-dir",
        str(app_dir),
        *extra_args,
    ]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    what = f"fcgi-async {app}"
    try:
        wait_until_connectable(address, proc, log, what)
        yield FcgiServer(proc, address, log, gate_dir)
    finally:
        stop_process(proc, what, log, check=True)


@dataclass
class Nginx:
    """A running nginx on 127.0.0.1:``port``."""

    proc: subprocess.Popen[bytes]
    port: int
    prefix: Path
    config: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        return _tail(self.prefix / "error.log", 200_000)


def nginx_main_config(port: int, prefix: Path, http_body: str) -> str:
    """A whole nginx.conf whose every path lies inside ``prefix``."""
    return f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    proxy_temp_path {prefix}/proxy_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    client_max_body_size 200m;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
{http_body}
    }}
}}
"""


@contextlib.contextmanager
def run_nginx(prefix: Path, config_for_port: object) -> Iterator[Nginx]:
    """Start nginx with the config ``config_for_port(port)`` returns, in the foreground."""
    assert callable(config_for_port)
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = config_for_port(port)
    conf = prefix / "nginx.conf"
    conf.write_text(config)
    log = prefix / "nginx.stderr"
    globals_ = "daemon off;" + (" user root;" if os.getuid() == 0 else "")
    argv = [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    with open(log, "wb") as log_file:
        check = subprocess.run(
            [*argv, "-t", "-g", globals_], stdout=log_file, stderr=subprocess.STDOUT, check=False
        )
    if check.returncode != 0:
        pytest.fail(f"nginx rejected its config:\n{_tail(log)}\n{config}")
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [*argv, "-g", globals_],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_connectable(("127.0.0.1", port), proc, log, "nginx")
        yield Nginx(proc, port, prefix, config)
    finally:
        # SIGQUIT would wait for open keep-alive client connections; SIGTERM is a fast stop.
        stop_process(proc, "nginx", log, check=False)


def compat_locations(upstream: str) -> str:
    """The locations the compat tests use, all served by the app at ``upstream``.

    * ``/`` goes through an upstream block with keep-alive (``fastcgi_keep_conn on``).
    * ``/nokeep/`` goes straight to the socket: nginx closes the connection per request.
    * ``/prefix/`` mounts the app below ``/prefix`` with ``fastcgi_split_path_info``.
    * ``/upload/`` streams request bodies (``fastcgi_request_buffering off``), so a chunked
      upload reaches the app with an empty CONTENT_LENGTH.
    """
    return f"""\
        location / {{
            include {FASTCGI_PARAMS};
            fastcgi_pass app_keepalive;
            fastcgi_keep_conn on;
        }}
        location /nokeep/ {{
            fastcgi_split_path_info ^(/nokeep)(/.*)$;
            include {FASTCGI_PARAMS};
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_pass {upstream};
        }}
        location /prefix/ {{
            fastcgi_split_path_info ^(/prefix)(/.*)$;
            include {FASTCGI_PARAMS};
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_pass app_keepalive;
            fastcgi_keep_conn on;
        }}
        location /upload/ {{
            fastcgi_split_path_info ^(/upload)(/.*)$;
            include {FASTCGI_PARAMS};
            fastcgi_param PATH_INFO $fastcgi_path_info;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_request_buffering off;
            fastcgi_pass {upstream};
        }}"""


def compat_nginx_config(port: int, prefix: Path, upstream: str) -> str:
    config = nginx_main_config(port, prefix, compat_locations(upstream))
    upstream_block = f"""\
    upstream app_keepalive {{
        server {upstream};
        keepalive 8;
    }}
"""
    return config.replace("http {\n", "http {\n" + upstream_block, 1)


@dataclass
class Stack:
    """fcgi-async serving one of the test apps, with nginx in front."""

    adapter: str
    server: FcgiServer
    nginx: Nginx

    @property
    def url(self) -> str:
        return self.nginx.url


@pytest.fixture(scope="module", params=sorted(TEST_APPS))
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Module-scoped: the WSGI and the ASGI test app, each behind its own nginx."""
    if not os.path.exists(NGINX):
        pytest.skip(f"{NGINX} is missing (.ci/run installs the nginx package)")
    adapter: str = request.param
    workdir = tmp_path_factory.mktemp(adapter)
    with run_fcgi_async(TEST_APPS[adapter], workdir, extra_args=["--interface", adapter]) as server:
        upstream = server.nginx_address
        with run_nginx(
            workdir / "nginx", lambda port: compat_nginx_config(port, workdir / "nginx", upstream)
        ) as nginx:
            yield Stack(adapter, server, nginx)


def fetch_error_after(url: str) -> tuple[int | None, bytes | None, str]:
    """GET ``url``; return (status or None, body or None if reading it failed, error)."""
    with httpx.Client(timeout=30.0) as client:
        try:
            with client.stream("GET", url) as response:
                try:
                    body = response.read()
                except httpx.TransportError as exc:
                    return response.status_code, None, repr(exc)
                return response.status_code, body, ""
        except httpx.TransportError as exc:
            return None, None, repr(exc)
