"""Signals to the supervisor: reload under load, graceful stop, scaling, log reopening."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fcgi_async.supervisor import reopen_log_files

from .helpers import NGINX, HttpLoad, Load, Nginx, RequestFailed, Supervised, wait_for


def version_of(body: bytes) -> str:
    return body.split()[1].decode()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR2])
def test_reload_under_load_loses_no_request(
    supervised: Callable[..., Supervised], app_dir: Path, sig: signal.Signals
) -> None:
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    old = server.workers()
    with Load(server.address, concurrency=3) as load:
        wait_for(lambda: load.count() >= 30, what="load running")
        (app_dir / "version.txt").write_text("2")
        server.signal(sig)
        wait_for(lambda: server.workers().isdisjoint(old), what="the old generation to exit")
        switched = load.count()
        wait_for(lambda: load.count() >= switched + 30, what="load after the reload")
    assert load.failures == []
    assert len(server.workers()) == 2
    assert os.path.exists(server.address)  # draining workers leave the shared socket file
    after = load.bodies_since(switched)
    assert {version_of(b) for b in after} == {"2"}
    assert "reload done" in server.log


def test_reload_with_broken_code_keeps_the_old_generation(
    supervised: Callable[..., Supervised], app_dir: Path
) -> None:
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    old = server.workers()
    (app_dir / "crash").touch()
    server.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in server.log, what="the reload to give up")
    assert server.workers() == old
    assert server.get()[0] == 200
    (app_dir / "crash").unlink()  # fixed: the next reload works
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.workers().isdisjoint(old), what="the old generation to exit")
    server.wait_serving(workers=2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_graceful_stop_lets_a_slow_request_finish(
    supervised: Callable[..., Supervised], app_dir: Path, sig: signal.Signals
) -> None:
    """SIGTERM, SIGINT and SIGQUIT (php-fpm's graceful stop) all stop gracefully."""
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    result: list[object] = []

    def slow() -> None:
        try:
            result.append(server.get("/slow?1.5"))
        except RequestFailed as exc:
            result.append(exc)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_for(lambda: list(app_dir.glob("slow-*")), what="the slow request to start")
    server.signal(sig)
    thread.join(15)
    assert server.wait_exit() == 0
    assert len(result) == 1
    assert isinstance(result[0], tuple)
    assert result[0][0] == 200
    assert f"{sig.name}: graceful stop" in server.log
    assert not server.workers()


def test_ttin_and_ttou_change_the_worker_count(supervised: Callable[..., Supervised]) -> None:
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    server.signal(signal.SIGTTIN)
    wait_for(lambda: len(server.workers()) == 3, what="3 workers")
    server.signal(signal.SIGTTOU)
    wait_for(lambda: "SIGTTOU: workers now 2" in server.log)
    server.signal(signal.SIGTTOU)
    wait_for(lambda: len(server.workers()) == 1, what="1 worker")
    assert server.get()[0] == 200


def test_ttin_and_ttou_move_pm_max_children_in_dynamic_mode(
    supervised: Callable[..., Supervised],
) -> None:
    server = supervised(
        *("--pm", "dynamic", "--pm-max-children", "2", "--pm-start", "2"),
        *("--pm-min-spare", "1", "--pm-max-spare", "2"),
    )
    server.wait_serving(workers=2)
    server.signal(signal.SIGTTOU)
    wait_for(lambda: "SIGTTOU: pm_max_children now 1" in server.log)
    wait_for(lambda: len(server.workers()) == 1, what="the excess worker to retire")
    server.signal(signal.SIGTTIN)
    wait_for(lambda: "SIGTTIN: pm_max_children now 2" in server.log)
    assert server.get()[0] == 200
    assert "died unexpectedly" not in server.log


def test_sigusr1_makes_workers_reopen_their_log_files(
    supervised: Callable[..., Supervised], app_dir: Path
) -> None:
    (app_dir / "use-applog").touch()  # the app logs each request to app.log
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    workers = server.workers()
    (app_dir / "app.log").rename(app_dir / "app.log.1")  # logrotate
    server.signal(signal.SIGUSR1)
    wait_for(lambda: "SIGUSR1: reopened" in server.log)

    def both_reopened() -> bool:
        server.get()
        text = (app_dir / "app.log").read_text() if (app_dir / "app.log").exists() else ""
        return all(f"served by {pid}" in text for pid in workers)

    wait_for(both_reopened, what="both workers logging to the new app.log")
    assert server.workers() == workers


@pytest.fixture
def file_handler(tmp_path: Path) -> Iterator[logging.FileHandler]:
    handler = logging.FileHandler(tmp_path / "app.log")
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    handler.close()


def test_reopen_log_files_follows_a_rotation(
    tmp_path: Path, file_handler: logging.FileHandler
) -> None:
    log = logging.getLogger("test.reopen")
    log.warning("before")
    (tmp_path / "app.log").rename(tmp_path / "app.log.1")
    assert reopen_log_files() >= 1  # pytest has a FileHandler of its own
    log.warning("after")
    file_handler.flush()
    assert "before" in (tmp_path / "app.log.1").read_text()
    assert (tmp_path / "app.log").read_text().strip() == "after"


def reload_and_wait(server: Supervised) -> None:
    """SIGHUP, then wait until none of the workers from before is left."""
    old = server.workers()
    server.signal(signal.SIGHUP)
    wait_for(lambda: server.workers().isdisjoint(old), what="the old generation to exit")


@pytest.mark.nginx
@pytest.mark.skipif(not os.path.exists(NGINX), reason=f"{NGINX} is missing (.ci/run installs it)")
def test_reload_through_nginx_keepalive_loses_no_request(
    supervised: Callable[..., Supervised], app_dir: Path
) -> None:
    server = supervised("--workers", "2")
    server.wait_serving(workers=2)
    nginx = Nginx(app_dir / "nginx", server.address)
    try:
        with HttpLoad(nginx.port, concurrency=4) as load:
            wait_for(lambda: load.count() >= 50, what="load through nginx")
            for version in ("2", "3", "4"):
                (app_dir / "version.txt").write_text(version)
                reload_and_wait(server)
            switched = load.count()
            wait_for(lambda: load.count() >= switched + 50, what="load after the reloads")
    finally:
        nginx.stop()
    assert load.failures == []
    assert {version_of(b) for b in load.bodies_since(switched)} == {"4"}
