"""Who may connect and who we are: unix socket owner/group/mode, the pid file, the backlog,
and systemd socket activation (inline and with workers)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcgi_async.cli import main
from fcgi_async.pidfile import PidFile, PidFileError
from fcgi_async.server.listeners import BindError, bind_socket, parse_bind
from tests.supervisor.helpers import RequestFailed, children, fcgi_get, wait_for

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="chown to another user needs root")

APP = textwrap.dedent(
    """\
    import os


    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        seen = [os.environ.get(k, "-") for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")]
        return [" ".join([str(os.getpid()), *seen]).encode()]
    """
)

#: Sets LISTEN_PID to its own pid (systemd sets it to the pid it execs), moves the passed
#: socket to fd 3 and execs the server: the pid does not change across exec.
WRAPPER = textwrap.dedent(
    """\
    import os, sys
    fd = int(sys.argv[1])
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execv(sys.executable, [sys.executable, "-m", "fcgi_async", *sys.argv[2:]])
    """
)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory whose paths fit in a unix socket address, writable by everyone."""
    with tempfile.TemporaryDirectory(prefix="fa-ops-") as name:
        os.chmod(name, 0o777)
        path = Path(name)
        (path / "app.py").write_text(APP)
        yield path


class Process:
    """A server process in its own session, logging to a file; killed at teardown."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str], **popen: object) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in kill()
        self.proc: subprocess.Popen[bytes] = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            **popen,  # type: ignore[call-overload]
        )

    @property
    def log(self) -> str:
        """Everything logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_answer(self, address: str) -> bytes:
        """Poll (bounded) until a request on ``address`` succeeds; return the body."""
        result: list[bytes] = []

        def answered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log}")
            try:
                status, body = fcgi_get(address, timeout=5.0)
            except RequestFailed:
                return False
            result.append(body)
            return status == 200

        wait_for(answered, timeout=20.0, what=f"an answer on {address}")
        return result[-1]

    def stop(self) -> int:
        """SIGTERM and wait for a graceful exit."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def kill(self) -> None:
        """Kill the whole session (teardown)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(20)
        self._log.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for proc in started:
        proc.kill()


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FCGI_ASYNC_", "LISTEN_", "FCGI_WEB_SERVER_ADDRS"))
    }


def server_argv(app_dir: Path, *args: str) -> list[str]:
    return ["app:app", "--app-dir", str(app_dir), "--graceful-timeout", "5", *args]


# ------------------------------------------------------------------- owner, group, mode


@needs_root
def test_socket_owner_group_and_mode_by_name(short_tmp: Path) -> None:
    path = short_tmp / "a.sock"
    sock = bind_socket(
        parse_bind(f"unix:{path}"),
        backlog=5,
        socket_mode=0o660,
        socket_owner="nobody",
        socket_group="nogroup",
    )
    try:
        st = os.stat(path)
        assert st.st_uid == pwd.getpwnam("nobody").pw_uid
        assert st.st_gid == grp.getgrnam("nogroup").gr_gid
        assert stat.S_IMODE(st.st_mode) == 0o660
    finally:
        sock.close()


@needs_root
def test_socket_owner_and_group_by_number_and_group_alone(short_tmp: Path) -> None:
    path = short_tmp / "b.sock"
    sock = bind_socket(parse_bind(f"unix:{path}"), backlog=5, socket_group="65534")
    try:
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (os.geteuid(), 65534)
    finally:
        sock.close()
    os.unlink(path)
    sock = bind_socket(parse_bind(f"unix:{path}"), backlog=5, socket_owner="65534")
    try:
        assert os.stat(path).st_uid == 65534
    finally:
        sock.close()


def test_unknown_owner_or_group_is_a_clear_error(short_tmp: Path) -> None:
    path = short_tmp / "c.sock"
    with pytest.raises(BindError, match="socket owner 'no-such-user' is not a user"):
        bind_socket(parse_bind(f"unix:{path}"), backlog=5, socket_owner="no-such-user")
    with pytest.raises(BindError, match="socket group 'no-such-group' is not a group"):
        bind_socket(parse_bind(f"unix:{path}"), backlog=5, socket_group="no-such-group")
    assert not path.exists()


