"""``fcgi-async call`` in-process: output, params and exit statuses."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from pathlib import Path

import pytest

from fcgi_async import _compat
from fcgi_async import cli as top_cli
from fcgi_async.client.cli import (
    EXIT_CONNECT,
    EXIT_FASTCGI,
    EXIT_HTTP,
    EXIT_LOCAL,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_TOO_LARGE,
    EXIT_USAGE,
    _parser,
    _size,
    main,
)
from fcgi_async.types import Request

from .conftest import read_body, serve
from .fakes import fake_server, flood_server

pytestmark = pytest.mark.timeout(30)


async def app(request: Request) -> None:
    body = await read_body(request)
    p = request.params
    uri = p.get(b"REQUEST_URI", b"")
    if uri.startswith(b"/status/"):
        code = uri.rsplit(b"/", 1)[1]
        await request.end(b"Status: " + code + b" Custom\r\n\r\nstatus body")
        return
    if uri == b"/slow":
        await request.wait_disconnected()
        return
    if uri == b"/garbage":
        await request.end(b"no headers here")
        return
    await request.send_stderr(b"app warning\n")
    fields = [b"REQUEST_METHOD", b"CONTENT_TYPE", b"SCRIPT_FILENAME", b"HTTP_X_A", b"EXTRA"]
    lines = [f + b"=" + p.get(f, b"-") for f in fields]
    await request.end(
        b"Content-Type: text/plain\r\nX-Test: 1\r\n\r\n" + b"\n".join(lines) + b"\n" + body
    )


async def call(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def test_call_prints_body_headers_and_stderr(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    async with serve(app) as (_, address, _app):
        assert await call([address, "/x", "-H", "X-A: b", "-p", "EXTRA=1"]) == EXIT_OK
        out = capsysbinary.readouterr()
        assert out.out == (
            b"REQUEST_METHOD=GET\nCONTENT_TYPE=\nSCRIPT_FILENAME=/x\nHTTP_X_A=b\nEXTRA=1\n"
        )
        assert out.err == b"app warning\n"
        assert await call([address, "/x", "-i", "-s", "-d", "k=v"]) == EXIT_OK
        out = capsysbinary.readouterr()
        assert out.out.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test: 1\r\n")
        assert b"REQUEST_METHOD=POST\nCONTENT_TYPE=application/x-www-form-urlencoded\n" in out.out
        assert out.out.endswith(b"\nk=v")
        assert out.err == b""
        data = tmp_path / "body.bin"
        data.write_bytes(b"from a file")
        assert await call([address, "/x", "-X", "PUT", "--data-file", str(data)]) == EXIT_OK
        put = capsysbinary.readouterr().out
        assert put.startswith(b"REQUEST_METHOD=PUT\n")
        assert put.endswith(b"\nfrom a file")
        assert await call([address, "/x", "-d", f"@{data}"]) == EXIT_OK
        assert capsysbinary.readouterr().out.endswith(b"\nfrom a file")
        assert (
            await call(
                [address, "/x", "--document-root", "/srv", "--script-filename", "/srv/i.php"]
            )
            == EXIT_OK
        )
        assert b"SCRIPT_FILENAME=/srv/i.php" in capsysbinary.readouterr().out


async def test_call_reads_stdin(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"piped in")))
    async with serve(app) as (_, address, _app):
        assert await call([address, "/x", "-d", "@-"]) == EXIT_OK
    assert capsysbinary.readouterr().out.endswith(b"\npiped in")


async def test_exit_statuses(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    async with serve(app) as (_, address, _app):
        assert await call([address, "/status/503"]) == EXIT_HTTP
        out = capsysbinary.readouterr()
        assert out.out == b"status body"
        assert b"HTTP status 503" in out.err
        assert await call([address, "/status/404", "--no-fail"]) == EXIT_OK
        assert await call([address, "/status/302"]) == EXIT_OK
        assert await call([address, "/slow", "--timeout", "0.2"]) == EXIT_TIMEOUT
        assert await call([address, "/garbage"]) == EXIT_FASTCGI
        assert b"ProtocolError" in capsysbinary.readouterr().err
        # docker/Dockerfile's HEALTHCHECK, options first:
        assert await call(["--get-values", "--timeout", "2", address]) == EXIT_OK
        assert b"FCGI_MPXS_CONNS=1\n" in capsysbinary.readouterr().out
        assert await call([address, "/x", "--data-file", "/nonexistent/file"]) == EXIT_LOCAL
        assert await call([address, "/x", "-H", "no colon"]) == EXIT_LOCAL
    assert await call([address, "/x"]) == EXIT_CONNECT
    assert b"cannot connect" in capsysbinary.readouterr().err
    assert await call(["--get-values", "--timeout", "2", address]) == EXIT_CONNECT
    assert await call(["not an address", "/"]) == EXIT_LOCAL
    assert await call([]) == EXIT_USAGE
    assert await call(["--help"]) == EXIT_OK


async def test_top_level_cli_dispatches_call(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    async with serve(app) as (_, address, _app):
        assert await asyncio.to_thread(top_cli.main, ["call", address, "/status/200"]) == 0
    assert capsysbinary.readouterr().out == b"status body"


async def test_rejected_requests_and_lost_connections_are_fastcgi_errors(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    # The server serves only the AUTHORIZER role: the command's RESPONDER request is refused.
    async with serve(app, roles=("authorizer",)) as (_, address, _app):
        assert await call([address, "/x"]) == EXIT_FASTCGI
        assert b"UnknownRole" in capsysbinary.readouterr().err
        assert await call([address, "/x", "--no-fail"]) == EXIT_FASTCGI  # not an HTTP status
    # The server sends half a response, then closes without END_REQUEST.
    async with fake_server(close_mid_response=True) as fake:
        assert await call([fake.address, "/x"]) == EXIT_FASTCGI
        assert b"ConnectionLost" in capsysbinary.readouterr().err
    async with fake_server(close_mid_response=True) as fake:
        assert await call([fake.address, "/x", "-s"]) == EXIT_FASTCGI
        assert capsysbinary.readouterr().err == b""


def test_help_explains_every_option_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    for action in parser._actions:
        assert len(action.help or "") > 10, action.option_strings or action.dest
    assert main(["--help"]) == EXIT_OK
    text = " ".join(capsys.readouterr().out.split())
    for option in (
        "--get-values",
        "--data-file FILE",
        "-p NAME=VALUE",
        "--timeout S",
        "--no-fail",
        "--read-timeout S",
        "--max-filesize BYTES",
    ):
        assert option in text
    for code, meaning in [
        (EXIT_OK, "ok"),
        (EXIT_LOCAL, "local error"),
        (EXIT_USAGE, "usage"),
        (EXIT_CONNECT, "cannot connect"),
        (EXIT_FASTCGI, "FastCGI error"),
        (EXIT_HTTP, "HTTP status >= 400"),
        (EXIT_TIMEOUT, "timeout"),
        (EXIT_TOO_LARGE, "response too large"),
    ]:
        assert f"{code} {meaning}" in text


async def test_read_timeout_ends_a_silent_request_early(
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """--read-timeout stops a request the server never answers, well before --timeout."""
    async with serve(app) as (_, address, _app):
        started = time.monotonic()
        assert await call([address, "/slow", "--read-timeout", "0.3"]) == EXIT_TIMEOUT
        assert time.monotonic() - started < 20  # --timeout is 30 s
        assert b"read timeout" in capsysbinary.readouterr().err


async def test_max_filesize_aborts_a_large_body(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """Past --max-filesize the request is aborted with exit status 63 (curl's); the body up to
    the limit was written; without the flag the body streams whole."""
    async with flood_server(limit=64 * 1024 * 1024) as server:
        assert await call([server.address, "/flood", "--max-filesize", "1M"]) == EXIT_TOO_LARGE
        out = capsysbinary.readouterr()
        assert len(out.out) <= 1024 * 1024
        assert b"--max-filesize" in out.err
        async with _compat.timeout(10):
            await server.closed.wait()
        assert not server.exhausted.is_set()
    async with flood_server(limit=4 * 1024 * 1024) as server:
        assert await call([server.address, "/flood"]) == EXIT_OK
        assert len(capsysbinary.readouterr().out) >= 4 * 1024 * 1024 - 100


def test_sizes_take_binary_suffixes() -> None:
    assert [_size(t) for t in ("10", "2k", "1M", "1G")] == [10, 2048, 1024**2, 1024**3]
    for bad in ("0", "x", "1Q", "", "-1", "1.5M"):
        assert main(["127.0.0.1:9", "/", "--max-filesize", bad]) == EXIT_USAGE
