"""The WSGI adapter against the Request fake: PEP 3333 semantics, failure rules, speed shape."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest
from fcgi_async.adapters.wsgi import (
    COPY_HEAD_BELOW,
    FILE_BLOCK_SIZE,
    INTERNAL_ERROR_RESPONSE,
    MAX_JOINED_BODY,
    FileWrapper,
    WSGIAdapter,
)

from fcgi_async import _compat
from fcgi_async.protocol import Role
from fcgi_async.types import Application, ClientDisconnected

from .fakes import FakeRequest

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
ADAPTER_LOG = "fcgi_async.adapters.wsgi"


async def serve(app: Any, req: FakeRequest | None = None, **kwargs: Any) -> FakeRequest:
    """Run one request through a fresh adapter and return the fake."""
    req = req if req is not None else FakeRequest()
    await WSGIAdapter(app, **kwargs)(req)
    return req


def on_loop(loop: asyncio.AbstractEventLoop, func: Callable[[], object]) -> None:
    """From an application thread: run ``func`` on the loop and wait for it (asyncio objects
    are not thread-safe)."""

    async def call() -> None:
        func()

    asyncio.run_coroutine_threadsafe(call(), loop).result(5)


async def until(predicate: Callable[[], bool]) -> None:
    """Poll until ``predicate()`` holds: the worker thread changes plain Python state, which
    no asyncio primitive can signal, so the loop has to look."""
    async with _compat.timeout(5):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


def hello(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def capture(store: list[Environ], body: bytes = b"ok") -> Any:
    """An app that records its environ (a copy) and answers ``body``."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        store.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


async def environ_of(params: dict[str | bytes, str | bytes], **kwargs: Any) -> Environ:
    seen: list[Environ] = []
    req = await serve(validator(capture(seen)), FakeRequest(params), **kwargs)
    assert req.ended
    return seen[0]


