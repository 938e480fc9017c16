"""Every numeric setting is bounded: NaN, infinities and absurd sizes fail at start-up.

NaN compares false with everything, so a check written as ``value <= 0`` lets it through and the
protection it configures silently stops working; a size past what the C parser's ``Py_ssize_t``
holds made it raise OverflowError inside ``data_received`` for every connection. Each value is
tried through each way a user sets it (flag, ``FCGI_ASYNC_*`` variable, ``--config`` file) and
must give exit status 1 with one line naming the setting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fcgi_async.cli import main
from fcgi_async.config import MAX_SECONDS, Config, ConfigError
from fcgi_async.settings import declarations

_DECLARED = {d.name: d for d in declarations(Config)}
#: Time settings in seconds, and whole-number settings with their bounds (as declared).
_SECONDS = sorted(name for name, d in _DECLARED.items() if d.setting.kind == "seconds")
_WHOLE_NUMBERS = {name: d.setting.bounds for name, d in _DECLARED.items() if d.setting.bounds}


def _flag(name: str) -> str:
    flag = _DECLARED[name].flag
    assert flag is not None, f"{name} has no flag"
    return flag


def _set(source: str, name: str, text: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment that set the field ``name`` to ``text`` through ``source``."""
    flag = _flag(name)
    if source == "flag":
        return [f"{flag}={text}"], {}
    if source == "env":
        return [], {"FCGI_ASYNC_" + flag[2:].replace("-", "_").upper(): text}
    path = tmp_path / "c.toml"
    path.write_text(f"{name} = {text}\n")
    return ["--config", str(path)], {}


def _check(argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--check-config", "app:app", *argv], environ=env) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # never "the configuration is valid"
    assert captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.mark.parametrize("source", ["flag", "env", "file"])
@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", _SECONDS)
def test_nan_and_infinite_seconds_are_refused(
    name: str, text: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, env = _set(source, name, text, tmp_path)
    err = _check(argv, env, capsys)
    assert f"{name} must be" in err
    assert text.lstrip("-") in err


@pytest.mark.parametrize("name", _SECONDS)
def test_seconds_have_a_ceiling(name: str) -> None:
    assert getattr(Config().replace(**{name: MAX_SECONDS}), name) == MAX_SECONDS
    with pytest.raises(ConfigError, match=f"{name} must be .* up to 604,800"):
        Config().replace(**{name: MAX_SECONDS + 1})


@pytest.mark.parametrize("source", ["flag", "env", "file"])
@pytest.mark.parametrize("name", sorted(_WHOLE_NUMBERS))
def test_whole_numbers_past_their_ceiling_are_refused(
    name: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bounds = _WHOLE_NUMBERS[name]
    assert bounds is not None
    low, high = bounds
    # The connection budget at its ceiling, so that the body share may reach its own.
    roomy = Config(max_connection_buffer_bytes=_WHOLE_NUMBERS["max_connection_buffer_bytes"][1])
    assert getattr(roomy.replace(**{name: high}), name) == high
    for value in (high + 1, 2**64, low - 1):
        argv, env = _set(source, name, str(value), tmp_path)
        err = _check(argv, env, capsys)
        assert f"{name} must be a whole number from {low} to {high:,}, got {value}" in err


def test_a_huge_params_limit_never_reaches_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    err = _check(["--max-params-bytes", str(2**64)], {}, capsys)
    assert "max_params_bytes must be a whole number from 1 to 67,108,864" in err
