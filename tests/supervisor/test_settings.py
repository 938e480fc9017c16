"""The supervisor's settings (Config validation, flags, environment) and its scoreboard."""

from __future__ import annotations

import pytest

from fcgi_async.cli import resolve_settings
from fcgi_async.config import Config, ConfigError
from fcgi_async.scoreboard import Scoreboard, WorkerState


def parse(argv: list[str], environ: dict[str, str] | None = None) -> Config:
    return resolve_settings(["app:app", *argv], environ or {}).config()


def test_defaults_run_inline() -> None:
    config = parse([])
    assert (config.workers, config.pm, config.max_requests) == (1, "static", 0)
    assert config.worker_timeout_s == 30.0
    assert not config.supervised


@pytest.mark.parametrize(
    "argv",
    [["--workers", "2"], ["--pm", "ondemand"], ["--pm", "dynamic"], ["--max-requests", "100"]],
)
def test_what_needs_a_supervisor(argv: list[str]) -> None:
    assert parse(argv).supervised


def test_flags_map_to_settings() -> None:
    config = parse(
        [
            *("--pm", "dynamic", "--pm-max-children", "8", "--pm-start", "3"),
            *("--pm-min-spare", "2", "--pm-max-spare", "4", "--pm-idle-timeout", "5"),
            *("--max-requests", "1000", "--max-requests-jitter", "50", "--worker-timeout", "9"),
        ]
    )
    assert (config.pm_max_children, config.pm_start_servers) == (8, 3)
    assert (config.pm_min_spare, config.pm_max_spare) == (2, 4)
    assert (config.pm_idle_timeout_s, config.worker_timeout_s) == (5.0, 9.0)
    assert (config.max_requests, config.max_requests_jitter) == (1000, 50)


def test_environment_below_flags() -> None:
    env = {"FCGI_ASYNC_WORKERS": "4", "FCGI_ASYNC_PM": "ondemand", "FCGI_ASYNC_MAX_REQUESTS": "7"}
    config = parse(["--workers", "3"], env)
    assert (config.workers, config.pm, config.max_requests) == (3, "ondemand", 7)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "workers must be a whole number from 1 to 4,096"),
        ({"max_requests": -1}, "max_requests must be a whole number from 0 to 1,000,000,000"),
        ({"max_requests_jitter": -5}, "max_requests_jitter"),
        ({"worker_timeout_s": 0}, "worker_timeout_s must be a number of seconds above 0"),
        ({"pm_idle_timeout_s": -1.0}, "pm_idle_timeout_s"),
        ({"pm": "adaptive"}, "unknown pm 'adaptive'"),
        ({"pm": "dynamic", "pm_max_children": 2}, "pm_min_spare <= pm_max_spare <= pm_max"),
        ({"pm": "dynamic", "pm_start_servers": 5}, "pm_start_servers between pm_min_spare"),
    ],
)
def test_invalid_settings_are_named(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config().replace(**changes)


def test_ondemand_ignores_the_dynamic_rules() -> None:
    assert Config(pm="ondemand", pm_max_children=1).pm_max_children == 1


def test_scoreboard_slots() -> None:
    board = Scoreboard(2)
    board.reset(1, now=10.0, state=WorkerState.STARTING)
    board.set_pid(1, 1234)
    board.report(1, 1, 1, 11.0)  # still starting: counts change, state does not
    assert board.read(1).state == WorkerState.STARTING
    board.set_state(1, WorkerState.IDLE)
    board.report(1, 2, 5, 12.0)
    info = board.read(1)
    assert (info.pid, info.state, info.active_requests, info.total_requests) == (
        1234,
        WorkerState.BUSY,
        2,
        5,
    )
    assert (info.started_at, info.last_change) == (10.0, 12.0)
    board.report(1, 0, 5, 13.0)
    assert board.state(1) == WorkerState.IDLE
    board.set_state(1, WorkerState.DRAINING)
    board.report(1, 1, 6, 14.0)  # draining stays draining
    assert board.state(1) == WorkerState.DRAINING
    board.heartbeat(1, 15.0)
    assert board.read(1).heartbeat == 15.0
    assert board.read(0).state == WorkerState.FREE
    with pytest.raises(IndexError):
        board.read(2)
    board.close()