@needs_root
def test_chown_without_permission_is_a_clear_error(short_tmp: Path) -> None:
    # As nobody, giving the socket to root is not permitted.
    code = textwrap.dedent(
        f"""\
        import os
        from fcgi_async.server.listeners import BindError, bind_socket, parse_bind
        os.setgid(65534)  # after the imports: nobody may not read root's Python
        os.setuid(65534)
        try:
            bind_socket(parse_bind("unix:{short_tmp}/d.sock"), backlog=5, socket_owner="root")
        except BindError as exc:
            print(exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert f"cannot give unix:{short_tmp}/d.sock to root" in proc.stdout
    assert "Operation not permitted" in proc.stdout
    assert not (short_tmp / "d.sock").exists()


@needs_root
def test_cli_with_workers_gives_the_socket_away(short_tmp: Path, processes: list[Process]) -> None:
    address = str(short_tmp / "s.sock")
    argv = server_argv(short_tmp, "--bind", f"unix:{address}", "--workers", "2")
    argv += ["--socket-owner", "nobody", "--socket-group", "nogroup", "--socket-mode", "660"]
    proc = Process([sys.executable, "-m", "fcgi_async", *argv], short_tmp / "log", clean_env())
    processes.append(proc)
    proc.wait_answer(address)
    st = os.stat(address)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o660)
    assert proc.stop() == 0
    assert not os.path.exists(address)


# ------------------------------------------------------------------------------ pid file


def test_pid_file_written_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pid_file = PidFile(str(path))
    pid_file.check()
    pid_file.write()
    assert path.read_text() == f"{os.getpid()}\n"
    pid_file.remove()
    assert not path.exists()


def test_stale_pid_file_is_replaced(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "app.pid"
    for stale in (f"{dead.pid}\n", "garbage\n", ""):
        path.write_text(stale)
        pid_file = PidFile(str(path))
        pid_file.write()
        assert path.read_text() == f"{os.getpid()}\n"
        pid_file.remove()


def test_live_pid_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getppid()}\n")
    with pytest.raises(PidFileError, match=f"names process {os.getppid()}, which is running"):
        PidFile(str(path)).check()
    assert path.read_text() == f"{os.getppid()}\n"


def test_pid_file_of_someone_else_is_not_removed(tmp_path: Path) -> None:
    path = tmp_path / "app.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    path.write_text("1\n")  # replaced by another instance meanwhile
    pid_file.remove()
    assert path.read_text() == "1\n"


def test_cli_refuses_a_live_pid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.pid"
    path.write_text(f"{os.getppid()}\n")
    argv = ["app:app", "--bind", "127.0.0.1:0", "--pid-file", str(path)]
    assert main(argv, environ={}) == 1
    err = capsys.readouterr().err
    assert f"fcgi-async: error: pid file {path} names process {os.getppid()}" in err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_pid_file_names_the_process_owning_the_sockets(
    short_tmp: Path, processes: list[Process], workers: str
) -> None:
    address = str(short_tmp / "s.sock")
    pid_path = short_tmp / "run" / "app.pid"
    pid_path.parent.mkdir()
    pid_path.write_text("999999999\n")  # stale: replaced
    argv = server_argv(short_tmp, "--bind", f"unix:{address}", "--workers", workers)
    argv += ["--pid-file", str(pid_path)]
    proc = Process([sys.executable, "-m", "fcgi_async", *argv], short_tmp / "log", clean_env())
    processes.append(proc)
    body = proc.wait_answer(address)
    assert pid_path.read_text() == f"{proc.proc.pid}\n"
    if workers == "2":
        assert int(body.split()[0]) in children(proc.proc.pid)  # a worker answered
    assert proc.stop() == 0
    assert not pid_path.exists()


# ------------------------------------------------------------------ systemd activation


def listening_unix_socket(path: str, backlog: int = 5) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    return sock


def unix_backlog(path: str) -> int:
    """The listen queue size of the unix socket at ``path``, from ``ss`` (Send-Q)."""
    out = subprocess.run(
        ["ss", "-xlH", "src", path], capture_output=True, text=True, check=True
    ).stdout
    queue: str = out.split()[3]
    return int(queue)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_systemd_socket_activation(short_tmp: Path, processes: list[Process], workers: str) -> None:
    address = str(short_tmp / "systemd.sock")
    activated = listening_unix_socket(address)
    extra = str(short_tmp / "extra.sock")
    env = {**clean_env(), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "app"}
    argv = [sys.executable, "-c", WRAPPER, str(activated.fileno())]
    argv += server_argv(short_tmp, "--workers", workers, "--backlog", "77")
    if workers == "1":
        argv += ["--bind", f"unix:{extra}"]  # explicit binds are served besides
    proc = Process(argv, short_tmp / "log", env, pass_fds=(activated.fileno(),))
    processes.append(proc)
    activated.close()  # the server holds its own copy, as with systemd
    body = proc.wait_answer(address)
    pid, listen_pid, listen_fds, listen_names = body.decode().split()
    # Consumed and removed from the environment: the app (and its children) never see them.
    assert (listen_pid, listen_fds, listen_names) == ("-", "-", "-")
    if workers == "2":
        assert int(pid) in children(proc.proc.pid)
    else:
        assert int(pid) == proc.proc.pid
        assert fcgi_get(extra)[0] == 200
    assert "from systemd (fd 3, name 'app')" in proc.log
    assert unix_backlog(address) == 77  # --backlog reaches the inherited socket
    assert proc.stop() == 0
    assert os.path.exists(address)  # the socket unit's file is never ours to remove
    if workers == "1":
        assert not os.path.exists(extra)


def test_systemd_variables_for_another_process_are_ignored(
    short_tmp: Path, processes: list[Process]
) -> None:
    address = str(short_tmp / "s.sock")
    env = {**clean_env(), "LISTEN_FDS": "1", "LISTEN_PID": "1"}
    argv = [sys.executable, "-m", "fcgi_async", *server_argv(short_tmp)]
    proc = Process([*argv, "--bind", f"unix:{address}"], short_tmp / "log", env)
    processes.append(proc)
    body = proc.wait_answer(address)
    assert body.split()[1:] == [b"-", b"-", b"-"]  # removed all the same
    assert "systemd" not in proc.log


def test_a_non_listening_descriptor_from_systemd_is_refused(short_tmp: Path) -> None:
    left, right = socket.socketpair()
    env = {**clean_env(), "LISTEN_FDS": "1"}
    argv = [sys.executable, "-c", WRAPPER, str(left.fileno()), *server_argv(short_tmp)]
    try:
        proc = subprocess.run(
            argv, env=env, pass_fds=(left.fileno(),), capture_output=True, text=True, timeout=30
        )
    finally:
        left.close()
        right.close()
    assert proc.returncode == 1
    assert "fd 3 from systemd (LISTEN_FDS) is not a listening stream socket" in proc.stderr


def test_workers_on_fd0_leave_the_web_servers_socket_file(
    short_tmp: Path, processes: list[Process]
) -> None:
    address = str(short_tmp / "fd0.sock")
    listener = listening_unix_socket(address)
    argv = [sys.executable, "-m", "fcgi_async", *server_argv(short_tmp, "--workers", "2")]
    proc = Process(
        [*argv, "--backlog", "33"], short_tmp / "log", clean_env(), stdin=listener.fileno()
    )
    processes.append(proc)
    listener.close()
    proc.wait_answer(address)
    assert unix_backlog(address) == 33  # the workers listen again with --backlog
    assert proc.stop() == 0
    assert os.path.exists(address)  # spawn-fcgi's, not ours to remove


SPAWN_FCGI = "/usr/bin/spawn-fcgi"


@pytest.mark.skipif(
    not os.path.exists(SPAWN_FCGI), reason=f"{SPAWN_FCGI} is missing (.ci/run installs it)"
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_spawn_fcgi_passes_the_socket_as_fd0(
    short_tmp: Path, processes: list[Process], workers: str
) -> None:
    """The Debian spawn-fcgi binds the socket and execs us (``-n``: no fork, so its pid is
    ours) with the listening socket as stdin."""
    address = str(short_tmp / "spawned.sock")
    argv = [SPAWN_FCGI, "-n", "-s", address, "-M", "0640", "--"]
    argv += [sys.executable, "-m", "fcgi_async", *server_argv(short_tmp, "--workers", workers)]
    proc = Process(argv, short_tmp / "log", clean_env(), stdin=subprocess.DEVNULL)
    processes.append(proc)
    pid = int(proc.wait_answer(address).split()[0])
    if workers == "2":
        assert pid in children(proc.proc.pid)
    else:
        assert pid == proc.proc.pid
    assert "using the listening socket passed as fd 0 by the web server" in proc.log
    assert stat.S_IMODE(os.stat(address).st_mode) == 0o640  # spawn-fcgi's -M, untouched
    assert proc.stop() == 0
    assert os.path.exists(address)  # spawn-fcgi's socket file, not ours to remove
