"""Workers: distribution, replacement, recycling, ondemand, crash loops, hung workers."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .helpers import WAIT_S, Load, RequestFailed, Supervised, fcgi_get, wait_for


def pid_of(body: bytes) -> int:
    return int(body.split()[0])


def test_every_worker_receives_requests(supervised: Callable[..., Supervised]) -> None:
    server = supervised("--workers", "3")
    server.wait_serving(workers=3)
    workers = server.workers()
    seen: set[int] = set()

    def batch() -> bool:
        with ThreadPoolExecutor(6) as pool:
            for status, body in pool.map(lambda _: server.get("/slow?0.2"), range(6)):
                assert status == 200
                seen.add(pid_of(body))
        return seen == workers

    wait_for(batch, what=f"answers from all of {workers}, seen {seen}")


def test_killed_worker_is_replaced_under_load(supervised: Callable[..., Supervised]) -> None:
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    before = server.workers()
    victim = min(before)
    with Load(server.address, concurrency=2) as load:
        wait_for(lambda: load.count() >= 20, what="load running")
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: len(server.workers()) == 2 and victim not in server.workers(),
            what="a replacement worker",
        )
        done = load.count()
        wait_for(lambda: load.count() >= done + 20, what="load after the replacement")
    # Only requests that were on the killed worker may fail: at most one per client thread,
    # and each as a connection lost mid-request, never an error answer.
    assert len(load.failures) <= 2, load.failures
    assert all(f.startswith("RequestFailed(") for f in load.failures), load.failures
    assert f"worker {victim} died unexpectedly: killed by signal SIGKILL" in server.log
    assert server.proc.poll() is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_max_requests_recycles_without_failures(
    supervised: Callable[..., Supervised], loop: str
) -> None:
    server = supervised("--max-requests", "10", "--max-requests-jitter", "3", "--loop", loop)
    server.wait_serving(workers=1)
    with Load(server.address, concurrency=2) as load:
        wait_for(lambda: load.count() >= 60, what="60 requests")
    assert load.failures == []
    pids = {pid_of(body) for body in load.ok}
    assert len(pids) >= 4, pids  # 60 requests at most 13 per worker
    assert "(--max-requests): recycling" in server.log
    assert "died unexpectedly" not in server.log


def test_ondemand_forks_on_first_connection_and_stops_idle_workers(
    supervised: Callable[..., Supervised],
) -> None:
    server = supervised("--pm", "ondemand", "--pm-max-children", "2", "--pm-idle-timeout", "1")
    wait_for(lambda: "ondemand: no worker until the first connection" in server.log)
    assert server.workers() == set()
    status, body = server.get()
    assert status == 200
    assert server.workers() == {pid_of(body)}
    wait_for(lambda: not server.workers(), what="the idle worker to stop")
    assert "(--pm-idle-timeout)" in server.log
    status, body = server.get()
    assert status == 200


def test_crash_loop_stops_respawning_and_says_why(
    supervised: Callable[..., Supervised], app_dir: Path
) -> None:
    (app_dir / "crash").touch()
    server = supervised("--workers", "2")
    assert server.wait_exit() == 1
    log = server.log
    assert "crash loop: 5 workers died" in log
    # Each respawn waits twice as long as the one before (from RESPAWN_BACKOFF_BASE_S).
    delays = re.findall(r"died unexpectedly: .*; respawning in ([0-9.]+) s", log)
    assert delays == ["0.1", "0.2", "0.4", "0.8"], log
    assert "exit status 3 (startup failed)" in log
    assert "startup refuses: the crash file exists" in log
    assert "no worker left and respawning is stopped: exiting" in log


def test_hung_worker_is_killed_and_replaced(supervised: Callable[..., Supervised]) -> None:
    server = supervised("--workers", "2", "--worker-timeout", "1.5")
    server.wait_serving(workers=2)
    before = server.workers()
    with contextlib.suppress(RequestFailed):
        server.get("/hang")  # blocks its worker's event loop until the supervisor kills it
    wait_for(
        lambda: len(server.workers()) == 2 and len(server.workers() & before) == 1,
        what="a replacement for the hung worker",
    )
    (hung,) = before - server.workers()
    assert f"worker {hung} sent no heartbeat" in server.log
    wait_for(server.answers, what="answers after the replacement")


def test_dynamic_keeps_spare_workers(supervised: Callable[..., Supervised]) -> None:
    server = supervised(
        *("--pm", "dynamic", "--pm-max-children", "3", "--pm-start", "1"),
        *("--pm-min-spare", "1", "--pm-max-spare", "1"),
    )
    server.wait_serving(workers=1)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(server.get, "/slow?2")
        # The only worker is busy, so there is no idle one: a spare is forked.
        wait_for(lambda: len(server.workers()) == 2, what="a spare worker")
        assert slow.result()[0] == 200
    # Two idle workers now, one more than --pm-max-spare: one is stopped.
    wait_for(lambda: len(server.workers()) == 1, what="the extra spare to stop")
    assert "more idle workers than --pm-max-spare" in server.log


def test_workers_stop_when_the_supervisor_is_killed(
    supervised: Callable[..., Supervised],
) -> None:
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    workers = server.workers()
    server.proc.kill()
    server.wait_exit()

    def gone() -> bool:
        return not any(_alive(pid) for pid in workers)

    wait_for(gone, what="orphaned workers to stop")
    assert "is gone; stopping" in server.log


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_an_app_that_cannot_load_is_a_crash_loop(app_dir: Path) -> None:
    server = Supervised(app_dir, "--workers", "2", app="missing_module:app")
    try:
        assert server.wait_exit() == 1
        log = server.log
        assert "exit status 4 (app could not be loaded)" in log
        assert "could not import module 'missing_module'" in log
        assert "crash loop" in log
    finally:
        server.kill()


def test_workers_serve_a_listening_socket_passed_as_fd0(app_dir: Path) -> None:
    """spawn-fcgi / mod_fcgid style: no --bind, the listening socket is stdin."""
    address = str(app_dir / "fd0.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(16)
    argv = [sys.executable, "-m", "fcgi_async", "app:app", "--app-dir", str(app_dir)]
    with open(app_dir / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [*argv, "--workers", "2"],
            stdin=listener.fileno(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    listener.close()
    try:
        seen: set[int] = set()

        def both_answer() -> bool:
            status, body = fcgi_get(address)
            assert status == 200
            seen.add(pid_of(body))
            return len(seen) == 2

        wait_for(both_answer, what="answers from both workers on fd 0")
        assert "using the listening socket passed as fd 0" in (app_dir / "server.log").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(WAIT_S)
