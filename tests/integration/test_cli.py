"""The ``fcgi-async`` command: argument errors in-process, start-up errors and signals for real.

In-process tests call :func:`fcgi_async.cli.main` only for what fails before logging is set
up or a loop runs (usage and configuration errors, ``--help``). Everything else runs
``python -m fcgi_async`` as a subprocess serving a raw Application written to ``tmp_path``,
waits for readiness by polling ``connect()`` with a deadline, and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcgi_async import __version__
from fcgi_async.cli import config_from_args, main, parse_args
from fcgi_async.importer import AppLoadError
from fcgi_async.protocol import (
    NEED_DATA,
    ClientConnection,
    ProtocolStatus,
    RequestEnded,
    StdoutReceived,
)
from fcgi_async.runner import loop_factory

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0

RAW_APP = textwrap.dedent(
    """
    import asyncio
    import os
    from pathlib import Path

    HERE = Path(__file__).parent


    class RawApp:
        async def __call__(self, req):
            body = b""
            while chunk := await req.receive():
                body += chunk
            if body == b"slow":
                (HERE / "slow-started").write_text("yes")
                await asyncio.sleep(0.5)
            await req.end(
                b"Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n"
                + b"pid=%d body=%s" % (os.getpid(), body)
            )

        async def startup(self):
            (HERE / "events").open("a").write("startup\\n")

        async def shutdown(self):
            (HERE / "events").open("a").write("shutdown\\n")


    app = RawApp()
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A directory holding ``rawapp.py`` (``rawapp:app``), short enough for unix sockets."""
    (tmp_path / "rawapp.py").write_text(RAW_APP)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fcgi_async", *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connectable(address: str | tuple[str, int]) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as s:
        s.settimeout(1.0)
        try:
            s.connect(address)
        except OSError:
            return False
        return True


def wait_ready(proc: subprocess.Popen[str], address: str | tuple[str, int]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _connectable(address):
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"server exited with {proc.returncode} at start-up:\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready after {START_TIMEOUT_S} s")
        time.sleep(0.02)


def fcgi_request(
    address: str | tuple[str, int], body: bytes = b"", params: dict[bytes, bytes] | None = None
) -> bytes:
    """One FastCGI request over a blocking socket; return the response body."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    client = ClientConnection()
    with socket.socket(family) as s:
        s.settimeout(10)
        s.connect(address)
        frames: list[bytes | memoryview] = [client.begin_request(1, keep_conn=False)]
        frames += client.send_params(1, {b"REQUEST_METHOD": b"POST", **(params or {})})
        frames += [*client.send_stdin(1, body), client.end_stdin(1)]
        s.sendall(b"".join(bytes(f) for f in frames))
        stdout = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(65536)
            assert data, "EOF before END_REQUEST"
            client.receive_data(data)
            while (event := client.next_event()) is not NEED_DATA:
                if isinstance(event, StdoutReceived):
                    stdout += event.data
                elif isinstance(event, RequestEnded):
                    assert event.protocol_status == ProtocolStatus.REQUEST_COMPLETE
                    return stdout.partition(b"\r\n\r\n")[2]
    raise AssertionError("no END_REQUEST within 10 s")


