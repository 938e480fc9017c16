"""The ``--config`` TOML file, its precedence (flags > environment > file > defaults), its
errors, and ``--check-config``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fcgi_async._compat import tomllib
from fcgi_async.cli import main, resolve_settings
from fcgi_async.config import Config
from fcgi_async.configfile import ConfigFileError, load_config_file, parse_config_values
from tests.ops.test_sockets import APP, Process

FILE = """\
app = "file_app:app"
bind = ["unix:/run/file.sock", "127.0.0.1:9100"]
max_connections = 500
keepalive_timeout_s = 75
threads = 4
multiplex = false
roles = ["responder"]
socket_mode = 0o660
socket_owner = "nobody"
pm = "dynamic"
pm_start_servers = 2
log_level = "warning"
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "fcgi-async.toml"
    path.write_text(FILE)
    return path


def settings(argv: list[str], env: dict[str, str]) -> tuple[Config, dict[str, str]]:
    resolved = resolve_settings(argv, env)
    return resolved.config(), resolved.sources


def test_the_file_sets_every_kind_of_value(conf: Path) -> None:
    config, sources = settings(["--config", str(conf)], {})
    assert config.app == "file_app:app"
    assert config.bind == ("unix:/run/file.sock", "127.0.0.1:9100")
    assert config.bind_explicit is True
    assert config.max_connections == 500
    assert config.keepalive_timeout_s == 75.0
    assert config.threads == 4
    assert config.multiplex is False
    assert config.roles == ("responder",)
    assert config.socket_mode == 0o660
    assert config.socket_owner == "nobody"
    assert (config.pm, config.pm_start_servers) == ("dynamic", 2)
    assert config.log_level == "warning"
    assert sources["max_connections"] == "file"
    assert "graceful_timeout_s" not in sources  # a default


def test_flags_beat_environment_beats_file_beats_defaults(conf: Path) -> None:
    env = {
        "FCGI_ASYNC_MAX_CONNECTIONS": "600",
        "FCGI_ASYNC_BIND": "unix:/run/env.sock",
        "FCGI_ASYNC_NO_MULTIPLEX": "no",
        "FCGI_ASYNC_KEEPALIVE_TIMEOUT": "80",
        "FCGI_ASYNC_THREADS": "6",
    }
    argv = ["--config", str(conf), "--threads", "8", "--bind", "127.0.0.1:9200"]
    config, sources = settings(["flag_app:app", *argv], env)
    # int: flag > env > file
    assert (config.threads, sources["threads"]) == (8, "flag")
    assert (config.max_connections, sources["max_connections"]) == (
        600,
        "env FCGI_ASYNC_MAX_CONNECTIONS",
    )
    # repeatable: the flag replaces the environment's list, which replaced the file's
    assert config.bind == ("127.0.0.1:9200",)
    assert sources["bind"] == "flag"
    # bool: the environment's "no" beats the file's multiplex = false
    assert config.multiplex is True
    # float with a unit suffix (file key keepalive_timeout_s, flag --keepalive-timeout)
    assert config.keepalive_timeout_s == 80.0
    # the positional argument beats the file's app
    assert (config.app, sources["app"]) == ("flag_app:app", "flag")
    # the file beats defaults; defaults remain for the rest
    assert (config.socket_mode, sources["socket_mode"]) == (0o660, "file")
    assert config.graceful_timeout_s == Config().graceful_timeout_s
    env_only = settings(["--config", str(conf)], {"FCGI_ASYNC_BIND": "unix:/run/env.sock"})[0]
    assert env_only.bind == ("unix:/run/env.sock",)


def test_a_flag_equal_to_the_default_still_beats_the_file(conf: Path) -> None:
    config, _ = settings(["--config", str(conf), "--max-connections", "1000", "--pm", "static"], {})
    assert (config.max_connections, config.pm) == (1000, "static")


def test_config_path_from_the_environment(conf: Path) -> None:
    config, _ = settings([], {"FCGI_ASYNC_CONFIG": str(conf)})
    assert config.max_connections == 500