def reader(operation: Callable[[Any], Any], results: list[Any]) -> Any:
    """An app that applies ``operation`` to ``wsgi.input`` and records the result."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        results.append(operation(environ["wsgi.input"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


class Body:
    """An app iterable that counts what was pulled from it and whether it was closed."""

    def __init__(self, chunks: Iterable[bytes], fail_at: int | None = None) -> None:
        self._chunks = iter(chunks)
        self.pulled = 0
        self.closed = 0
        self._fail_at = fail_at

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._fail_at is not None and self.pulled == self._fail_at:
            raise RuntimeError("body failed")
        self.pulled += 1
        return next(self._chunks)

    def close(self) -> None:
        self.closed += 1


def returning(body: Any, headers: list[tuple[str, str]] | None = None) -> Any:
    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", headers or [("Content-Type", "text/plain")])
        return body

    return app


# -- the Application seam ---------------------------------------------------------------------


async def test_is_an_application_with_noop_lifecycle() -> None:
    adapter = WSGIAdapter(hello)
    assert isinstance(adapter, Application)
    await adapter.startup()
    await adapter.startup()
    await adapter.shutdown()
    req = FakeRequest()
    await adapter(req)
    assert req.parsed() == (200, [("Content-Type", "text/plain")], b"hello")


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads"):
        WSGIAdapter(hello, threads=0)


# -- validator-wrapped apps -------------------------------------------------------------------


async def test_validator_simple_app() -> None:
    req = await serve(validator(hello))
    assert req.ended
    assert not req.failed
    assert req.output == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"


async def test_validator_generator_app_with_body_and_write() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"got:")
        yield body
        yield b""
        yield b"!"

    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "5"}, [b"ab", b"cde"])
    await serve(validator(app), req)
    assert req.parsed() == (201, [("Content-Type", "text/plain")], b"got:abcde!")
    assert req.ended


async def test_validator_input_iteration_and_errors() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        lines = list(environ["wsgi.input"])
        environ["wsgi.errors"].write(f"seen {len(lines)} lines\n")
        environ["wsgi.errors"].flush()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"".join(reversed(lines))]

    req = FakeRequest({"CONTENT_LENGTH": "8"}, [b"a\nb", b"\nc\n", b"d\n"])
    await serve(validator(app), req)
    assert req.parsed()[2] == b"d\nc\nb\na\n"
    assert req.stderr == [b"seen 4 lines\n"]


async def test_validator_empty_body_and_file_wrapper(tmp_path: Any) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)

    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if environ["PATH_INFO"] == "/empty":
            return []
        return environ["wsgi.file_wrapper"](open(path, "rb"), 16)

    req = await serve(validator(app), FakeRequest({"REQUEST_URI": "/empty"}))
    assert req.parsed() == (200, [("Content-Type", "application/octet-stream")], b"")
    req = await serve(validator(app))
    assert req.parsed()[2] == b"x" * 100


# -- environ ----------------------------------------------------------------------------------


async def test_environ_basics() -> None:
    env = await environ_of(
        {
            "REQUEST_URI": "/a/b?x=1",
            "QUERY_STRING": "x=1",
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": "0",
            "CONTENT_TYPE": "text/plain",
            "HTTP_X_THING": "yes",
        }
    )
    assert type(env) is dict
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["REQUEST_METHOD"] == "POST"
    assert env["CONTENT_LENGTH"] == "0"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["HTTP_X_THING"] == "yes"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1"
    assert env["FCGI_ROLE"] == "RESPONDER"
    assert all(type(v) is str for k, v in env.items() if "." not in k)


async def test_environ_multiprocess_flag() -> None:
    seen: list[Environ] = []
    await serve(capture(seen), multiprocess=True)
    assert seen[0]["wsgi.multiprocess"] is True


async def test_empty_content_headers_are_absent() -> None:
    env = await environ_of({"CONTENT_LENGTH": "", "CONTENT_TYPE": ""})
    assert "CONTENT_LENGTH" not in env
    assert "CONTENT_TYPE" not in env


async def test_http_copies_of_content_headers_are_dropped() -> None:
    env = await environ_of(
        {
            "CONTENT_TYPE": "",
            "HTTP_CONTENT_TYPE": "application/json",
            "HTTP_CONTENT_LENGTH": "3",
        }
    )
    assert env["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


async def test_httpoxy_stripped_and_os_environ_untouched() -> None:
    before = dict(os.environ)
    env = await environ_of({"HTTP_PROXY": "http://evil:1", "HTTP_HOST": "example.com"})
    assert "HTTP_PROXY" not in env
    assert env["HTTP_HOST"] == "example.com"
    assert dict(os.environ) == before
    assert os.environ.get("HTTP_HOST") != "example.com"


async def test_environ_is_the_same_on_later_requests_and_many_header_names() -> None:
    # Decoded param names are cached by the adapter, a bounded number of them.
    from fcgi_async.adapters.wsgi import _MAX_CACHED_NAMES

    seen: list[Environ] = []
    adapter = WSGIAdapter(validator(capture(seen)))
    Params = dict[str | bytes, str | bytes]
    many: Params = {f"HTTP_X_{i}": str(i) for i in range(_MAX_CACHED_NAMES + 10)}
    params: Params = {"HTTP_PROXY": "http://evil:1", "HTTP_CONTENT_LENGTH": "3", "HTTP_X_É": "é"}
    none: Params = {}
    for extra in (none, many, many, none):
        await adapter(FakeRequest({**params, **extra}))
    first, second, third, fourth = seen
    assert first.keys() == fourth.keys()
    assert {k: v for k, v in first.items() if k.isupper()} == {
        k: v for k, v in fourth.items() if k.isupper()
    }
    assert "HTTP_PROXY" not in fourth
    assert "HTTP_CONTENT_LENGTH" not in fourth
    assert fourth["HTTP_X_É"] == "é"
    assert second.keys() == third.keys()
    assert all(third[f"HTTP_X_{i}"] == str(i) for i in range(_MAX_CACHED_NAMES + 10))
    await adapter.shutdown()


async def test_https_scheme() -> None:
    assert (await environ_of({"HTTPS": "on"}))["wsgi.url_scheme"] == "https"
    assert (await environ_of({"REQUEST_SCHEME": "https"}))["wsgi.url_scheme"] == "https"


async def test_required_defaults_when_missing() -> None:
    req = FakeRequest({"HTTPS": "on", "HTTP_HOST": "example.com:8443"})
    for name in (b"SERVER_NAME", b"SERVER_PORT", b"REQUEST_METHOD", b"SERVER_PROTOCOL"):
        del req._params[name]
    seen: list[Environ] = []
    await serve(validator(capture(seen)), req)
    env = seen[0]
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "443"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"


async def test_server_name_from_ipv6_host_and_fallback() -> None:
    env = await environ_of({"SERVER_NAME": "", "HTTP_HOST": "[::1]:8080"})
    assert env["SERVER_NAME"] == "[::1]"
    env = await environ_of({"SERVER_NAME": "", "SERVER_PORT": ""})
    assert env["SERVER_NAME"] == "localhost"
    assert env["SERVER_PORT"] == "80"


@pytest.mark.parametrize(
    ("params", "root_path", "script_name", "path_info"),
    [
        # nginx with the stock fastcgi_params: SCRIPT_NAME is the whole path, no PATH_INFO.
        ({"REQUEST_URI": "/app/x/y?q", "SCRIPT_NAME": "/app/x/y"}, None, "", "/app/x/y"),
        # ... mounted under a prefix with --root-path.
        ({"REQUEST_URI": "/app/x/y?q", "SCRIPT_NAME": "/app/x/y"}, "/app", "/app", "/x/y"),
        ({"REQUEST_URI": "/app", "SCRIPT_NAME": "/app"}, "/app/", "/app", ""),
        ({"REQUEST_URI": "/other", "SCRIPT_NAME": "/other"}, "/app", "", "/other"),
        # nginx fastcgi_split_path_info / lighttpd: the web server split it.
        (
            {"REQUEST_URI": "/app/x", "SCRIPT_NAME": "/app", "PATH_INFO": "/x"},
            None,
            "/app",
            "/x",
        ),
        # Apache mod_proxy_fcgi: no PATH_INFO.
        ({"REQUEST_URI": "/x%20y", "SCRIPT_NAME": "/x y"}, None, "", "/x y"),
        # %2F decodes like any other escape (CGI PATH_INFO is decoded).
        ({"REQUEST_URI": "/a%2Fb"}, None, "", "/a/b"),
    ],
)
async def test_path_splits(
    params: dict[str | bytes, str | bytes], root_path: str | None, script_name: str, path_info: str
) -> None:
    env = await environ_of(params, root_path=root_path)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


async def test_non_ascii_path_is_latin1_of_the_raw_bytes() -> None:
    env = await environ_of({"REQUEST_URI": "/caf%C3%A9/%FF"})
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/\u00ff"
    assert env["PATH_INFO"].encode("latin-1") == b"/caf\xc3\xa9/\xff"
    # Raw (non-latin-1-safe) bytes in params survive as latin-1 too.
    req = FakeRequest({b"HTTP_X_RAW": b"\xe9\x00\xff"})
    seen: list[Environ] = []
    await serve(capture(seen), req)
    assert seen[0]["HTTP_X_RAW"] == "\u00e9\x00\u00ff"


async def test_root_path_with_non_ascii_characters() -> None:
    env = await environ_of({"REQUEST_URI": "/caf%C3%A9/x"}, root_path="/café")
    assert env["SCRIPT_NAME"].encode("latin-1").decode("utf-8") == "/café"
    assert env["PATH_INFO"] == "/x"


async def test_query_string_from_request_uri_when_not_sent() -> None:
    env = await environ_of({"REQUEST_URI": "/p?a=1&b=%20"})
    assert env["QUERY_STRING"] == "a=1&b=%20"


async def test_filter_role_exposes_data_stream() -> None:
    seen: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen.append(environ["FCGI_ROLE"])
        seen.append(environ["wsgi.input"].read())
        seen.append(environ["fcgi.data"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    req = FakeRequest(
        {"FCGI_DATA_LENGTH": "5", "CONTENT_LENGTH": "2"},
        [b"in"],
        role=Role.FILTER,
        data=[b"abc", b"defgh"],
    )
    await serve(app, req)
    assert seen == ["FILTER", b"in", b"abcde"]


# -- wsgi.input -------------------------------------------------------------------------------

BODY = [b"hello ", b"world\nline two\n", b"", b"end"]
BODY_BYTES = b"".join(BODY)


def body_request(length: str | None = None, chunks: Iterable[bytes] = BODY) -> FakeRequest:
    cl = str(len(BODY_BYTES)) if length is None else length
    return FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": cl}, chunks)


@pytest.mark.parametrize("length", [None, ""])
async def test_input_read_sizes(length: str | None) -> None:
    results: list[Any] = []
    app = reader(lambda f: [f.read(3), f.read(0), f.read(5), f.read(10), f.read(100)], results)
    await serve(app, body_request(length))
    assert results == [[b"hel", b"", b"lo wo", b"rld\nline t", b"wo\nend"]]


async def test_input_read_to_end_and_after_eof() -> None:
    results: list[Any] = []
    await serve(
        reader(lambda f: [f.read(), f.read(), f.read(1), f.readline()], results), body_request()
    )
    assert results == [[BODY_BYTES, b"", b"", b""]]


async def test_input_read_none_and_negative_read_all() -> None:
    results: list[Any] = []
    await serve(reader(lambda f: [f.read(2), f.read(None)], results), body_request())
    assert results == [[b"he", BODY_BYTES[2:]]]
    results.clear()
    await serve(reader(lambda f: f.read(-1), results), body_request())
    assert results == [BODY_BYTES]


async def test_input_readline() -> None:
    results: list[Any] = []
    app = reader(
        lambda f: [f.readline(), f.readline(4), f.readline(0), f.readline(None), f.readline()],
        results,
    )
    await serve(app, body_request())
    assert results == [[b"hello world\n", b"line", b"", b" two\n", b"end"]]


async def test_input_readline_longer_than_chunks_and_exact_limit() -> None:
    results: list[Any] = []
    app = reader(lambda f: [f.readline(3), f.readline(9), f.readline(100)], results)
    await serve(app, body_request(chunks=[b"ab", b"cd", b"ef\n", b"gh"]))
    assert results == [[b"abc", b"def\n", b"gh"]]


async def test_input_readlines_and_iteration() -> None:
    results: list[Any] = []
    await serve(reader(lambda f: f.readlines(), results), body_request())
    assert results == [[b"hello world\n", b"line two\n", b"end"]]
    results.clear()
    await serve(reader(lambda f: [f.readlines(3), f.readlines()], results), body_request())
    assert results == [[[b"hello world\n"], [b"line two\n", b"end"]]]
    results.clear()
    await serve(reader(list, results), body_request())
    assert results == [[b"hello world\n", b"line two\n", b"end"]]


async def test_input_eof_at_content_length() -> None:
    results: list[Any] = []
    app = reader(lambda f: [f.read(4), f.read(10), f.read(), f.readline()], results)
    await serve(app, body_request(length="6", chunks=[b"0123", b"456789", b"abc"]))
    assert results == [[b"0123", b"45", b"", b""]]


async def test_input_content_length_zero_never_waits_for_the_body() -> None:
    # body=None: nothing is ever fed, so any receive() would hang the test.
    results: list[Any] = []
    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "0"}, None)
    await serve(reader(lambda f: [f.read(), f.readline(), f.read(5)], results), req)
    assert results == [[b"", b"", b""]]


async def test_input_terminated_without_content_length() -> None:
    results: list[Any] = []
    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": ""}, [b"a" * 40000, b"b" * 3])
    await serve(reader(lambda f: f.read(), results), req)
    assert results == [b"a" * 40000 + b"bbb"]


async def test_input_streams_one_chunk_at_a_time() -> None:
    got_first = threading.Event()
    results: list[bytes] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inp = environ["wsgi.input"]
        results.append(inp.read(5))
        got_first.set()
        results.append(inp.read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": ""}, None)
    task = asyncio.create_task(WSGIAdapter(app)(req))
    req.feed(b"hello")
    await until(got_first.is_set)
    assert results == [b"hello"]
    req.feed(b" world")
    req.feed(b"")
    await task
    assert results == [b"hello", b" world"]
    assert req.ended


async def test_input_disconnect_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=ADAPTER_LOG)
    reading = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        reading.set()
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"never"]

    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "10"}, None)
    task = asyncio.create_task(WSGIAdapter(app)(req))
    await until(reading.is_set)
    req.disconnect()
    await task
    assert not req.ended
    assert not req.failed
    assert req.output == b""
    records = [r for r in caplog.records if r.name == ADAPTER_LOG]
    assert records
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in records)


# -- wsgi.errors ------------------------------------------------------------------------------


async def test_errors_go_to_stderr_the_server_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        errors = environ["wsgi.errors"]
        errors.write("first line\nsecond ")
        errors.writelines(["part\n", "tail without newline"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    req = await serve(app)
    assert b"".join(req.stderr) == b"first line\nsecond part\ntail without newline\n"
    # Sent lines are logged by the server's send_stderr (with the request), not twice here.
    messages = [r.getMessage() for r in caplog.records if r.name == "fcgi_async.test.app"]
    assert messages == []
    assert req.ended


async def test_errors_long_line_is_bounded_and_non_str_rejected() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        errors = environ["wsgi.errors"]
        errors.write("x" * 10000)
        with pytest.raises(TypeError):
            errors.write(b"bytes")
        errors.write("é")
        errors.flush()
        start_response("200 OK", [])
        return []

    req = await serve(app)
    assert req.stderr == [b"x" * 10000 + b"\n", "é\n".encode()]


async def test_errors_from_a_foreign_thread_only_log(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        t = threading.Thread(target=environ["wsgi.errors"].write, args=("from thread\n",))
        t.start()
        t.join()
        start_response("200 OK", [])
        return []

    req = await serve(app)
    assert req.stderr == []
    assert "from thread" in caplog.text


# -- start_response, write, headers -----------------------------------------------------------


async def test_one_write_for_a_simple_app() -> None:
    req = await serve(hello)
    assert req.writes == 1
    assert req.ended
    assert req.app_status == 0
    assert req.output == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"


async def test_one_write_for_list_of_several_and_tuple_and_empty() -> None:
    req = await serve(returning([b"a", b"", bytearray(b"b"), b"c"]))
    assert (req.writes, req.parsed()[2]) == (1, b"abc")
    req = await serve(returning((b"x",)))
    assert (req.writes, req.parsed()[2]) == (1, b"x")
    req = await serve(returning([]))
    assert (req.writes, req.output) == (1, b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    req = await serve(returning([memoryview(b"mv")]))
    assert (req.writes, req.parsed()[2]) == (1, b"mv")


async def test_big_bodies_are_not_copied_into_one_buffer() -> None:
    half = b"z" * (MAX_JOINED_BODY // 2 + 1)
    req = await serve(returning([half, b"", bytearray(half)]))
    assert req.parsed()[2] == half + half
    assert req.stdout[0].endswith(b"\r\n\r\n")  # the header block alone
    assert req.stdout[1:] == [half, half]
    assert req.writes == 3
    big = b"y" * (MAX_JOINED_BODY + 1)
    req = await serve(returning([big]))
    assert req.stdout[1:] == [big]
    assert req.writes == 2

    # Content-Length still truncates, and write() already sent the header block.
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Length", str(len(half) + 2))])(b"w")
        return [half, half]

    req = await serve(app)
    assert req.parsed()[2] == b"w" + half + b"z"


@pytest.mark.parametrize("shape", ["list", "generator", "generator-with-length"])
async def test_a_large_body_follows_the_head_uncopied(shape: str) -> None:
    """A body of COPY_HEAD_BELOW bytes or more is never copied behind the header block."""
    body = b"x" * COPY_HEAD_BELOW
    headers = [("Content-Length", str(len(body)))] if shape != "generator" else []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", headers)
        return [body] if shape == "list" else iter([body])

    req = await serve(app)
    assert req.stdout[0].endswith(b"\r\n\r\n")  # the header block alone
    assert req.stdout[1] is body  # handed on as it is
    assert req.parsed()[2] == body
    assert req.ended
    small = await serve(returning([body[:-1]]))
    assert small.writes == 1  # below the threshold: head and body in one buffer


async def test_non_bytes_body_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    for body in ([5], [b"a", "b"], ["text"], iter([3]), "text", None):
        req = await serve(returning(body))
        assert req.output == INTERNAL_ERROR_RESPONSE, body
    assert "must be bytes, not int" in caplog.text

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])(3)  # type: ignore[arg-type]
        return []

    req = await serve(app)
    assert req.output == INTERNAL_ERROR_RESPONSE


async def test_write_then_return() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"")
        write(b"one ")
        write(bytearray(b"two "))  # type: ignore[arg-type]
        return [b"three"]

    req = await serve(app)
    assert req.stdout[0] == b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\none "
    assert req.parsed()[2] == b"one two three"
    assert req.writes == 3


async def test_write_before_start_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response.__self__.write(b"early")  # type: ignore[attr-defined]
        return []

    req = await serve(app)
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert "start_response" in caplog.text


async def test_headers_wait_for_first_non_empty_chunk() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b""
        yield b"late"

    req = await serve(app)
    assert req.stdout[0].endswith(b"\r\n\r\nlate")


async def test_start_response_inside_generator() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        yield b"nope"

    req = await serve(app)
    assert req.parsed() == (404, [("Content-Type", "text/plain")], b"nope")


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("X-Bad", "a\r\nSet-Cookie: evil=1")]),
        ("200 OK", [("X-Bad", "a\nSet-Cookie: evil=1")]),
        ("200 OK", [("X-Bad", "a\revil")]),
        ("200 OK", [("X-Bad\r\nSet-Cookie: evil=1\r\nX", "a")]),
        ("200 OK", [("X-Nul", "a\0evil")]),
        ("200 OK\r\nSet-Cookie: evil=1", []),
        ("200 OK", [("X-Uni", "\u2028evil")]),
        ("OK 200", []),
        ("2000 evil", []),
        ("2\u00b20 evil", []),
        ("099 evil", []),
        ("20", []),
    ],
)
async def test_unsafe_status_or_header_is_a_500(
    status: str, headers: list[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    req = await serve(_with_status(status, headers))
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert b"evil" not in req.output
    assert any(r.name == ADAPTER_LOG and "refusing" in r.getMessage() for r in caplog.records)


async def test_refused_header_log_names_only_the_culprit(caplog: pytest.LogCaptureFixture) -> None:
    headers = [("Set-Cookie", "session=SECRET"), ("X-Bad", "a\r\nb")]
    await serve(_with_status("200 OK", headers))
    [line] = [r.getMessage() for r in caplog.records if "refusing" in r.getMessage()]
    assert "X-Bad" in line
    assert "SECRET" not in line


def _with_status(status: str, headers: list[tuple[str, str]]) -> Any:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return [b"body evil"]

    return app


async def test_non_str_header_is_a_500() -> None:
    req = await serve(returning([b"x"], [("Content-Length", 1)]))  # type: ignore[list-item]
    assert req.output == INTERNAL_ERROR_RESPONSE
    req = await serve(_with_status(b"200 OK", []))  # type: ignore[arg-type]
    assert req.output == INTERNAL_ERROR_RESPONSE


async def test_app_catching_the_header_error_still_gets_a_500() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        with contextlib.suppress(ValueError):
            start_response("200 OK", [("X", "a\r\nb")])
        return [b"body"]

    req = await serve(app)
    assert req.output == INTERNAL_ERROR_RESPONSE


# -- Content-Length ---------------------------------------------------------------------------


async def test_iteration_stops_once_content_length_is_reached() -> None:
    blocker = threading.Event()
    state = {"pulled": 0, "closed": False}

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        try:
            state["pulled"] += 1
            yield b"abc"
            state["pulled"] += 1
            yield b"def"
            state["pulled"] += 1
            blocker.wait(5)  # a server that asked for more would hang here
            yield b"ghi"
        finally:
            state["closed"] = True

    req = await serve(app)
    blocker.set()
    assert req.parsed()[2] == b"abcdef"
    assert state == {"pulled": 2, "closed": True}
    assert req.writes == 2  # "abc" with the headers, then "def" with END_REQUEST


async def test_body_truncated_at_content_length() -> None:
    req = await serve(returning([b"abcdef"], [("Content-Length", "3")]))
    assert req.parsed()[2] == b"abc"
    req = await serve(returning(Body([b"ab", b"cdef", b"gh"]), [("content-length", "3")]))
    assert req.parsed()[2] == b"abc"

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [("Content-Length", "2")])
        write(b"xyz")
        write(b"more")
        return [b"and more"]

    req = await serve(app)
    assert req.parsed()[2] == b"xy"


async def test_content_length_zero_and_invalid() -> None:
    body = Body([b"abc"])
    req = await serve(returning(body, [("Content-Length", "0")]))
    assert req.parsed()[2] == b""
    assert body.closed == 1
    req = await serve(returning(Body([b"abc", b"d"]), [("Content-Length", "nope")]))
    assert req.parsed()[2] == b"abcd"
    req = await serve(returning(Body([b"abc", b"d"]), [("Content-Length", "-1")]))
    assert req.parsed()[2] == b"abcd"


# -- streaming and flow control ---------------------------------------------------------------


async def test_streaming_generator_blocks_on_flow_control() -> None:
    produced: list[int] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        for i in range(3):
            produced.append(i)
            yield b"event %d\n" % i

    req = FakeRequest()
    req.writable.clear()
    task = asyncio.create_task(WSGIAdapter(app)(req))
    await until(lambda: produced == [0])
    await asyncio.sleep(0.05)
    assert produced == [0]  # the thread is parked on flow control, not producing
    assert req.stdout == []
    req.writable.set()
    await task
    assert produced == [0, 1, 2]
    assert req.parsed()[2] == b"event 0\nevent 1\nevent 2\n"
    assert req.writes == 4  # every chunk goes out as produced, then END_REQUEST


async def test_write_blocks_on_flow_control() -> None:
    progress: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        progress.append("before")
        write(b"a")
        progress.append("after")
        return []

    req = FakeRequest()
    req.writable.clear()
    task = asyncio.create_task(WSGIAdapter(app)(req))
    await until(lambda: progress == ["before"])
    await asyncio.sleep(0.05)
    assert progress == ["before"]
    req.writable.set()
    await task
    assert progress == ["before", "after"]


async def test_file_wrapper_streams_real_files_in_large_blocks(tmp_path: Any) -> None:
    data = os.urandom(3 * 65536 + 1000)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    files: list[Any] = []

    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(path, "rb")  # noqa: SIM115 (the adapter closes it through the wrapper)
        files.append(f)
        return environ["wsgi.file_wrapper"](f, 512)

    req = await serve(app)
    assert req.parsed()[2] == data
    # The header block alone (a 64 KiB block is not copied behind it), then the blocks.
    assert req.stdout[0].endswith(b"\r\n\r\n")
    assert [len(c) for c in req.stdout[1:]] == [65536, 65536, 65536, 1000]
    assert files[0].closed


def test_file_wrapper_keeps_small_blocks_for_non_files() -> None:
    f = io.BytesIO(b"abcdefg")
    wrapper = FileWrapper(f, 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]
    wrapper.close()
    assert f.closed

    class NoClose:
        def read(self, n: int) -> bytes:
            return b""

    FileWrapper(NoClose()).close()


# -- close() is always called -----------------------------------------------------------------


async def test_close_called_on_list_subclass_and_iterables() -> None:
    class ClosingList(list[bytes]):
        closed = 0

        def close(self) -> None:
            ClosingList.closed += 1

    req = await serve(returning(ClosingList([b"a", b"b"])))
    assert req.parsed()[2] == b"ab"
    assert ClosingList.closed == 1
    body = Body([b"x", b"y"])
    req = await serve(returning(body))
    assert req.parsed()[2] == b"xy"
    assert body.closed == 1


async def test_close_called_when_iteration_fails(caplog: pytest.LogCaptureFixture) -> None:
    body = Body([b"x", b"y"], fail_at=0)
    req = await serve(returning(body))
    assert body.closed == 1
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert "body failed" in caplog.text


async def test_close_called_when_client_disconnects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=ADAPTER_LOG)
    body = Body(b"chunk" for _ in range(1000))
    req = FakeRequest()
    req.writable.clear()
    task = asyncio.create_task(WSGIAdapter(returning(body))(req))
    await until(lambda: body.pulled == 1)
    req.disconnect()
    req.writable.set()  # a real server wakes flow-control waiters when the connection dies
    await task
    assert body.closed == 1
    assert body.pulled == 1
    assert not req.ended
    assert not req.failed
    assert not [r for r in caplog.records if r.levelno > logging.DEBUG]


async def test_close_failure_is_an_application_error(caplog: pytest.LogCaptureFixture) -> None:
    class BadClose(list[bytes]):
        def close(self) -> None:
            raise RuntimeError("close failed")

    # Nothing was sent yet (Content-Length reached, the body waits for END_REQUEST): a 500.
    req = await serve(returning(BadClose([b"fine"]), [("Content-Length", "4")]))
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert "close failed" in caplog.text
    # The body already went out chunk by chunk: the response must break visibly.
    req = await serve(returning(BadClose([b"fine"])))
    assert req.failed
    assert not req.ended


async def test_validator_sees_close_on_disconnect() -> None:
    # wsgiref.validate asserts in __del__ when its iterator is never closed.
    req = FakeRequest()
    loop = asyncio.get_running_loop()

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        on_loop(loop, req.disconnect)
        yield b"a"
        yield b"b"

    await serve(validator(app), req)
    assert not req.ended
    assert not req.failed


# -- failures -----------------------------------------------------------------------------------


async def test_error_before_start_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise KeyError("secret detail")

    req = await serve(app, FakeRequest({"REQUEST_URI": "/boom"}))
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert req.parsed() == (
        500,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "21")],
        b"Internal Server Error",
    )
    assert b"secret" not in req.output
    assert req.ended
    assert not req.failed
    [record] = [r for r in caplog.records if r.name == ADAPTER_LOG]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "secret detail" in caplog.text
    assert "GET /boom" in record.getMessage()


async def test_error_after_start_but_before_any_byte_is_a_500() -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise RuntimeError("no body")
        yield b""  # pragma: no cover

    req = await serve(app)
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert not req.failed


async def test_error_after_bytes_were_sent_fails_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = Body([b"partial", b"more"], fail_at=1)
    req = await serve(returning(body))
    assert req.failed
    assert not req.ended
    assert req.parsed()[2] == b"partial"
    assert body.closed == 1
    assert "body failed" in caplog.text


async def test_error_after_write_fails_the_request() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])(b"sent")
        raise RuntimeError("late")

    req = await serve(app)
    assert req.failed
    assert not req.ended


async def test_returning_without_start_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    req = await serve(lambda environ, start_response: [b"body"])
    assert req.output == INTERNAL_ERROR_RESPONSE
    assert "start_response" in caplog.text
    req = await serve(lambda environ, start_response: iter([b"", b"body"]))
    assert req.output == INTERNAL_ERROR_RESPONSE
    req = await serve(lambda environ, start_response: [])
    assert req.output == INTERNAL_ERROR_RESPONSE


async def test_stderr_partial_line_flushed_before_500() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["wsgi.errors"].write("about to fail")
        raise RuntimeError("x")

    req = await serve(app)
    assert req.stderr == [b"about to fail\n"]
    assert req.output == INTERNAL_ERROR_RESPONSE


async def test_disconnected_error_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=ADAPTER_LOG)
    req = FakeRequest()
    loop = asyncio.get_running_loop()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        on_loop(loop, req.disconnect)
        raise RuntimeError("because the client left")

    await serve(app, req)
    assert not req.ended
    assert not req.failed
    records = [r for r in caplog.records if r.name == ADAPTER_LOG]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert records[0].exc_info is None


async def test_client_gone_at_end_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    req = FakeRequest()
    loop = asyncio.get_running_loop()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        on_loop(loop, req.disconnect)
        return [b"x"]

    await serve(app, req)
    assert not req.ended
    assert not caplog.records


async def test_write_on_gone_client_raises_client_disconnected() -> None:
    req = FakeRequest()
    loop = asyncio.get_running_loop()
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        on_loop(loop, req.disconnect)
        try:
            write(b"x")
        except OSError as exc:
            raised.append(exc)
            raise
        return []

    await serve(app, req)
    assert len(raised) == 1
    assert isinstance(raised[0], ClientDisconnected)


# -- exc_info ---------------------------------------------------------------------------------


async def test_second_start_response_without_exc_info_is_an_error() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"x"]

    req = await serve(app)
    assert req.output == INTERNAL_ERROR_RESPONSE


async def test_exc_info_before_headers_sent_replaces_the_response() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Busy", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"try later"]

    req = await serve(validator(app))
    assert req.parsed() == (503, [("Content-Type", "text/plain")], b"try later")


async def test_exc_info_after_headers_sent_reraises(caplog: pytest.LogCaptureFixture) -> None:
    reraised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"started"
        try:
            raise ValueError("mid-stream")
        except ValueError as exc:
            try:
                start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
            except ValueError as again:
                reraised.append(again)
                reraised.append(exc)
                raise

    req = await serve(app)
    assert len(reraised) == 2
    assert reraised[0] is reraised[1]
    assert req.failed
    assert req.parsed() == (200, [("Content-Type", "text/plain")], b"started")
    assert "mid-stream" in caplog.text


async def test_status_without_reason_phrase() -> None:
    req = await serve(_with_status("204", []))
    assert req.output.startswith(b"Status: 204\r\n")


async def test_exc_info_with_nothing_started_yet() -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        try:
            raise ValueError("early")
        except ValueError:
            start_response("500 Handled", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"handled"]

    req = await serve(app)
    assert req.parsed() == (500, [("Content-Type", "text/plain")], b"handled")
    assert req.ended
    assert not req.failed


# -- threads ----------------------------------------------------------------------------------


async def test_thread_limiter_bounds_concurrency() -> None:
    lock = threading.Lock()
    pair = threading.Barrier(2, timeout=5)  # two must run at once, or this times out
    active = 0
    peak = 0

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        pair.wait()
        time.sleep(0.02)  # room for a third thread to show up if the limiter leaked
        with lock:
            active -= 1
        start_response("200 OK", [])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=2)
    await adapter.startup()
    reqs = [FakeRequest() for _ in range(6)]
    await asyncio.gather(*(adapter(r) for r in reqs))
    assert peak == 2
    assert all(r.ended for r in reqs)


async def test_app_runs_off_the_event_loop_thread() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        seen.append(threading.get_ident())
        start_response("200 OK", [])
        yield b"a"
        seen.append(threading.get_ident())
        yield b"b"

    await serve(app)
    assert len(seen) == 2
    assert loop_thread not in seen


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fcgi-async-wsgi-")]


async def test_threads_start_as_needed_and_stop_at_shutdown() -> None:
    before = set(pool_threads())
    gate = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        gate.wait(5)
        start_response("200 OK", [])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=3)
    await adapter.startup()
    gate.set()
    await adapter(FakeRequest())  # one request at a time needs one thread
    await adapter(FakeRequest())
    gate.clear()
    assert len(set(pool_threads()) - before) == 1
    tasks = [asyncio.create_task(adapter(FakeRequest())) for _ in range(5)]
    await until(lambda: len(set(pool_threads()) - before) == 3)
    gate.set()
    await asyncio.gather(*tasks)
    assert len(set(pool_threads()) - before) == 3  # never more than `threads`
    ours = set(pool_threads()) - before
    assert all(t.daemon for t in ours)
    await adapter.shutdown()
    await adapter.shutdown()
    for t in ours:
        t.join(5)
        assert not t.is_alive()
    # A later request (tests, a restarted server) gets a new pool.
    req = FakeRequest()
    await adapter(req)
    assert req.ended
    await adapter.shutdown()


async def test_cancelled_request_lets_its_thread_finish() -> None:
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            started.set()
            release.wait(5)
            finished.append("slow")
        start_response("200 OK", [])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=1)
    slow = FakeRequest({"REQUEST_URI": "/slow"})
    task = asyncio.create_task(adapter(slow))
    await until(started.is_set)
    task.cancel()  # the server's shutdown cancels requests past the graceful timeout
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    req = FakeRequest()
    await adapter(req)  # the one thread is free again: the slow job was delivered, dropped
    assert finished == ["slow"]
    assert req.ended
    assert not slow.ended
    await adapter.shutdown()


def test_thread_outliving_its_closed_loop() -> None:
    # The event loop is closed while the application still runs (the process is exiting):
    # its I/O fails with RuntimeError and the result is dropped; the thread serves on.
    started = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        if environ["PATH_INFO"] == "/first":
            started.set()
            release.wait(5)
            try:
                write(b"too late")
            except RuntimeError as exc:
                errors.append(exc)
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=1)
    loop = asyncio.new_event_loop()
    task = loop.create_task(adapter(FakeRequest({"REQUEST_URI": "/first"})))
    loop.run_until_complete(asyncio.wait([loop.run_in_executor(None, started.wait, 5)]))
    task.cancel()
    loop.run_until_complete(asyncio.wait([task]))
    loop.close()
    release.set()
    req = FakeRequest()
    asyncio.run(adapter(req))
    assert req.ended
    assert len(errors) == 1
    assert "closed" in str(errors[0])


async def test_write_cancelled_by_the_loop_raises_client_disconnected() -> None:
    # At exit, asyncio cancels every task, a write waiting on flow control included.
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        try:
            write(b"blocked")
        except OSError as exc:
            raised.append(exc)
            raise
        return []  # pragma: no cover

    req = FakeRequest()
    req.writable.clear()
    adapter = WSGIAdapter(app)
    task = asyncio.create_task(adapter(req))
    ours = {asyncio.current_task(), task}
    await until(lambda: len(asyncio.all_tasks() - ours) == 1)
    [write] = asyncio.all_tasks() - ours
    write.cancel()
    await task
    assert isinstance(raised[0], ClientDisconnected)
    assert not req.ended
    await adapter.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_adapter_used_before_a_fork_serves_in_the_child() -> None:
    # The child has none of the parent's worker threads: its pool starts them again.
    adapter = WSGIAdapter(hello, threads=1)
    parent = FakeRequest()
    asyncio.run(adapter(parent))
    assert parent.ended
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child (coverage does not follow the fork)
        try:
            req = FakeRequest()
            asyncio.run(asyncio.wait_for(adapter(req), 5))
            os.write(w, req.output)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as child:
        output = child.read()
    os.waitpid(pid, 0)
    assert output.endswith(b"hello")


async def test_pool_after_fork_starts_threads_again() -> None:
    # What the fork hook does in the child, run here so that the parent still works after.
    from fcgi_async.adapters import wsgi

    adapter = WSGIAdapter(hello, threads=1)
    await adapter(FakeRequest())
    wsgi._after_fork_in_child()
    req = FakeRequest()
    await adapter(req)
    assert req.ended
    await adapter.shutdown()


async def test_job_cancelled_while_queued_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/first":
            release.wait(5)
        start_response("200 OK", [])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=1)
    first = asyncio.create_task(adapter(FakeRequest({"REQUEST_URI": "/first"})))
    await until(lambda: ran == ["/first"])
    queued = asyncio.create_task(adapter(FakeRequest({"REQUEST_URI": "/queued"})))
    await asyncio.sleep(0.01)
    queued.cancel()  # a request timeout or a shutdown, while it waits for the one thread
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.set()
    await first
    req = FakeRequest({"REQUEST_URI": "/after"})
    await adapter(req)
    assert ran == ["/first", "/after"]
    assert req.ended
    await adapter.shutdown()


async def test_each_request_runs_in_its_own_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen.append(var.get())
        var.set(environ["PATH_INFO"])
        start_response("200 OK", [])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=1)
    for path in ("/a", "/b"):
        await adapter(FakeRequest({"REQUEST_URI": path}))
    assert seen == ["unset", "unset"]  # nothing leaks from the previous request
    await adapter.shutdown()


# -- Flask ------------------------------------------------------------------------------------


def make_flask_app() -> Any:
    from flask import Flask, jsonify, make_response, request, url_for

    app = Flask("wsgi_adapter_test")

    @app.get("/")
    def index() -> str:
        return "hello from flask"

    @app.get("/json")
    def as_json() -> Any:
        return jsonify(
            path=request.path,
            root=request.root_path,
            url=url_for("index"),
            full=request.url,
            args=request.args.to_dict(),
        )

    @app.get("/set-cookie")
    def set_cookie() -> Any:
        resp = make_response("set")
        resp.set_cookie("sid", "abc123", httponly=True)
        return resp

    @app.get("/whoami")
    def whoami() -> str:
        return request.cookies.get("sid", "anonymous")

    @app.post("/upload")
    def upload() -> Any:
        f = request.files["file"]
        data = f.read()
        return jsonify(
            name=f.filename, size=len(data), head=data[:4].hex(), field=request.form["field"]
        )

    @app.post("/echo-json")
    def echo_json() -> Any:
        return jsonify(got=request.get_json())

    @app.get("/missing-is-404")
    def missing() -> Any:
        return "nope", 404

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("flask view failed")

    return app


def flask_request(path: str, **params: str) -> FakeRequest:
    base: dict[str | bytes, str | bytes] = {
        "REQUEST_URI": path,
        "SCRIPT_NAME": path.partition("?")[0],
    }
    base.update(params)
    return FakeRequest(base)


async def test_flask_routes_and_single_write() -> None:
    adapter = WSGIAdapter(make_flask_app())
    req = flask_request("/")
    await adapter(req)
    status, headers, body = req.parsed()
    assert (status, body) == (200, b"hello from flask")
    assert ("Content-Length", "16") in headers
    assert req.writes == 1  # Content-Length reached: no second hop, one write

    req = flask_request("/nowhere")
    await adapter(req)
    assert req.parsed()[0] == 404

    req = flask_request("/missing-is-404")
    await adapter(req)
    assert req.parsed()[0:3:2] == (404, b"nope")

    req = flask_request("/", REQUEST_METHOD="HEAD")
    await adapter(req)
    status, headers, body = req.parsed()
    assert (status, body) == (200, b"")
    assert ("Content-Length", "16") in headers


async def test_flask_json_under_root_path() -> None:
    adapter = WSGIAdapter(make_flask_app(), root_path="/app")
    req = flask_request("/app/json?a=1&b=%C3%A9", HTTP_HOST="example.com", HTTPS="on")
    await adapter(req)
    status, headers, body = req.parsed()
    assert status == 200
    assert ("Content-Type", "application/json") in headers
    assert json.loads(body) == {
        "path": "/json",
        "root": "/app",
        "url": "/app/",
        "full": "https://example.com/app/json?a=1&b=é",
        "args": {"a": "1", "b": "é"},
    }


async def test_flask_cookies() -> None:
    adapter = WSGIAdapter(make_flask_app())
    req = flask_request("/set-cookie")
    await adapter(req)
    cookies = [v for k, v in req.parsed()[1] if k == "Set-Cookie"]
    assert len(cookies) == 1
    assert cookies[0].startswith("sid=abc123;")
    assert "HttpOnly" in cookies[0]
    req = flask_request("/whoami", HTTP_COOKIE="sid=abc123; other=1")
    await adapter(req)
    assert req.parsed()[2] == b"abc123"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "----fcgi-async-test-boundary"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, (filename, data) in files.items():
        out.write(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", out.getvalue()


@pytest.mark.parametrize("with_length", [True, False])
async def test_flask_upload_streams_through_input(with_length: bool) -> None:
    payload = os.urandom(300_000)
    content_type, body = multipart({"field": "value"}, {"file": ("data.bin", payload)})
    chunks = [body[i : i + 32768] for i in range(0, len(body), 32768)]  # nginx's STDIN records
    req = FakeRequest(
        {
            "REQUEST_METHOD": "POST",
            "REQUEST_URI": "/upload",
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)) if with_length else "",
        },
        chunks,
    )
    await serve(make_flask_app(), req)
    status, _, out = req.parsed()
    assert status == 200
    assert json.loads(out) == {
        "name": "data.bin",
        "size": len(payload),
        "head": payload[:4].hex(),
        "field": "value",
    }


async def test_flask_json_body_and_validated_get() -> None:
    data = json.dumps({"k": [1, 2, 3]}).encode()
    req = FakeRequest(
        {
            "REQUEST_METHOD": "POST",
            "REQUEST_URI": "/echo-json",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
        },
        [data[:5], data[5:]],
    )
    await serve(make_flask_app(), req)
    assert json.loads(req.parsed()[2]) == {"got": {"k": [1, 2, 3]}}
    # wsgiref.validate forbids read() without a size, which Werkzeug uses for bodies, so the
    # validated run is a GET.
    req = await serve(validator(make_flask_app()), flask_request("/json?x=1"))
    assert json.loads(req.parsed()[2])["args"] == {"x": "1"}


async def test_flask_view_error_is_flasks_500() -> None:
    app = make_flask_app()
    app.logger.disabled = True
    req = await serve(app, flask_request("/boom"))
    assert req.parsed()[0] == 500
    assert req.ended
    assert not req.failed


# -- edges ------------------------------------------------------------------------------------


async def test_input_exact_chunk_read_and_odd_content_lengths() -> None:
    results: list[Any] = []
    await serve(reader(lambda f: [f.read(4), f.read(4)], results), body_request("8", [b"abcd"]))
    assert results == [[b"abcd", b""]]
    for bad in ("abc", "-5"):
        results.clear()
        req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": bad}, [b"ab", b"cd"])
        await serve(reader(lambda f: f.read(), results), req)
        assert results == [b"abcd"], bad


async def test_errors_stop_sending_once_the_client_is_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    req = FakeRequest()
    loop = asyncio.get_running_loop()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        on_loop(loop, req.disconnect)
        environ["wsgi.errors"].write("one\n")
        environ["wsgi.errors"].write("two\n")
        environ["wsgi.errors"].write("three")
        start_response("200 OK", [])
        return []

    await serve(app, req)
    assert req.stderr == []
    # Lines that could not be sent are logged here, with their request (the partial last
    # line too).
    assert [r.getMessage() for r in caplog.records if r.name == "fcgi_async.test.app"] == [
        "one",
        "two",
        "three",
    ]


def test_file_wrapper_honours_large_block_sizes() -> None:
    data = b"q" * (FILE_BLOCK_SIZE * 2 + 1)
    wrapper = FileWrapper(io.BytesIO(data), FILE_BLOCK_SIZE * 2)
    assert [len(b) for b in wrapper] == [FILE_BLOCK_SIZE * 2, 1]


async def test_big_list_shorter_than_content_length_and_without_start_response() -> None:
    half = b"z" * (MAX_JOINED_BODY // 2 + 1)
    req = await serve(returning([half, half], [("Content-Length", str(len(half) * 3))]))
    assert req.parsed()[2] == half + half
    req = await serve(lambda environ, start_response: [half, half])
    assert req.output == INTERNAL_ERROR_RESPONSE


async def test_iterable_raising_client_disconnected_on_a_live_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=ADAPTER_LOG)

    def gen() -> Iterator[bytes]:
        raise ClientDisconnected("the app's own upstream went away")
        yield b""  # pragma: no cover

    req = await serve(returning(gen()))
    assert not req.ended
    assert not req.failed
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == ADAPTER_LOG)


class GoneAtEnd(FakeRequest):
    """The connection dies exactly when the final write is attempted."""

    async def end(self, stdout: bytes = b"", app_status: int = 0) -> None:
        raise ClientDisconnected("gone at end")


async def test_client_gone_while_sending_the_500(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("app failed")

    req = await serve(app, GoneAtEnd())
    assert req.output == b""
    assert "app failed" in caplog.text


class GoneAtLastStderr(FakeRequest):
    """The connection dies when the partial last wsgi.errors line is sent."""

    async def send_stderr(self, data: bytes) -> None:
        raise ClientDisconnected("gone at stderr")


async def test_partial_errors_line_logged_when_its_send_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["wsgi.errors"].write("no newline")
        start_response("200 OK", [])
        return [b"body"]

    req = await serve(app, GoneAtLastStderr())
    assert not req.ended
    assert not req.failed
    assert [r.getMessage() for r in caplog.records if r.name == "fcgi_async.test.app"] == [
        "no newline"
    ]
    assert "client went away" in caplog.text


async def test_input_big_reads_cross_many_chunks() -> None:
    from fcgi_async.adapters.wsgi import MAX_INPUT_PULL

    body = os.urandom(3 * MAX_INPUT_PULL + 5)
    chunks = [body[i : i + 32768] for i in range(0, len(body), 32768)]
    results: list[Any] = []
    app = reader(lambda f: [f.read(MAX_INPUT_PULL * 2 + 1), f.read(7), f.read()], results)
    await serve(app, body_request(str(len(body)), chunks))
    first, second, rest = results[0]
    assert first == body[: MAX_INPUT_PULL * 2 + 1]
    assert second == body[MAX_INPUT_PULL * 2 + 1 : MAX_INPUT_PULL * 2 + 8]
    assert rest == body[MAX_INPUT_PULL * 2 + 8 :]


async def test_input_read_waits_for_the_size_asked() -> None:
    results: list[bytes] = []
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        results.append(environ["wsgi.input"].read(10))
        done.set()
        results.append(environ["wsgi.input"].readline())
        start_response("200 OK", [])
        return []

    req = FakeRequest({"REQUEST_METHOD": "POST", "CONTENT_LENGTH": ""}, None)
    task = asyncio.create_task(WSGIAdapter(app)(req))
    req.feed(b"abc")
    await asyncio.sleep(0.05)
    assert not done.is_set()
    req.feed(b"defghijkl")
    await until(done.is_set)
    await asyncio.sleep(0.05)
    assert results == [b"abcdefghij"]  # readline() waits for its newline
    req.feed(b"m\nnext")
    req.feed(b"")
    await task
    assert results == [b"abcdefghij", b"klm\n"]


async def test_partial_errors_line_is_logged_even_when_the_client_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    req = FakeRequest()
    loop = asyncio.get_running_loop()

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        environ["wsgi.errors"].write("last words")
        start_response("200 OK", [])
        on_loop(loop, req.disconnect)
        yield b"x"

    await serve(app, req)
    assert req.stderr == []
    assert "last words" in [r.getMessage() for r in caplog.records]
