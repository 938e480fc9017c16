"""Two instances started at the same moment on one unix socket path.

Before the directory lock, both could find the stale file: one bound and the other removed
that fresh socket (not listening yet, it looked stale too) and bound its own, so both
"succeeded" and the first served a path nobody could reach any more. Now exactly one wins each
round, the file is the winner's, and a loser's shutdown never removes the winner's file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fcgi_async.server.listeners import BindAddress, BindError, bind_socket, close_listeners


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory whose paths fit in a unix socket address (108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="fa-") as name:
        yield Path(name)


#: Rounds of the race; each takes well under a millisecond when nothing goes wrong.
ROUNDS = 300
#: Binders starting together in each round.
CONTENDERS = 4


def _stale(path: str) -> None:
    """Leave a socket file nobody listens on (as a crashed server does)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


def _accepts(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _contend(
    address: BindAddress, barrier: threading.Barrier, won: list[socket.socket], lost: list[str]
) -> None:
    barrier.wait(timeout=10)
    try:
        won.append(bind_socket(address, backlog=16))
    except BindError as exc:
        lost.append(str(exc))


@pytest.mark.timeout(60)
def test_simultaneous_starts_on_a_stale_path_give_one_winner(short_tmp: Path) -> None:
    path = str(short_tmp / "race.sock")
    address = BindAddress("unix", path=path)
    for round_no in range(ROUNDS):
        _stale(path)
        barrier = threading.Barrier(CONTENDERS)
        won: list[socket.socket] = []
        lost: list[str] = []

        threads = [
            threading.Thread(target=_contend, args=(address, barrier, won, lost))
            for _ in range(CONTENDERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        try:
            assert len(won) == 1, f"round {round_no}: {len(won)} binders succeeded"
            assert all("another server is listening on it" in m for m in lost), lost
            assert _accepts(path), f"round {round_no}: the winner's socket file is gone"
        finally:
            close_listeners(won)
        assert not os.path.exists(path)


_OLD_INSTANCE = """
import socket, sys
from fcgi_async.server.listeners import BindAddress, bind_socket, close_listeners
sock = bind_socket(BindAddress("unix", path=sys.argv[1]), backlog=16)
name = sock.getsockname()
listening_copy = socket.socket(fileno=sock.detach())  # close_listeners needs a live name
print("bound", flush=True)
sys.stdin.readline()  # the new instance has taken the path meanwhile
close_listeners([listening_copy])
print("stopped", flush=True)
"""


@pytest.mark.timeout(60)
def test_a_stopping_instance_leaves_a_newer_socket_file_alone(short_tmp: Path) -> None:
    path = str(short_tmp / "s.sock")
    old = subprocess.Popen(
        [sys.executable, "-c", _OLD_INSTANCE, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert old.stdin is not None
    assert old.stdout is not None
    try:
        assert old.stdout.readline() == "bound\n"
        # The old instance still listens: the path is not free.
        with pytest.raises(BindError, match="another server is listening"):
            bind_socket(BindAddress("unix", path=path), backlog=16)
        # Emulate the window in which the old instance has stopped listening but not yet
        # removed its file: a new instance finds it stale and binds anew.
        os.unlink(path)
        _stale(path)
        new = bind_socket(BindAddress("unix", path=path), backlog=16)
        try:
            old.stdin.write("go\n")
            old.stdin.flush()
            assert old.stdout.readline() == "stopped\n"
            assert old.wait(timeout=20) == 0
            assert _accepts(path), "the old instance removed the new instance's socket file"
        finally:
            close_listeners([new])
        assert not os.path.exists(path)
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()
        old.stdin.close()
        old.stdout.close()