def test_fcgi_web_server_addrs_beats_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('allowed_clients = ["10.0.0.0/8"]\n')
    config, _ = settings(["a:b", "--config", str(path)], {})
    assert config.allowed_clients == ("10.0.0.0/8",)
    config, sources = settings(["a:b", "--config", str(path)], {"FCGI_WEB_SERVER_ADDRS": "::1"})
    assert config.allowed_clients == ("::1",)
    assert sources["allowed_clients"] == "env FCGI_WEB_SERVER_ADDRS"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_conections = 5", "unknown key 'max_conections' (did you mean 'max_connections'?)"),
        ("max-connections = 5", "unknown key 'max-connections' (did you mean 'max_connections'?)"),
        ("keepalive_timeout = 5", "unknown key 'keepalive_timeout' (did you mean"),
        ("[server]\nbind = []", "unknown key 'server'"),
        ('max_connections = "500"', 'max_connections must be an integer, got a string ("500")'),
        ("max_connections = true", "max_connections must be an integer, got a boolean"),
        ('keepalive_timeout_s = "75"', "keepalive_timeout_s must be a number, got a string"),
        ('bind = "unix:/a.sock"', "bind must be an array of strings, got a string"),
        ("bind = [1]", "bind must be an array of strings, got an array"),
        ("multiplex = 1", "multiplex must be true or false, got an integer"),
        ('interface = "cgi"', 'interface must be one of "auto", "asgi", "wsgi"'),
        ('socket_mode = "rw"', 'socket_mode must be an octal mode such as 0o660 or "660"'),
        ('log_level = "loud"', "log_level must be one of"),
        ("threads = ", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key_the_file_and_the_type(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigFileError) as info:
        resolve_settings(["a:b", "--config", str(path)], {})
    assert message in str(info.value)
    assert f"config file {path}" in str(info.value)


def test_values_the_file_may_spell_like_the_flag() -> None:
    values = parse_config_values(
        {"socket_mode": "660", "socket_group": 65534, "graceful_timeout_s": 3}, "x.toml"
    )
    assert values == {"socket_mode": 0o660, "socket_group": "65534", "graceful_timeout_s": 3.0}


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="No such file"):
        load_config_file(str(tmp_path / "nope.toml"))


def test_main_reports_file_errors_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("workers = 0\nbogus = 1\n")
    assert main(["a:b", "--config", str(path)], environ={}) == 1
    err = capsys.readouterr().err
    assert err.startswith("fcgi-async: error: config file ")
    assert "unknown key 'bogus'" in err
    assert err.count("\n") == 1


def test_a_value_the_config_rejects_names_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("workers = 0\n")
    assert main(["a:b", "--config", str(path)], environ={}) == 1
    assert "workers must be a whole number from 1 to 4,096" in capsys.readouterr().err


def test_the_app_is_required_unless_checking(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], environ={}) == 2
    assert "the following arguments are required: MODULE:ATTR" in capsys.readouterr().err
    assert main(["--check-config"], environ={}) == 0


# ------------------------------------------------------------------------- --check-config


def test_check_config_prints_values_and_sources(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"FCGI_ASYNC_MAX_CONNECTIONS": "600"}
    argv = ["--check-config", "--config", str(conf), "--threads", "8", "--no-multiplex"]
    assert main(argv, environ=env) == 0
    out = capsys.readouterr().out
    assert f"config file {conf}" in out.splitlines()[0]
    lines = {line.partition(" = ")[0]: line for line in out.splitlines() if " = " in line}
    assert lines["threads"] == "threads = 8  # flag"
    assert lines["max_connections"] == "max_connections = 600  # env FCGI_ASYNC_MAX_CONNECTIONS"
    assert lines["keepalive_timeout_s"] == "keepalive_timeout_s = 75.0  # file"
    assert lines["socket_mode"] == "socket_mode = 0o660  # file"
    assert lines["multiplex"] == "multiplex = false  # flag"
    assert lines["graceful_timeout_s"] == "graceful_timeout_s = 30.0  # default"
    assert "# root_path is not set  # default" in out
    # The output is itself a configuration file that gives the same Config.
    printed = conf.with_name("printed.toml")
    printed.write_text(out)
    assert tomllib.loads(out)["threads"] == 8
    again = resolve_settings(["--config", str(printed)], {}).config()
    assert again == resolve_settings(argv[1:], env).config()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--socket-owner", "no-such-user-here"], "'no-such-user-here' is not a user"),
        (["--socket-group", "no-such-group-here"], "'no-such-group-here' is not a group"),
        (["--bind", "localhost"], "bad bind 'localhost'"),
        (["--workers", "0"], "workers must be a whole number"),
        (["--threads", "x"], "invalid int value"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_check_config_exits_1_on_an_invalid_setting(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--check-config", "app:app", *argv], environ={}) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_check_config_neither_imports_nor_binds(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "fcgi_async", "--check-config", "no_such_module:app"),
            *("--bind", f"unix:{sock}", "--pid-file", str(tmp_path / "pid")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert 'app = "no_such_module:app"  # flag' in proc.stdout
    assert not sock.exists()
    assert not (tmp_path / "pid").exists()


def test_a_server_runs_from_the_file_alone(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fa-cfg-") as name:
        short = Path(name)
        (short / "app.py").write_text(APP)
        conf = short / "fcgi-async.toml"
        conf.write_text(
            f'app = "app:app"\napp_dir = "{short}"\nbind = ["unix:{short}/s.sock"]\n'
            f'pid_file = "{short}/app.pid"\ngraceful_timeout_s = 5\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
        argv = [sys.executable, "-m", "fcgi_async", "--config", str(conf)]
        proc = Process(argv, tmp_path / "log", env)
        try:
            proc.wait_answer(f"{short}/s.sock")
            assert (short / "app.pid").read_text() == f"{proc.proc.pid}\n"
            assert proc.stop() == 0
            assert not (short / "app.pid").exists()
        finally:
            proc.kill()
