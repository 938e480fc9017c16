"""Talk to a supervised fcgi-async over a unix socket, and watch its processes.

Deliberately synchronous and small: one request per fresh connection (so each request goes
through ``accept`` and can land on any worker), built on the sans-IO ``ClientConnection``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fcgi_async.protocol import NEED_DATA, ClientConnection, RequestEnded, StdoutReceived

#: Upper bound for any single condition a test waits on.
WAIT_S = 15.0


class RequestFailed(Exception):
    """The request did not get a complete response."""


def fcgi_get(address: str, uri: str = "/", timeout: float = 10.0) -> tuple[int, bytes]:
    """Send one GET over a fresh unix-socket connection; return (HTTP status, body).

    Raises:
        RequestFailed: connection refused or closed before END_REQUEST, or a timeout.
    """
    conn = ClientConnection()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        rid = conn.free_request_id()
        params = {
            b"REQUEST_METHOD": b"GET",
            b"REQUEST_URI": uri.encode(),
            b"SCRIPT_NAME": b"",
            b"PATH_INFO": uri.split("?")[0].encode(),
            b"QUERY_STRING": uri.partition("?")[2].encode(),
            b"SERVER_PROTOCOL": b"HTTP/1.1",
            b"SERVER_NAME": b"localhost",
            b"SERVER_PORT": b"80",
        }
        out = [conn.begin_request(rid, keep_conn=False), *conn.send_params(rid, params)]
        out.append(conn.end_stdin(rid))
        sock.sendall(b"".join(out))
        stdout = bytearray()
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                data = sock.recv(65536)
                if not data:
                    raise RequestFailed("connection closed before END_REQUEST")
                conn.receive_data(data)
            elif isinstance(event, StdoutReceived):
                stdout += event.data
            elif isinstance(event, RequestEnded):
                break
    except OSError as exc:
        raise RequestFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        sock.close()
    head, _, body = bytes(stdout).partition(b"\r\n\r\n")
    status = 200
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"status:"):
            status = int(line.split()[1])
    return status, body


def wait_for(condition: Callable[[], object], timeout: float = WAIT_S, what: str = "") -> None:
    """Poll ``condition`` every 50 ms until it is true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.05)


def children(pid: int) -> set[int]:
    """Live (not zombie) child processes of ``pid``, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


class Supervised:
    """A ``python -m fcgi_async`` process in its own process group, logging to a file."""

    def __init__(self, app_dir: Path, *args: str, app: str = "app:app") -> None:
        self.address = str(app_dir / "s.sock")
        self.log_path = app_dir / "server.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in kill()
        argv = [sys.executable, "-m", "fcgi_async", app, "--app-dir", str(app_dir)]
        argv += ["--bind", f"unix:{self.address}", "--graceful-timeout", "10", *args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    @property
    def pid(self) -> int:
        """The supervisor's pid."""
        return self.proc.pid

    @property
    def log(self) -> str:
        """Everything logged so far."""
        return self.log_path.read_text(errors="replace")

    def workers(self) -> set[int]:
        """The worker pids alive now."""
        return children(self.pid)

    def get(self, uri: str = "/") -> tuple[int, bytes]:
        """One request (see :func:`fcgi_get`)."""
        return fcgi_get(self.address, uri)

    def answers(self) -> bool:
        """True once a request succeeds."""
        try:
            return self.get()[0] == 200
        except RequestFailed:
            return False

    def listening(self) -> set[int]:
        """Live workers that logged that they listen."""
        log = self.log
        return {
            pid for pid in self.workers() if f"[{pid}] INFO fcgi_async.server: listening" in log
        }

    def wait_serving(self, workers: int | None = None) -> None:
        """Wait until requests succeed (and ``workers`` workers are alive and listening)."""
        wait_for(self.answers, what="a first answer")
        if workers is not None:
            wait_for(
                lambda: len(self.workers()) == workers == len(self.listening()),
                what=f"{workers} listening workers",
            )

    def signal(self, sig: signal.Signals) -> None:
        """Signal the supervisor."""
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        """Wait for the supervisor to exit; return its status."""
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill the whole process group (teardown)."""
        # The group outlives the supervisor when it died first: kill it regardless.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.proc.wait(WAIT_S)
        self._log.close()


@dataclass
class Load:
    """Steady request streams from ``concurrency`` threads until stopped."""

    address: str
    concurrency: int = 2
    uri: str = "/"
    ok: list[bytes] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for _ in range(self.concurrency):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = fcgi_get(self.address, self.uri)
            except Exception as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                continue
            with self._lock:
                if status == 200:
                    self.ok.append(body)
                else:
                    self.failures.append(f"status {status}: {body!r}")

    def count(self) -> int:
        """Successful requests so far."""
        with self._lock:
            return len(self.ok)

    def bodies_since(self, start: int) -> list[bytes]:
        """Bodies of the successful requests after the ``start``-th."""
        with self._lock:
            return self.ok[start:]

    def stop(self) -> None:
        """Stop and join the threads."""
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT_S)


NGINX = "/usr/sbin/nginx"
FASTCGI_PARAMS = "/etc/nginx/fastcgi_params"


class Nginx:
    """nginx in the foreground on a free loopback port, passing ``/`` to ``upstream`` (a unix
    socket) through an upstream block with keep-alive connections (``fastcgi_keep_conn on``):
    the case where a draining worker closes connections nginx holds."""

    def __init__(self, prefix: Path, upstream: str) -> None:
        prefix.mkdir()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        temp = " ".join(
            f"{kind}_temp_path {prefix}/{kind};"
            for kind in ("client_body", "fastcgi", "proxy", "uwsgi", "scgi")
        )
        self.error_log = prefix / "error.log"
        config = prefix / "nginx.conf"
        config.write_text(
            f"""worker_processes 1; pid {prefix}/nginx.pid; error_log {self.error_log} info;
events {{ worker_connections 1024; }}
http {{
    access_log off; {temp}
    upstream app {{ server unix:{upstream}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{ include {FASTCGI_PARAMS}; fastcgi_pass app; fastcgi_keep_conn on; }}
    }}
}}
"""
        )
        globals_ = "daemon off;" + (" user root;" if os.getuid() == 0 else "")
        self._stderr = open(prefix / "stderr", "wb")  # noqa: SIM115 - closed in stop()
        argv = [NGINX, "-p", str(prefix), "-e", str(self.error_log), "-c", str(config)]
        self.proc = subprocess.Popen(
            [*argv, "-g", globals_],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._connectable, what="nginx listening")

    def _connectable(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"nginx exited with {self.proc.returncode}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop nginx (SIGTERM: a fast stop) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(WAIT_S)
        self._stderr.close()


@dataclass
class HttpLoad:
    """Steady HTTP/1.1 keep-alive request streams to nginx from ``concurrency`` threads."""

    port: int
    concurrency: int = 4
    ok: list[bytes] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> HttpLoad:
        for _ in range(self.concurrency):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(WAIT_S)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
            except Exception as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            with self._lock:
                if response.status == 200:
                    self.ok.append(body)
                else:
                    self.failures.append(f"{response.status}: {body[:200]!r}")
        conn.close()

    def count(self) -> int:
        """Successful requests so far."""
        with self._lock:
            return len(self.ok)

    def bodies_since(self, start: int) -> list[bytes]:
        """Bodies of the successful requests after the ``start``-th."""
        with self._lock:
            return self.ok[start:]