@pytest.fixture
def launch() -> Iterator[list[subprocess.Popen[str]]]:
    """Servers started by a test; any still running at teardown is killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=STOP_TIMEOUT_S)


def start(
    procs: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcgi_async", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or _env(),
    )
    procs.append(proc)
    return proc


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    return proc.returncode, err


# ----------------------------------------------------------------------- in-process


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: MODULE:ATTR"),
        (["app:app", "--bogus"], "unrecognized arguments: --bogus"),
        (["app:app", "--threads", "many"], "argument --threads: invalid int value: 'many'"),
        (["app:app", "--socket-mode", "rw"], "'rw' is not an octal mode like 660"),
        (["app:app", "--interface", "cgi"], "argument --interface: invalid choice: 'cgi'"),
    ],
)
def test_usage_errors_return_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ={}) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: fcgi-async")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"FCGI_ASYNC_THREADS": "many"}, "environment variable FCGI_ASYNC_THREADS"),
        ({"FCGI_ASYNC_FACTORY": "perhaps"}, "'perhaps' is not a boolean"),
        ({"FCGI_ASYNC_LOG_LEVEL": "loud"}, "environment variable FCGI_ASYNC_LOG_LEVEL"),
        ({"FCGI_ASYNC_INTERFACE": "cgi"}, "environment variable FCGI_ASYNC_INTERFACE"),
    ],
)
def test_bad_environment_variables_are_usage_errors(
    environ: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["app:app"], environ=environ) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["app:app", "--threads", "0"], "threads must be a whole number from 1 to 1,024"),
        (["app:app", "--roles", "responder,janitor"], "unknown role 'janitor'"),
        (["app:app", "--keepalive-timeout", "0"], "keepalive_timeout_s must be a number"),
        (["app:app", "--allowed-clients", "10.0.0.1,nginx"], "'nginx' is not an IP address"),
        (["nosuchmodule:app", "--bind", "nonsense"], "bad bind 'nonsense'"),
    ],
)
def test_config_errors_return_1_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ={}) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("fcgi-async: error: ")
    assert message in err


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], environ={}) == 0
    out = capsys.readouterr().out
    assert "FCGI_ASYNC_BIND" in out
    assert "--max-body-buffer-bytes" in out


def test_flags_override_environment_over_defaults() -> None:
    env = {"FCGI_ASYNC_BIND": "unix:/run/a.sock, 127.0.0.1:9001", "FCGI_ASYNC_THREADS": "4"}
    from_env = config_from_args(parse_args(["app:app"], env))
    assert from_env.bind == ("unix:/run/a.sock", "127.0.0.1:9001")
    assert from_env.threads == 4
    assert from_env.bind_explicit is True
    flagged = config_from_args(
        parse_args(["app:app", "--bind", "127.0.0.1:9002", "--threads", "2"], env)
    )
    assert flagged.bind == ("127.0.0.1:9002",)  # replaces the variable, not added to it
    assert flagged.threads == 2
    default = config_from_args(parse_args(["app:app"], {}))
    assert default.bind == ("127.0.0.1:9000",)
    assert default.bind_explicit is False
    assert config_from_args(parse_args(["app:app", "--no-multiplex"], {})).multiplex is False
    env_no_mpx = config_from_args(parse_args(["app:app"], {"FCGI_ASYNC_NO_MULTIPLEX": "yes"}))
    assert env_no_mpx.multiplex is False


def test_allowed_clients_from_flag_env_or_fcgi_web_server_addrs() -> None:
    def allowed(argv: list[str], env: dict[str, str]) -> tuple[str, ...]:
        return config_from_args(parse_args(["app:app", *argv], env)).allowed_clients

    fcgi = {"FCGI_WEB_SERVER_ADDRS": "127.0.0.1, 10.0.0.2"}
    assert allowed([], {}) == ()
    assert allowed([], fcgi) == ("127.0.0.1", "10.0.0.2")
    ours = {**fcgi, "FCGI_ASYNC_ALLOWED_CLIENTS": "192.168.0.0/24"}
    assert allowed([], ours) == ("192.168.0.0/24",)
    assert allowed(["--allowed-clients", "::1"], ours) == ("::1",)


# ----------------------------------------------------------------------- subprocess


def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"fcgi-async {__version__}"
    helped = run_cli("--help")
    assert helped.returncode == 0
    assert "usage: fcgi-async" in helped.stdout


def _assert_one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("fcgi-async: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("nosuchmodule:app", [], "could not import module 'nosuchmodule'"),
        ("rawapp:nosuch", [], "module 'rawapp' has no attribute 'nosuch'"),
        ("rawapp:app", ["--bind", "nonsense"], "bad bind 'nonsense'"),
        ("rawapp:app", ["--bind", "unix:/nonexistent-dir/x.sock"], "cannot bind unix:"),
    ],
    ids=["unimportable", "missing-attribute", "bad-bind", "unbindable-path"],
)
def test_start_up_errors_are_one_line(
    app_dir: Path, spec: str, extra: list[str], message: str
) -> None:
    result = run_cli(spec, "--app-dir", str(app_dir), *extra)
    _assert_one_line_error(result, message)
    debug = run_cli(spec, "--app-dir", str(app_dir), *extra, "--log-level", "debug")
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert message in debug.stderr


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import no_such_dependency\napp = None\n", "ModuleNotFoundError: No module named"),
        (
            RAW_APP.replace(
                "async def startup(self):",
                "async def startup(self):\n        raise OSError(5, 'no db')",
            ),
            "OSError: [Errno 5] no db",
        ),
    ],
    ids=["app-import-fails", "startup-fails"],
)
def test_application_errors_at_start_up_are_one_line(
    tmp_path: Path, source: str, message: str
) -> None:
    (tmp_path / "brokenapp.py").write_text(source)
    port = free_port()
    result = run_cli("brokenapp:app", "--app-dir", str(tmp_path), "--bind", f"127.0.0.1:{port}")
    _assert_one_line_error(result, message)
    assert not _connectable(("127.0.0.1", port)), "nothing may stay bound"


def test_address_in_use_is_one_line(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("rawapp:app", "--app-dir", str(app_dir), "--bind", f"127.0.0.1:{port}")
    _assert_one_line_error(result, f"cannot bind 127.0.0.1:{port}: address already in use")
    assert not (app_dir / "events").exists(), "the app must not start when binding fails"


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_sigterm_stops_a_serving_server_cleanly(
    app_dir: Path, launch: list[subprocess.Popen[str]], loop: str
) -> None:
    port = free_port()
    proc = start(
        launch,
        "rawapp:app",
        "--app-dir",
        str(app_dir),
        "--bind",
        f"127.0.0.1:{port}",
        "--loop",
        loop,
    )
    wait_ready(proc, ("127.0.0.1", port))
    assert fcgi_request(("127.0.0.1", port), b"hi") == b"pid=%d body=hi" % proc.pid
    code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err
    assert "stopped" in err
    assert (app_dir / "events").read_text() == "startup\nshutdown\n"


def test_sigterm_lets_the_running_request_finish(
    app_dir: Path, launch: list[subprocess.Popen[str]]
) -> None:
    path = app_dir / "s.sock"
    if len(str(path)) > 100:
        pytest.skip("tmp path too long for a unix socket")
    proc = start(launch, "rawapp:app", "--app-dir", str(app_dir), "--bind", f"unix:{path}")
    wait_ready(proc, str(path))
    client = ClientConnection()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        frames: list[bytes | memoryview] = [client.begin_request(1, keep_conn=False)]
        frames += client.send_params(1, {b"REQUEST_METHOD": b"POST"})
        frames += [*client.send_stdin(1, b"slow"), client.end_stdin(1)]
        s.sendall(b"".join(bytes(f) for f in frames))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (app_dir / "slow-started").exists():
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        raw = b""
        deadline = time.monotonic() + 10
        while (data := s.recv(65536)) and time.monotonic() < deadline:
            raw += data
    client.receive_data(raw)
    events = []
    while (event := client.next_event()) is not NEED_DATA:
        events.append(event)
    assert b"body=slow" in b"".join(e.data for e in events if isinstance(e, StdoutReceived))
    assert isinstance(events[-1], RequestEnded)
    _, err = proc.communicate(timeout=STOP_TIMEOUT_S)
    assert proc.returncode == 0, err
    assert not path.exists(), "the unix socket file is removed at exit"


def test_environment_bind_and_the_flag_that_overrides_it(
    app_dir: Path, launch: list[subprocess.Popen[str]]
) -> None:
    path = app_dir / "e.sock"
    if len(str(path)) > 100:
        pytest.skip("tmp path too long for a unix socket")
    env_only = start(
        launch, "rawapp:app", "--app-dir", str(app_dir), env=_env(FCGI_ASYNC_BIND=f"unix:{path}")
    )
    wait_ready(env_only, str(path))
    assert fcgi_request(str(path)).startswith(b"pid=%d" % env_only.pid)
    assert stop(env_only)[0] == 0
    # The variable names a busy port; the flag replaces it, so the server starts.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        flagged = start(
            launch,
            "rawapp:app",
            "--app-dir",
            str(app_dir),
            "--bind",
            f"unix:{path}",
            env=_env(FCGI_ASYNC_BIND=busy),
        )
        wait_ready(flagged, str(path))
        assert fcgi_request(str(path)).startswith(b"pid=%d" % flagged.pid)
        code, err = stop(flagged)
    assert code == 0, err


def test_listening_socket_passed_as_fd_0_is_used_without_bind(
    app_dir: Path, launch: list[subprocess.Popen[str]]
) -> None:
    """spawn-fcgi, mod_fcgid and lighttpd's bin-path hand the listener over as stdin."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "fcgi_async", "rawapp:app", "--app-dir", str(app_dir)],
            stdin=listener.fileno(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        launch.append(proc)
    wait_ready(proc, ("127.0.0.1", port))
    assert fcgi_request(("127.0.0.1", port), b"fd0") == b"pid=%d body=fd0" % proc.pid
    code, err = stop(proc)
    assert code == 0, err
    assert "fd 0" in err


def test_loop_auto_is_uvloop_when_installed_else_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop  # a runtime dependency on CPython/POSIX

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert loop_factory("auto") is None
    assert loop_factory("asyncio") is None
    with pytest.raises(AppLoadError, match="uvloop is not installed"):
        loop_factory("uvloop")


ASGI_AND_WSGI_APPS = textwrap.dedent(
    """
    def _answer(text):
        return text.encode()


    async def asgi(scope, receive, send):
        if scope["type"] == "lifespan":
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": "database is down"})
            return
        body = _answer(f"asgi root={scope['root_path']} path={scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


    def wsgi(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [_answer(f"wsgi script={environ['SCRIPT_NAME']} info={environ['PATH_INFO']}")]


    def create_asgi():
        return asgi


    def create_wsgi():
        return wsgi
    """
)
APP_PARAMS = {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": b"/app/items/1"}


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (["both:asgi", "--lifespan", "off"], b"asgi root= path=/app/items/1"),
        (["both:wsgi"], b"wsgi script= info=/app/items/1"),
        (["both:create_asgi", "--factory", "--lifespan", "off"], b"asgi root= path=/app/items/1"),
        (["both:create_wsgi", "--factory"], b"wsgi script= info=/app/items/1"),
        (
            ["both:asgi", "--lifespan", "off", "--root-path", "/app"],
            b"asgi root=/app path=/app/items/1",
        ),
        (["both:wsgi", "--root-path", "/app"], b"wsgi script=/app info=/items/1"),
    ],
    ids=[
        "auto-asgi",
        "auto-wsgi",
        "factory-asgi",
        "factory-wsgi",
        "root-path-asgi",
        "root-path-wsgi",
    ],
)
def test_interface_detection_factory_and_root_path(
    tmp_path: Path, launch: list[subprocess.Popen[str]], args: list[str], answer: bytes
) -> None:
    """--interface auto tells ASGI from WSGI, --factory calls the attribute, --root-path mounts."""
    (tmp_path / "both.py").write_text(ASGI_AND_WSGI_APPS)
    port = free_port()
    proc = start(launch, *args, "--app-dir", str(tmp_path), "--bind", f"127.0.0.1:{port}")
    wait_ready(proc, ("127.0.0.1", port))
    assert fcgi_request(("127.0.0.1", port), params=APP_PARAMS) == answer
    code, err = stop(proc)
    assert code == 0, err


def test_forced_interface_and_lifespan_modes(
    tmp_path: Path, launch: list[subprocess.Popen[str]]
) -> None:
    (tmp_path / "both.py").write_text(ASGI_AND_WSGI_APPS)
    app_dir = ["--app-dir", str(tmp_path)]
    # The app reports lifespan.startup.failed: auto and on both stop with its message.
    for mode in ("auto", "on"):
        bind = ["--bind", f"127.0.0.1:{free_port()}"]
        failed = run_cli("both:asgi", *app_dir, "--lifespan", mode, *bind)
        _assert_one_line_error(failed, "ASGI lifespan startup failed: database is down")
    # Forced to ASGI with lifespan off, the same app serves: its failing startup never runs.
    port = free_port()
    proc = start(
        launch, "both:asgi", *app_dir, "--interface", "asgi", "--lifespan", "off",
        "--bind", f"127.0.0.1:{port}",
    )  # fmt: skip
    wait_ready(proc, ("127.0.0.1", port))
    assert fcgi_request(("127.0.0.1", port), params=APP_PARAMS).startswith(b"asgi ")
    assert stop(proc)[0] == 0
