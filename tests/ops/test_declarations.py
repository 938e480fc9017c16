"""Each setting is declared once (fcgi_async/settings.py): the flag, the variable, the file key,
``--help``, ``--check-config``, the validation and the README's option table all come from the
Config field's declaration, and agree with each other."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import pytest

from fcgi_async.cli import build_parser, main, resolve_settings
from fcgi_async.config import GROUPS, MAX_SECONDS, Config, ConfigError, write_readme_table
from fcgi_async.configfile import ConfigFileError
from fcgi_async.settings import (
    README_BEGIN,
    README_END,
    Declared,
    Group,
    declarations,
    options_table,
    settable,
    setting,
    splice_readme,
)

ROOT = Path(__file__).resolve().parents[2]
DECLARED = {d.name: d for d in declarations(Config)}
#: The settings a user sets with a flag (all but the positional MODULE:ATTR).
FLAGGED = [d for d in settable(Config) if d.flag is not None]

#: The command line as it was before the declarations (field: flags), so that generating the
#: parser renamed nothing.
FLAGS = """
bind: --bind -b; interface: --interface; factory: --factory; app_dir: --app-dir;
threads: --threads; loop: --loop; lifespan: --lifespan; root_path: --root-path; roles: --roles;
multiplex: --no-multiplex; max_params_bytes: --max-params-bytes;
max_params_pairs: --max-params-pairs;
max_requests_per_connection: --max-requests-per-connection; max_connections: --max-connections;
max_body_buffer_bytes: --max-body-buffer-bytes; keepalive_timeout_s: --keepalive-timeout;
record_timeout_s: --record-timeout; request_timeout_s: --request-timeout;
slowlog_timeout_s: --slowlog-timeout; slowlog: --slowlog; graceful_timeout_s: --graceful-timeout;
backlog: --backlog; socket_mode: --socket-mode; socket_owner: --socket-owner;
socket_group: --socket-group; pid_file: --pid-file; allowed_clients: --allowed-clients;
log_level: --log-level; workers: --workers -w; pm: --pm; pm_max_children: --pm-max-children;
pm_start_servers: --pm-start; pm_min_spare: --pm-min-spare; pm_max_spare: --pm-max-spare;
pm_idle_timeout_s: --pm-idle-timeout; max_requests: --max-requests;
max_requests_jitter: --max-requests-jitter; worker_timeout_s: --worker-timeout;
status_path: --status-path; ping_path: --ping-path; ping_response: --ping-response;
pool_name: --pool-name; access_log: --access-log; access_log_format: --access-log-format;
error_log: --error-log
"""

#: The bounds Config enforced before the declarations (config._WHOLE_NUMBERS, config._SECONDS):
#: whole numbers (low, high), and seconds (True where 0 is "off").
WHOLE_NUMBERS = {
    "threads": (1, 1024),
    "max_params_bytes": (1, 64 * 1024 * 1024),
    "max_params_pairs": (1, 1_000_000),
    "max_requests_per_connection": (1, 0xFFFF),
    "max_connections": (1, 1024 * 1024),
    "max_body_buffer_bytes": (1, 1024 * 1024 * 1024),
    "backlog": (1, 0xFFFF),
    "workers": (1, 4096),
    "pm_max_children": (1, 4096),
    "pm_start_servers": (1, 4096),
    "pm_min_spare": (1, 4096),
    "pm_max_spare": (1, 4096),
    "max_requests": (0, 1_000_000_000),
    "max_requests_jitter": (0, 1_000_000_000),
}
SECONDS = {
    "keepalive_timeout_s": False,
    "record_timeout_s": False,
    "graceful_timeout_s": False,
    "pm_idle_timeout_s": False,
    "worker_timeout_s": False,
    "request_timeout_s": True,
    "slowlog_timeout_s": True,
}


def test_every_config_field_is_declared() -> None:
    assert list(DECLARED) == [f.name for f in dataclasses.fields(Config)]

    @dataclasses.dataclass
    class Undeclared:
        plain: int = 1

    with pytest.raises(TypeError, match=r"Undeclared\.plain is not declared with setting\(\)"):
        declarations(Undeclared)


def test_the_flags_are_the_ones_users_know() -> None:
    expected = {}
    for entry in FLAGS.replace("\n", " ").split(";"):
        name, _, flags = entry.partition(":")
        expected[name.strip()] = tuple(flags.split())
    # New settings add flags; none of these may change.
    assert {d.name: d.flags for d in FLAGGED if d.name in expected} == expected


def test_every_variable_is_the_prefix_and_the_flag_name() -> None:
    for d in FLAGGED:
        assert d.flag is not None
        assert d.env == "FCGI_ASYNC_" + d.flag.removeprefix("--").replace("-", "_").upper()
    assert DECLARED["multiplex"].env == "FCGI_ASYNC_NO_MULTIPLEX"
    assert DECLARED["pm_start_servers"].env == "FCGI_ASYNC_PM_START"
    assert DECLARED["app"].env is None  # the positional argument has no variable


def test_every_declared_flag_is_in_help_under_its_heading() -> None:
    text = build_parser().format_help()
    headings = [m.start() for g in GROUPS for m in [re.search(re.escape(g.title) + ":", text)] if m]
    assert len(headings) == len(GROUPS)
    for d in FLAGGED:
        # argparse's own spelling of the option: "--bind ADDR, -b ADDR", "--loop {auto,...}";
        # 3.13's names the metavar once: "--bind, -b ADDR"
        if d.setting.kind == "bool":
            invocation = ", ".join(d.flags)
        else:
            choices = "{" + ",".join(d.setting.choices) + "}"
            metavar = d.setting.metavar or (choices if d.setting.choices else d.name.upper())
            if sys.version_info >= (3, 13):
                invocation = ", ".join(d.flags) + f" {metavar}"
            else:
                invocation = ", ".join(f"{flag} {metavar}" for flag in d.flags)
        line = re.search(rf"^  {re.escape(invocation)}[ \n]", text, re.MULTILINE)
        assert line, f"{invocation} is not in --help"
        assert d.setting.group is not None
        # the flag's line sits after its own heading and before the next one
        index = GROUPS.index(d.setting.group)
        assert headings[index] < line.start()
        if index + 1 < len(headings):
            assert line.start() < headings[index + 1], d.name


def test_the_bounds_are_the_ones_config_enforced() -> None:
    # New settings add bounds; none of these may change.
    assert {n: DECLARED[n].setting.bounds for n in WHOLE_NUMBERS} == WHOLE_NUMBERS
    assert {n: (DECLARED[n].setting.kind, DECLARED[n].setting.off) for n in SECONDS} == {
        n: ("seconds", off) for n, off in SECONDS.items()
    }
    assert MAX_SECONDS == 7 * 24 * 3600


def _sample(d: Declared) -> tuple[str, list[str]]:
    """A valid non-default value of a setting: (its variable's text, its flag arguments)."""
    flag = d.flags[0]
    if d.setting.kind == "bool":
        return "yes", [flag]
    if d.setting.choices:
        choice = next(c for c in reversed(d.setting.choices) if c != d.default)
        return choice, [flag, choice]
    special = {
        "bind": "127.0.0.1:9123,unix:/run/x.sock",
        "socket_mode": "640",
        "socket_owner": str(os.getuid()),
        "socket_group": str(os.getgid()),
        "allowed_clients": "127.0.0.1,::1",
        "roles": "responder,filter",
        # must hold the body share plus one request's params (1 MiB + 256 KiB by default)
        "max_connection_buffer_bytes": "3000000",
    }
    by_kind = {"int": "7", "seconds": "2.5"}
    raw = special.get(d.name) or by_kind.get(d.setting.kind, f"/value/of/{d.name}")
    if d.setting.kind == "list":
        return raw, [arg for value in raw.split(",") for arg in (flag, value)]
    return raw, [flag, raw]


@pytest.mark.parametrize("d", FLAGGED, ids=[d.name for d in FLAGGED])
def test_flag_variable_file_and_check_config_give_the_same_config(
    d: Declared, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw, argv = _sample(d)
    assert d.env is not None
    from_flag = resolve_settings(["app:app", *argv], {}).config()
    assert getattr(from_flag, d.name) != d.default
    from_env = resolve_settings(["app:app"], {d.env: raw}).config()
    path = tmp_path / "c.toml"
    path.write_text(f"{d.name} = {d.toml(getattr(from_flag, d.name))}\n")
    from_file = resolve_settings(["app:app", "--config", str(path)], {}).config()
    assert from_flag == from_env == from_file
    # --check-config prints a file that gives the same Config again, naming the source
    assert main(["--check-config", "app:app", *argv], environ={}) == 0
    printed = capsys.readouterr().out
    assert f"{d.name} = {d.toml(getattr(from_flag, d.name))}  # flag\n" in printed
    path.write_text(printed)
    assert resolve_settings(["--config", str(path)], {}).config() == from_flag


def test_bind_explicit_is_derived_not_set(tmp_path: Path) -> None:
    declared = DECLARED["bind_explicit"]
    assert (declared.flag, declared.env) == (None, None)
    assert declared not in settable(Config)
    assert Config().bind_explicit is True  # library code binds as told
    assert resolve_settings(["a:b"], {}).config().bind_explicit is False
    assert resolve_settings(["a:b", "-b", "unix:/x"], {}).config().bind_explicit is True
    assert resolve_settings(["a:b"], {"FCGI_ASYNC_BIND": "unix:/x"}).config().bind_explicit
    assert not resolve_settings(["a:b"], {"FCGI_ASYNC_BIND": " , "}).config().bind_explicit
    path = tmp_path / "c.toml"
    path.write_text('bind = ["unix:/x"]\n')
    assert resolve_settings(["a:b", "-c", str(path)], {}).config().bind_explicit is True
    path.write_text("bind_explicit = false\n")
    with pytest.raises(ConfigFileError, match="unknown key 'bind_explicit'"):
        resolve_settings(["a:b", "-c", str(path)], {})


def test_a_new_setting_is_one_declaration() -> None:
    """Names follow from the field; kind, bounds and the check do the rest."""

    @dataclasses.dataclass(frozen=True)
    class Example:
        send_timeout_s: float = setting(
            30.0, "seconds a send may wait (%(default)s)", kind="seconds", metavar="S"
        )
        max_connection_buffer_bytes: int = setting(
            1024, "bytes buffered per connection (%(default)s)", kind="int", bounds=(1, 4096)
        )

    send, buffer = declarations(Example)
    assert (send.flag, send.env) == ("--send-timeout", "FCGI_ASYNC_SEND_TIMEOUT")
    assert buffer.flag == "--max-connection-buffer-bytes"
    assert buffer.env == "FCGI_ASYNC_MAX_CONNECTION_BUFFER_BYTES"
    assert send.help_text() == "seconds a send may wait (30.0)"
    assert send.from_text("2.5") == 2.5
    assert send.problem(float("nan")) == (
        "send_timeout_s must be a number of seconds above 0 up to 604,800, got nan"
    )
    assert buffer.problem(4097) == (
        "max_connection_buffer_bytes must be a whole number from 1 to 4,096, got 4097"
    )
    assert buffer.problem(True) is not None  # a bool is no whole number
    assert buffer.problem(4096) is None
    assert "| `--send-timeout` | `FCGI_ASYNC_SEND_TIMEOUT` | `send_timeout_s` | `30.0` |" in (
        options_table(Example)
    )


def test_config_checks_every_declared_bound() -> None:
    for name, (low, high) in WHOLE_NUMBERS.items():
        with pytest.raises(ConfigError, match=f"{name} must be a whole number from {low} to"):
            Config().replace(**{name: high + 1})


def test_variables_are_checked_against_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["a:b"], environ={"FCGI_ASYNC_LOOP": "trio"}) == 2
    err = capsys.readouterr().err
    assert "environment variable FCGI_ASYNC_LOOP: 'trio' is not one of auto, asyncio, uvloop" in err


# ------------------------------------------------------------------------- the README table


def test_the_readme_table_is_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text()
    table = options_table(Config)
    assert splice_readme(readme, table) == readme, (
        "README.md's option table differs from the declarations: run "
        "`.venv/bin/python -m fcgi_async.config --readme README.md`"
    )
    for d in FLAGGED:
        assert f"| `{d.flags[0]}`" in table
        assert f"`{d.env}`" in table


def test_splice_replaces_only_the_table() -> None:
    text = f"before\n{README_BEGIN}\nold\n{README_END}\nafter\n"
    new = splice_readme(text, f"{README_BEGIN}\nnew\n{README_END}")
    assert new == f"before\n{README_BEGIN}\nnew\n{README_END}\nafter\n"
    with pytest.raises(ValueError, match="option table markers"):
        splice_readme("no markers here\n", "x")


def test_the_table_is_rewritten_in_place(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nstale\n{README_END}\n## next\n")
    assert write_readme_table(str(readme)) is True
    assert readme.read_text() == f"# x\n{options_table(Config)}\n## next\n"
    assert write_readme_table(str(readme)) is False


def test_every_heading_has_settings() -> None:
    assert all(isinstance(g, Group) for g in GROUPS)
    assert {d.setting.group for d in FLAGGED} == set(GROUPS)
