"""``fcgi-async --help`` names every operations option of issue 3 with an explanation, and
the supervisor's signals, crash-loop limits and the settings' precedence."""

from __future__ import annotations

import argparse
import re

import pytest

from fcgi_async.cli import build_parser
from fcgi_async.config import CRASH_LIMIT, CRASH_WINDOW_S

#: The flags issue 3 asks for (php-fpm's, gunicorn's and uvicorn's names).
OPERATIONS_FLAGS = [
    "--workers",
    "--pm",
    "--pm-max-children",
    "--pm-start",
    "--pm-min-spare",
    "--pm-max-spare",
    "--pm-idle-timeout",
    "--max-requests",
    "--max-requests-jitter",
    "--worker-timeout",
    "--graceful-timeout",
    "--request-timeout",
    "--slowlog-timeout",
    "--slowlog",
    "--status-path",
    "--ping-path",
    "--access-log",
    "--access-log-format",
    "--error-log",
    "--allowed-clients",
    "--socket-mode",
    "--socket-owner",
    "--socket-group",
    "--pid-file",
    "--backlog",
    "--config",
    "--check-config",
]


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    """The CLI's parser, as ``fcgi-async --help`` builds it."""
    return build_parser()


@pytest.fixture(scope="module")
def help_text(parser: argparse.ArgumentParser) -> str:
    """What ``fcgi-async --help`` prints."""
    return parser.format_help()


@pytest.mark.parametrize("flag", OPERATIONS_FLAGS)
def test_every_operations_flag_is_explained(
    parser: argparse.ArgumentParser, help_text: str, flag: str
) -> None:
    [action] = [a for a in parser._actions if flag in a.option_strings]
    assert action.help, f"{flag} has no help"
    explanation = action.help % {"default": action.default}
    assert len(explanation.split()) >= 5, f"{flag}: {explanation!r}"
    assert re.search(rf"^  {re.escape(flag)}[ ,\n]", help_text, re.MULTILINE)


def test_signals_limits_and_precedence(help_text: str) -> None:
    flat = re.sub(r"\s+", " ", help_text)
    for words in ("TERM/INT/QUIT graceful stop", "HUP/USR2 graceful reload",
                  "TTIN/TTOU one worker more/less", "USR1 reopen log files"):  # fmt: skip
        assert words in flat
    assert f"{CRASH_LIMIT} crashes within {CRASH_WINDOW_S:g} s stop the respawning" in flat
    assert "FCGI_WEB_SERVER_ADDRS" in flat
    assert "LISTEN_FDS" in flat
    assert "fd 0" in flat
    assert "Precedence: flags > environment > config file > defaults" in flat
    assert "?json, ?openmetrics, ?full" in flat
