"""Absurd settings and IPv4-mapped allowed clients, through a real ``fcgi-async`` process.

Findings 6, 7 and 12 (third bullet) of the hostile-peer review: NaN timeouts and limits past
what the C parser holds used to start a server with its protection silently off (or one whose
every connection raised OverflowError); ``--allowed-clients ::ffff:127.0.0.1`` refused the IPv4
client it names. Finding 12's second bullet (two instances on one unix path) is
``test_cfg_unix_bind_race.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cli import free_port
from tests.ops.fcgi import fcgi_request, params_for
from tests.ops.test_sockets import Process

pytestmark = pytest.mark.timeout(90)

#: Upper bound for the server process to start answering.
START_S = 30.0

APP = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "hostile_app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    env["PYTHONPATH"] = str(tmp_path)
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("argv", "env", "setting"),
    [
        (["--record-timeout", "nan"], {}, "record_timeout_s"),
        (["--keepalive-timeout", "inf"], {}, "keepalive_timeout_s"),
        ([], {"FCGI_ASYNC_GRACEFUL_TIMEOUT": "nan"}, "graceful_timeout_s"),
        (["--max-params-bytes", str(2**64)], {}, "max_params_bytes"),
        ([], {"FCGI_ASYNC_MAX_CONNECTIONS": str(2**64)}, "max_connections"),
        (["--config", "{conf}"], {}, "worker_timeout_s"),
    ],
)
def test_the_server_refuses_to_start_with_one_line(
    argv: list[str], env: dict[str, str], setting: str, tmp_path: Path
) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("worker_timeout_s = nan\n")
    argv = [a.replace("{conf}", str(conf)) for a in argv]
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "fcgi_async", "hostile_app:app", "-b", f"127.0.0.1:{port}", *argv],
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"fcgi-async: error: {setting} must be"), done.stderr


async def test_an_ipv4_mapped_allowed_client_admits_the_ipv4_peer(tmp_path: Path) -> None:
    port = free_port()
    server = Process(
        [
            sys.executable,
            "-m",
            "fcgi_async",
            "hostile_app:app",
            "-b",
            f"127.0.0.1:{port}",
            "--allowed-clients",
            "::ffff:127.0.0.1",
        ],
        tmp_path / "server.log",
        _env(tmp_path),
    )
    try:
        deadline = time.monotonic() + START_S
        while True:  # readiness: the first answered request (bounded)
            assert server.proc.poll() is None, server.log
            try:
                response = await fcgi_request(("127.0.0.1", port), params_for("/"))
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer within {START_S} s:\n{server.log}"
                await asyncio.sleep(0.1)
        assert response.body == b"ok"
        assert "not an allowed client" not in server.log
    finally:
        server.kill()
