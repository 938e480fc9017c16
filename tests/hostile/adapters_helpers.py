"""Helpers of the adapter hostile tests: a real ``python -m fcgi_async`` and a raw FastCGI peer.

The server runs an application written into a temporary directory, on 127.0.0.1 and a free
port, its error log in a file; every server is stopped at teardown (see :func:`servers`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from fcgi_async.protocol import (
    NEED_DATA,
    ClientConnection,
    RemoteProtocolError,
    RequestEnded,
    StderrReceived,
    StdoutReceived,
)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
#: The most a raw request may take before the test fails.
REQUEST_TIMEOUT_S = 10.0


@dataclass
class Served:
    """A running server."""

    proc: subprocess.Popen[bytes]
    address: tuple[str, int]
    log: Path

    def log_lines(self) -> list[str]:
        """The error log so far, line by line."""
        return self.log.read_text(errors="replace").splitlines()


@dataclass
class Answer:
    """One request's answer as the peer saw it."""

    stdout: bytes = b""
    stderr: bytes = b""
    ended: bool = False

    @property
    def head(self) -> bytes:
        return self.stdout.partition(b"\r\n\r\n")[0]

    @property
    def body(self) -> bytes:
        return self.stdout.partition(b"\r\n\r\n")[2]

    @property
    def status(self) -> int:
        for line in self.head.split(b"\r\n"):
            if line.lower().startswith(b"status:"):
                return int(line.split()[1])
        return 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def servers() -> Iterator[list[Served]]:
    """Servers started by a test with :func:`start`; all are stopped at teardown."""
    started: list[Served] = []
    yield started
    for served in started:
        proc = served.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # a loop that never runs never sees the signal
                proc.kill()
                proc.wait(STOP_TIMEOUT_S)


def start(
    started: list[Served], tmp_path: Path, app_source: str, *args: str, name: str = "hostileapp"
) -> Served:
    """Start ``python -m fcgi_async name:app`` with ``app_source`` as ``name.py``; return it
    once it accepts connections."""
    (tmp_path / f"{name}.py").write_text(app_source)
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcgi_async", f"{name}:app", "--app-dir", str(tmp_path),
         "--bind", f"127.0.0.1:{port}", "--error-log", str(log), "--graceful-timeout", "2",
         *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    served = Served(proc, ("127.0.0.1", port), log)
    started.append(served)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with socket.socket() as s:
            try:
                s.connect(served.address)
                return served
            except OSError:
                pass
        assert proc.poll() is None, served.log_lines()
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.02)


def nginx_params(method: str, uri: str, **extra: str) -> dict[bytes, bytes]:
    """Params as nginx's stock fastcgi_params sends them."""
    path, _, query = uri.partition("?")
    params = {
        "REQUEST_METHOD": method,
        "REQUEST_URI": uri,
        "DOCUMENT_URI": path,
        "SCRIPT_NAME": path,
        "QUERY_STRING": query,
        "CONTENT_TYPE": "",
        "CONTENT_LENGTH": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_SCHEME": "http",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "SERVER_ADDR": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_NAME": "localhost",
        **extra,
    }
    return {k.encode(): v.encode() for k, v in params.items()}


def exchange(
    served: Served, requests: Mapping[int, tuple[dict[bytes, bytes], bytes]]
) -> dict[int, Answer]:
    """Send ``{request_id: (params, body)}`` on one connection (multiplexed when several),
    read until every request ended or the connection closed; return what each got."""
    client = ClientConnection()
    out: list[bytes | memoryview] = []
    for rid, (params, body) in requests.items():
        out.append(client.begin_request(rid, keep_conn=True))
        out += client.send_params(rid, params)
        if body:
            out += client.send_stdin(rid, body)
        out.append(client.end_stdin(rid))
    answers = {rid: Answer() for rid in requests}
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    with socket.create_connection(served.address, timeout=REQUEST_TIMEOUT_S) as s:
        s.sendall(b"".join(bytes(b) for b in out))
        while not all(a.ended for a in answers.values()):
            assert time.monotonic() < deadline, "no END_REQUEST in time"
            data = s.recv(65536)
            if not data:
                break
            try:
                client.receive_data(data)
                while (event := client.next_event()) is not NEED_DATA:
                    if isinstance(event, StdoutReceived):
                        answers[event.request_id].stdout += event.data
                    elif isinstance(event, StderrReceived):
                        answers[event.request_id].stderr += event.data
                    elif isinstance(event, RequestEnded):
                        answers[event.request_id].ended = True
            except RemoteProtocolError:  # a broken record (fail()): what came so far tells
                break
    return answers
