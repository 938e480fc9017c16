"""The ASGI adapter against the in-memory FakeRequest: scope, receive, send, failures, lifespan,
and a real Starlette application end to end."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from fcgi_async.adapters.asgi import (
    COPY_HEAD_BELOW,
    PATHSEND_BLOCK_SIZE,
    ASGIAdapter,
    LifespanFailure,
    Message,
    Receive,
    Scope,
    Send,
)

from fcgi_async import _compat
from fcgi_async.protocol import Role
from fcgi_async.types import Application, ClientDisconnected

from .fakes import FakeRequest

LOGGER = "fcgi_async.adapters.asgi"

START_200: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}


async def settle() -> None:
    """Let every runnable task make progress."""
    for _ in range(20):
        await asyncio.sleep(0)


async def capture_scope(
    params: Mapping[Any, str | bytes] | None = None,
    *,
    role: Role = Role.RESPONDER,
    root_path: str | None = None,
) -> Scope:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send(START_200)
        await send({"type": "http.response.body", "body": b"ok"})

    req = FakeRequest(params, role=role)
    await ASGIAdapter(app, lifespan="off", root_path=root_path)(req)
    assert req.ended
    return seen[0]


def header_dict(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


# --- scope ------------------------------------------------------------------------------------


def test_adapter_is_an_application() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    adapter = ASGIAdapter(app)
    assert adapter.app is app
    assert isinstance(adapter, Application)


def test_rejects_unknown_lifespan_mode() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    with pytest.raises(ValueError, match="lifespan"):
        ASGIAdapter(app, lifespan="maybe")  # type: ignore[arg-type]


async def test_scope_basics() -> None:
    scope = await capture_scope(
        {
            "REQUEST_METHOD": "POST",
            "REQUEST_URI": "/items/7?x=1&y=2",
            "SCRIPT_NAME": "/items/7",
            "QUERY_STRING": "x=1&y=2",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "10.1.2.3",
            "REMOTE_PORT": "40000",
            "SERVER_ADDR": "10.0.0.1",
            "SERVER_NAME": "example.com",
            "SERVER_PORT": "8080",
        }
    )
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/items/7"
    assert scope["raw_path"] == b"/items/7"
    assert scope["root_path"] == ""
    assert scope["query_string"] == b"x=1&y=2"
    assert scope["client"] == ("10.1.2.3", 40000)
    assert scope["server"] == ("10.0.0.1", 8080)
    assert scope["state"] == {}
    ext = scope["extensions"]
    assert ext["http.response.pathsend"] == {}
    assert "fcgi.data" not in ext
    assert ext["fcgi.params"][b"REQUEST_URI"] == b"/items/7?x=1&y=2"
    # FastCGI cannot carry these, so they must not be advertised.
    assert "http.response.trailers" not in ext
    assert "http.response.early_hint" not in ext


async def test_fcgi_params_is_the_request_mapping() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send(START_200)
        await send({"type": "http.response.body"})

    req = FakeRequest({"DOCUMENT_ROOT": "/srv"})
    await ASGIAdapter(app, lifespan="off")(req)
    assert seen[0]["extensions"]["fcgi.params"] is req.params


async def test_query_string_from_request_uri_when_param_missing() -> None:
    scope = await capture_scope({"REQUEST_URI": "/a?b=c", "QUERY_STRING": ""})
    assert scope["query_string"] == b"b=c"
    assert scope["path"] == "/a"


@pytest.mark.parametrize(
    ("protocol", "version"),
    [("HTTP/1.1", "1.1"), ("HTTP/1.0", "1.0"), ("HTTP/2.0", "2"), ("HTTP/2", "2"), ("", "1.1")],
)
async def test_http_version(protocol: str, version: str) -> None:
    scope = await capture_scope({"SERVER_PROTOCOL": protocol})
    assert scope["http_version"] == version


@pytest.mark.parametrize(
    ("params", "scheme"),
    [
        ({"HTTPS": "on"}, "https"),
        ({"HTTPS": "off"}, "http"),
        ({"REQUEST_SCHEME": "https"}, "https"),
        ({"REQUEST_SCHEME": "http"}, "http"),
        ({}, "http"),
    ],
)
async def test_scheme(params: dict[str, str], scheme: str) -> None:
    assert (await capture_scope(params))["scheme"] == scheme


# Each web server's way of splitting /app/users/42 when the app is mounted at /app.
PATH_STYLES = [
    pytest.param(
        {"REQUEST_URI": "/app/users/42", "SCRIPT_NAME": "/app/users/42"},
        None,
        ("", "/app/users/42"),
        id="nginx-stock-no-root",
    ),
    pytest.param(
        {"REQUEST_URI": "/app/users/42", "SCRIPT_NAME": "/app/users/42"},
        "/app",
        ("/app", "/app/users/42"),
        id="nginx-stock-root-path",
    ),
    pytest.param(
        {"REQUEST_URI": "/app/users/42", "SCRIPT_NAME": "/app", "PATH_INFO": "/users/42"},
        None,
        ("/app", "/app/users/42"),
        id="nginx-split-path-info",
    ),
    pytest.param(
        {"REQUEST_URI": "/app/users/42", "SCRIPT_NAME": "/app/", "PATH_INFO": "/users/42"},
        None,
        ("/app", "/app/users/42"),
        id="script-name-trailing-slash",
    ),
    pytest.param(
        # Apache mod_proxy_fcgi: no PATH_INFO; SCRIPT_NAME is the whole path.
        {
            "REQUEST_URI": "/app/users/42",
            "SCRIPT_NAME": "/app/users/42",
            "SCRIPT_FILENAME": "proxy:fcgi://127.0.0.1:9000/app/users/42",
        },
        "/app/",
        ("/app", "/app/users/42"),
        id="apache-root-path",
    ),
    pytest.param(
        {"REQUEST_URI": "/app", "SCRIPT_NAME": "/app"},
        "/app",
        ("/app", "/app"),
        id="mount-point-itself",
    ),
    pytest.param(
        {"REQUEST_URI": "/application/x", "SCRIPT_NAME": "/application/x"},
        "/app",
        ("", "/application/x"),
        id="root-path-is-not-a-string-prefix",
    ),
]


@pytest.mark.parametrize(("params", "root_path", "expected"), PATH_STYLES)
async def test_path_styles(
    params: dict[str, str], root_path: str | None, expected: tuple[str, str]
) -> None:
    scope = await capture_scope(params, root_path=root_path)
    assert (scope["root_path"], scope["path"]) == expected
    assert scope["path"].startswith(scope["root_path"])
    assert scope["raw_path"] == params["REQUEST_URI"].encode()


async def test_percent_encoded_and_non_ascii_path() -> None:
    uri = "/caf%C3%A9/a%20b/%E2%82%AC/x%2Fy"
    scope = await capture_scope({"REQUEST_URI": uri + "?q=%C3%A9", "SCRIPT_NAME": "/x"})
    assert scope["path"] == "/café/a b/€/x/y"
    assert scope["raw_path"] == uri.encode()
    assert scope["query_string"] == b"q=%C3%A9"


async def test_non_ascii_root_path() -> None:
    scope = await capture_scope(
        {"REQUEST_URI": "/%C3%BCber/seite", "SCRIPT_NAME": "/über/seite".encode()},
        root_path="/über",
    )
    assert scope["root_path"] == "/über"
    assert scope["path"] == "/über/seite"


async def test_invalid_utf8_path_falls_back_to_latin1() -> None:
    scope = await capture_scope({"REQUEST_URI": "/%C3%A9/%FF", "SCRIPT_NAME": "/x"})
    assert scope["path"] == "/\xc3\xa9/\xff"
    assert scope["raw_path"] == b"/%C3%A9/%FF"
    # Every character still encodes back to the original bytes.
    assert scope["path"].encode("latin-1") == b"/\xc3\xa9/\xff"


async def test_raw_path_without_request_uri_is_the_encoded_path() -> None:
    params: dict[str | bytes, str | bytes] = {
        "REQUEST_URI": "",
        "SCRIPT_NAME": "/app",
        "PATH_INFO": "/a b/é%".encode(),
    }
    scope = await capture_scope(params)
    assert scope["root_path"] == "/app"
    assert scope["path"] == "/app/a b/é%"
    assert scope["raw_path"] == b"/app/a%20b/%C3%A9%25"


async def test_headers() -> None:
    scope = await capture_scope(
        {
            "HTTP_HOST": "example.com",
            "HTTP_USER_AGENT": "curl/8",
            "HTTP_X_FORWARDED_FOR": "1.2.3.4",
            "HTTP_X_ODD": b"\xe9t\xe9",
            "HTTP_ACCEPT": "",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": "2",
            "HTTP_CONTENT_TYPE": "application/json",
            "HTTP_CONTENT_LENGTH": "2",
            "DOCUMENT_ROOT": "/srv",
        }
    )
    headers = scope["headers"]
    assert all(type(n) is bytes and type(v) is bytes for n, v in headers)
    assert header_dict(scope) == {
        b"host": b"example.com",
        b"user-agent": b"curl/8",
        b"x-forwarded-for": b"1.2.3.4",
        b"x-odd": b"\xe9t\xe9",
        b"accept": b"",
        b"content-type": b"application/json",
        b"content-length": b"2",
    }
    # The CGI copies win; the HTTP_ ones would be duplicates.
    assert len(headers) == 7


async def test_empty_content_headers_are_omitted() -> None:
    scope = await capture_scope({"CONTENT_TYPE": "", "CONTENT_LENGTH": "", "HTTP_HOST": "h"})
    assert header_dict(scope) == {b"host": b"h"}


async def test_httpoxy_header_is_stripped() -> None:
    scope = await capture_scope({"HTTP_PROXY": "http://evil:8080", "HTTP_HOST": "h"})
    assert header_dict(scope) == {b"host": b"h"}
    raw = scope["extensions"]["fcgi.params"]
    assert b"HTTP_PROXY" not in raw
    assert raw[b"HTTP_HOST"] == b"h"


async def test_many_distinct_header_names_are_all_translated() -> None:
    # More names than the translation cache holds: the ones beyond it are still translated.
    params = {f"HTTP_X_H{i}": str(i) for i in range(1500)}
    scope = await capture_scope(params)
    headers = header_dict(scope)
    assert headers[b"x-h0"] == b"0"
    assert headers[b"x-h1499"] == b"1499"


async def test_params_never_reach_os_environ() -> None:
    before = dict(os.environ)
    await capture_scope({"HTTP_X_SECRET": "s3cret", "DOCUMENT_ROOT": "/srv/secret"})
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("params", "client", "server"),
    [
        (
            {"REMOTE_ADDR": "::1", "REMOTE_PORT": "1234", "SERVER_ADDR": "::1"},
            ("::1", 1234),
            ("::1", 80),
        ),
        (
            {"REMOTE_ADDR": "", "SERVER_ADDR": "", "SERVER_NAME": "", "SERVER_PORT": ""},
            None,
            None,
        ),
        (
            # nginx on a unix socket: REMOTE_ADDR "unix:", no port.
            {"REMOTE_ADDR": "unix:", "REMOTE_PORT": "", "SERVER_ADDR": "", "SERVER_PORT": ""},
            ("unix:", 0),
            ("localhost", None),
        ),
        (
            {"REMOTE_PORT": "not-a-port", "SERVER_ADDR": "", "SERVER_NAME": "example.org"},
            ("127.0.0.1", 0),
            ("example.org", 80),
        ),
    ],
)
async def test_client_and_server(
    params: dict[str, str], client: tuple[str, int] | None, server: tuple[str, int] | None
) -> None:
    scope = await capture_scope(params)
    assert scope["client"] == client
    assert scope["server"] == server


async def test_filter_role_data_extension() -> None:
    got: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        data_receive = scope["extensions"]["fcgi.data"]["receive"]
        while chunk := await data_receive():
            got.append(chunk)
        await send(START_200)
        await send({"type": "http.response.body", "body": b"".join(got).upper()})

    req = FakeRequest({"FCGI_DATA_LENGTH": "10"}, role=Role.FILTER, data=[b"hello", b"world"])
    await ASGIAdapter(app, lifespan="off")(req)
    assert got == [b"hello", b"world"]
    assert req.parsed()[2] == b"HELLOWORLD"


async def test_each_request_gets_fresh_mutable_parts() -> None:
    seen: list[tuple[set[str], dict[str, Any], dict[str, Any]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((set(scope["extensions"]), dict(scope["asgi"]), dict(scope["state"])))
        scope["extensions"]["mine"] = {}
        scope["asgi"]["x"] = 1
        scope["state"]["x"] = 1
        await send(START_200)
        await send({"type": "http.response.body"})

    adapter = ASGIAdapter(app, lifespan="off")
    await adapter(FakeRequest())
    await adapter(FakeRequest())
    assert seen[0] == seen[1]
    assert seen[1] == (
        {"http.response.pathsend", "fcgi.params"},
        {"version": "3.0", "spec_version": "2.4"},
        {},
    )
    assert adapter.state == {}


# --- receive ----------------------------------------------------------------------------------


async def drain_messages(receive: Receive) -> list[Message]:
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(dict(message))
        if message["type"] != "http.request" or not message["more_body"]:
            return messages


async def test_streams_body_without_length() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.extend(await drain_messages(receive))
        await send(START_200)
        await send({"type": "http.response.body", "body": b"ok"})

    req = FakeRequest({"REQUEST_METHOD": "POST"}, body=None)
    task = asyncio.create_task(ASGIAdapter(app, lifespan="off")(req))
    req.feed(b"abc")
    await settle()
    assert messages == []  # the app is still waiting for the end of the body
    req.feed(b"def")
    req.feed(b"")
    await task
    assert messages == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]


async def test_content_length_ends_the_body() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.extend(await drain_messages(receive))
        await send(START_200)
        await send({"type": "http.response.body"})

    req = FakeRequest({"CONTENT_LENGTH": "6"}, body=None)
    req.feed(b"abc")
    req.feed(b"def")
    # No end-of-body marker: CONTENT_LENGTH alone tells the app the body is complete.
    await ASGIAdapter(app, lifespan="off")(req)
    assert messages == [
        {"type": "http.request", "body": b"abc", "more_body": True},
        {"type": "http.request", "body": b"def", "more_body": False},
    ]


async def test_body_beyond_content_length_is_cut() -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.extend(await drain_messages(receive))
        await send(START_200)
        await send({"type": "http.response.body"})

    await ASGIAdapter(app, lifespan="off")(FakeRequest({"CONTENT_LENGTH": "4"}, [b"abcdef"]))
    assert messages == [{"type": "http.request", "body": b"abcd", "more_body": False}]


@pytest.mark.parametrize("length", ["0", "", "junk", "-5", "+5", "1_0", " 5"])
async def test_empty_body(length: str) -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.extend(await drain_messages(receive))
        await send(START_200)
        await send({"type": "http.response.body"})

    await ASGIAdapter(app, lifespan="off")(FakeRequest({"CONTENT_LENGTH": length}))
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


async def test_disconnect_after_response_complete() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await drain_messages(receive)

        async def listen() -> None:
            events.append((await receive())["type"])

        listener = asyncio.create_task(listen())
        await settle()
        events.append("sending")
        await send(START_200)
        await send({"type": "http.response.body", "body": b"x"})
        await listener
        # Further calls answer at once.
        events.append((await receive())["type"])

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert events == ["sending", "http.disconnect", "http.disconnect"]
    assert not req.disconnected


async def test_concurrent_listeners_all_get_disconnect() -> None:
    seen: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await drain_messages(receive)
        listeners = [asyncio.ensure_future(receive()) for _ in range(3)]
        await settle()
        seen.append([t.done() for t in listeners])
        await send(START_200)
        await send({"type": "http.response.body"})
        seen.append([(await t)["type"] for t in listeners])

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.ended
    # Checked here, not in the app: the adapter turns an app's AssertionError into a 500 or
    # a log line, and the test would pass anyway.
    assert seen == [[False] * 3, ["http.disconnect"] * 3]


async def test_disconnect_after_body_when_client_leaves() -> None:
    events: list[str] = []
    req = FakeRequest()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await drain_messages(receive)
        waiter = asyncio.ensure_future(receive())
        await settle()
        assert not waiter.done()
        req.disconnect()
        events.append((await waiter)["type"])

    await ASGIAdapter(app, lifespan="off")(req)
    assert events == ["http.disconnect"]
    assert not req.ended


async def test_listener_left_waiting_is_woken_when_the_app_returns() -> None:
    waiters: list[asyncio.Future[Message]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await drain_messages(receive)
        waiters.append(asyncio.ensure_future(receive()))
        await settle()
        raise RuntimeError("boom")

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off", logger=logging.getLogger("quiet.test"))(req)
    assert (await waiters[0])["type"] == "http.disconnect"


async def test_abort_during_body() -> None:
    messages: list[Message] = []
    req = FakeRequest({"CONTENT_LENGTH": "100"}, body=None)
    req.feed(b"first")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(dict(await receive()))
        req.disconnect()
        messages.append(dict(await receive()))
        messages.append(dict(await receive()))

    await ASGIAdapter(app, lifespan="off")(req)
    req.feed(b"x")  # too late to matter
    assert messages == [
        {"type": "http.request", "body": b"first", "more_body": True},
        {"type": "http.disconnect"},
        {"type": "http.disconnect"},
    ]
    assert not req.ended


async def test_abort_before_body() -> None:
    req = FakeRequest(body=None)
    req.disconnect()
    got: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        got.append(await receive())

    await ASGIAdapter(app, lifespan="off")(req)
    assert got == [{"type": "http.disconnect"}]


# --- send -------------------------------------------------------------------------------------


async def test_simple_response_is_one_write() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 201,
                "headers": [(b"content-type", b"text/plain"), (b"x-a", b"1"), (b"x-a", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"created"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.writes == 1
    assert req.ended
    assert req.app_status == 0
    assert req.output == (
        b"Status: 201 Created\r\ncontent-type: text/plain\r\nx-a: 1\r\nx-a: 2\r\n\r\ncreated"
    )


@pytest.mark.parametrize("more", [False, True])
async def test_a_large_first_body_follows_the_head_uncopied(more: bool) -> None:
    body = b"x" * COPY_HEAD_BELOW

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body, "more_body": more})
        if more:
            await send({"type": "http.response.body", "body": b"!"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.stdout[0] == b"Status: 200 OK\r\n\r\n"
    assert req.stdout[1] is body  # handed on as it is, not copied
    assert req.output == b"Status: 200 OK\r\n\r\n" + body + (b"!" if more else b"")
    assert req.ended


async def test_headers_only_response_is_one_write() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.writes == 1
    assert req.output == b"Status: 204 No Content\r\n\r\n"


async def test_unknown_status_gets_a_reason_phrase() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.output.startswith(b"Status: 599 Unknown\r\n\r\n")


async def test_headers_wait_for_the_first_body_message() -> None:
    req = FakeRequest()
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        seen.append(req.output)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        seen.append(req.output)
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"b", "more_body": True})
        await send({"type": "http.response.body", "body": b"c", "more_body": False})

    await ASGIAdapter(app, lifespan="off")(req)
    head = b"Status: 200 OK\r\ncontent-type: text/plain\r\n\r\n"
    assert seen == [b"", head + b"a"]
    assert req.stdout == [head + b"a", b"b", b"c"]
    assert req.writes == 3  # the empty chunk cost nothing
    assert req.ended


class FillsUpAfterEachWrite(FakeRequest):
    """A transport whose write buffer is full after every write until the test drains it."""

    async def send_stdout(self, data: bytes) -> None:
        await super().send_stdout(data)
        self.writable.clear()


async def test_streaming_waits_for_flow_control() -> None:
    progress: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        for i in range(3):
            await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
            progress.append(i)
        await send({"type": "http.response.body", "body": b"!"})

    req = FillsUpAfterEachWrite()
    req.writable.clear()
    task = asyncio.create_task(ASGIAdapter(app, lifespan="off")(req))
    await settle()
    assert progress == []
    assert req.output == b""
    for i in range(3):
        req.writable.set()
        await settle()
        assert progress == list(range(i + 1))  # one chunk per drain, then stuck again
        assert not req.ended
    req.writable.set()
    await task
    assert req.stdout[1:] == [b"1", b"2", b"!"]
    assert req.parsed()[2] == b"012!"
    assert req.ended


async def test_send_after_disconnect_raises_oserror_and_logs_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caught: list[BaseException] = []
    req = FakeRequest()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        req.disconnect()
        try:
            await send({"type": "http.response.body", "body": b"b", "more_body": True})
        except OSError as exc:
            caught.append(exc)
            raise

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert len(caught) == 1
    assert isinstance(caught[0], ClientDisconnected)
    assert not req.failed
    assert not req.ended
    records = [r for r in caplog.records if r.name == LOGGER]
    assert records
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in records)


async def test_disconnect_before_anything_sent_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    req = FakeRequest()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        req.disconnect()
        await send(START_200)

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.output == b""
    assert not req.ended
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == LOGGER)


async def test_app_returning_quietly_after_disconnect_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    req = FakeRequest()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        req.disconnect()

    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert not req.failed
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == LOGGER)


class DiesOnEnd(FakeRequest):
    """The connection breaks while the final write is attempted."""

    async def end(self, stdout: bytes = b"", app_status: int = 0) -> None:
        self.disconnect()
        raise ClientDisconnected("gone during the write")


async def test_500_to_a_client_that_left_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    req = DiesOnEnd()
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert "client disconnected before the 500" in caplog.text


# --- pathsend ---------------------------------------------------------------------------------


async def test_pathsend_small_file_is_one_write(tmp_path: Path) -> None:
    f = tmp_path / "small.txt"
    f.write_bytes(b"hello file")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.pathsend", "path": str(f)})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.writes == 1
    assert req.parsed() == (200, [("content-type", "text/plain")], b"hello file")
    assert req.ended


@pytest.mark.parametrize("size", [0, PATHSEND_BLOCK_SIZE, 2 * PATHSEND_BLOCK_SIZE + 12345])
async def test_pathsend_streams_large_files(tmp_path: Path, size: int) -> None:
    content = os.urandom(size)
    f = tmp_path / "big.bin"
    f.write_bytes(content)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": str(f)})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert req.parsed()[2] == content
    assert req.ended
    assert all(len(chunk) <= PATHSEND_BLOCK_SIZE + 100 for chunk in req.stdout)
    assert req.writes == max(1, -(-size // PATHSEND_BLOCK_SIZE))


async def test_pathsend_missing_file_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.pathsend", "path": "/nonexistent/file"})

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.parsed()[0] == 500
    assert "FileNotFoundError" in caplog.text


async def test_pathsend_before_start_is_an_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off", logger=logging.getLogger("quiet.test"))(req)
    assert req.parsed()[0] == 500


# --- invalid responses and failures -----------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\nset-cookie: s=1")],
        [(b"x-evil", b"a\nb")],
        [(b"x-evil", b"a\rb")],
        [(b"x-evil", b"a\0b")],
        [(b"x-ok", b"fine"), (b"x-evil\r\nx", b"b")],
        [(b"x\0", b"b")],
        [(b"x-bytes-like", memoryview(b"a\r\nb"))],
    ],
)
async def test_crlf_nul_in_headers_is_rejected(
    headers: list[tuple[bytes, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caught: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        except ValueError as exc:
            caught.append(exc)
            raise
        await send({"type": "http.response.body", "body": b"never"})

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert caught
    status, _, body = req.parsed()
    assert status == 500
    assert body == b"Internal Server Error"
    assert b"set-cookie" not in req.output
    assert b"x-evil" not in req.output
    assert "CR, LF or NUL" in caplog.text


@pytest.mark.parametrize("status", ["200", 200.0, True, 99, 100, 103, 1000, None])
async def test_invalid_status_is_rejected(status: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off", logger=logging.getLogger("quiet.test"))(req)
    assert req.parsed()[0] == 500


async def test_str_headers_are_rejected() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})
        await send({"type": "http.response.body", "body": b"x"})

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off", logger=logging.getLogger("quiet.test"))(req)
    assert req.parsed()[0] == 500


async def test_exception_before_start_is_a_500_with_logged_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("secret-detail")

    req = FakeRequest({"REQUEST_URI": "/boom"})
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    status, headers, body = req.parsed()
    assert status == 500
    assert body == b"Internal Server Error"
    assert ("Content-Length", "21") in headers
    assert b"secret-detail" not in req.output
    assert req.writes == 1
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "GET /boom" in record.getMessage()
    assert "secret-detail" in caplog.text


async def test_exception_after_buffered_start_is_still_a_500() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        raise RuntimeError("boom")

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off", logger=logging.getLogger("quiet.test"))(req)
    assert req.parsed()[0] == 500
    assert not req.failed


async def test_exception_after_response_started_fails_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom mid-stream")

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.failed
    assert not req.ended
    assert "boom mid-stream" in caplog.text


async def test_exception_after_response_complete_is_logged_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.body", "body": b"done"})
        raise RuntimeError("late boom")

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.ended
    assert not req.failed
    assert req.parsed() == (200, [("content-type", "text/plain")], b"done")
    assert "late boom" in caplog.text


async def test_return_without_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        return

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.parsed()[0] == 500
    assert "without sending a response" in caplog.text


async def test_return_after_start_only_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.parsed()[0] == 500
    assert "without a response body" in caplog.text


async def test_return_mid_stream_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    req = FakeRequest()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await ASGIAdapter(app, lifespan="off")(req)
    assert req.failed
    assert not req.ended
    assert "without completing" in caplog.text


@pytest.mark.parametrize(
    "messages",
    [
        [{"type": "http.response.body", "body": b"x"}],
        [START_200, START_200],
        [{"type": "http.response.push", "path": "/x"}],
        [{"type": "websocket.accept"}],
    ],
)
async def test_out_of_order_and_unknown_messages(messages: list[Message]) -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as exc:
            errors.append(exc)
            raise

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off", logger=logging.getLogger("quiet.test"))(req)
    assert len(errors) == 1
    assert req.parsed()[0] == 500


async def test_message_after_completion_is_an_error() -> None:
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START_200)
        await send({"type": "http.response.body", "body": b"ok"})
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except RuntimeError as exc:
            errors.append(exc)

    req = FakeRequest()
    await ASGIAdapter(app, lifespan="off")(req)
    assert "after the response completed" in str(errors[0])
    assert req.parsed()[2] == b"ok"


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        await asyncio.sleep(3600)

    req = FakeRequest()
    task = asyncio.create_task(ASGIAdapter(app, lifespan="off")(req))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert req.output == b""


# --- lifespan ---------------------------------------------------------------------------------


class LifespanApp:
    """A hand-written lifespan implementation with knobs for each outcome."""

    def __init__(
        self,
        *,
        startup: str = "complete",
        shutdown: str = "complete",
        message: str = "",
    ) -> None:
        self.startup = startup
        self.shutdown = shutdown
        self.message = message
        self.events: list[str] = []
        self.http_state: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.http_state.append(scope["state"])
            await send(START_200)
            await send({"type": "http.response.body", "body": b"ok"})
            return
        assert scope["type"] == "lifespan"
        assert scope["asgi"]["version"] == "3.0"
        message = await receive()
        assert message["type"] == "lifespan.startup"
        self.events.append("startup")
        scope["state"]["db"] = "connected"
        scope["state"]["shared"] = []
        if self.startup == "raise":
            raise RuntimeError("startup exploded")
        if self.startup == "failed":
            await send({"type": "lifespan.startup.failed", "message": self.message})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        self.events.append("shutdown")
        if self.shutdown == "raise":
            raise RuntimeError("shutdown exploded")
        if self.shutdown == "failed":
            await send({"type": "lifespan.shutdown.failed", "message": self.message})
            return
        await send({"type": "lifespan.shutdown.complete"})


async def test_lifespan_startup_and_shutdown_with_state() -> None:
    app = LifespanApp()
    adapter = ASGIAdapter(app)
    await adapter.startup()
    assert app.events == ["startup"]
    assert adapter.state["db"] == "connected"
    req = FakeRequest()
    await adapter(req)
    assert req.parsed()[2] == b"ok"
    [state] = app.http_state
    assert state == {"db": "connected", "shared": []}
    state["db"] = "changed by a request"
    state["shared"].append(1)
    assert adapter.state["db"] == "connected"  # a copy ...
    assert adapter.state["shared"] == [1]  # ... a shallow one (ASGI spec)
    await adapter.shutdown()
    assert app.events == ["startup", "shutdown"]
    await adapter.shutdown()  # idempotent


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_lifespan_startup_failed(mode: Any) -> None:
    adapter = ASGIAdapter(LifespanApp(startup="failed", message="database is down"), lifespan=mode)
    with pytest.raises(LifespanFailure, match="database is down"):
        await adapter.startup()


async def test_lifespan_startup_failed_without_message() -> None:
    adapter = ASGIAdapter(LifespanApp(startup="failed"))
    with pytest.raises(LifespanFailure, match="startup failed"):
        await adapter.startup()


async def test_lifespan_startup_raising_after_receive_is_a_failure_in_auto_mode() -> None:
    adapter = ASGIAdapter(LifespanApp(startup="raise"))
    with pytest.raises(LifespanFailure, match="startup exploded") as info:
        await adapter.startup()
    assert isinstance(info.value.__cause__, RuntimeError)


async def django_like(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")
    await send(START_200)
    await send({"type": "http.response.body", "body": b"django"})


async def ignores_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    await send(START_200)
    await send({"type": "http.response.body", "body": b"plain"})


@pytest.mark.parametrize("app", [django_like, ignores_lifespan])
async def test_lifespan_auto_serves_apps_without_lifespan(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = ASGIAdapter(app)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        await adapter.startup()
    assert "unsupported" in caplog.text
    assert all(r.levelno <= logging.INFO for r in caplog.records if r.name == LOGGER)
    req = FakeRequest()
    await adapter(req)
    assert req.parsed()[0] == 200
    await adapter.shutdown()


@pytest.mark.parametrize("app", [django_like, ignores_lifespan])
async def test_lifespan_on_requires_support(app: Any) -> None:
    adapter = ASGIAdapter(app, lifespan="on")
    with pytest.raises(LifespanFailure, match="does not support lifespan"):
        await adapter.startup()


async def test_lifespan_off_never_runs_the_lifespan_scope() -> None:
    app = LifespanApp()
    adapter = ASGIAdapter(app, lifespan="off")
    await adapter.startup()
    await adapter(FakeRequest())
    await adapter.shutdown()
    assert app.events == []
    assert app.http_state == [{}]


async def test_lifespan_shutdown_failed_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    adapter = ASGIAdapter(LifespanApp(shutdown="failed", message="flush failed"))
    await adapter.startup()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await adapter.shutdown()
    assert "flush failed" in caplog.text


async def test_lifespan_shutdown_raising_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    adapter = ASGIAdapter(LifespanApp(shutdown="raise"))
    await adapter.startup()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await adapter.shutdown()
    assert "shutdown exploded" in caplog.text


async def test_lifespan_task_dying_early_is_reported_at_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    crash = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await crash.wait()
        raise RuntimeError("background crash")

    adapter = ASGIAdapter(app)
    await adapter.startup()
    crash.set()
    await settle()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await adapter.shutdown()
    assert "background crash" in caplog.text


async def test_lifespan_unexpected_message_fails_startup() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.wat"})

    with pytest.raises(LifespanFailure, match="unexpected ASGI message"):
        await ASGIAdapter(app).startup()


async def test_lifespan_startup_cancelled_cancels_the_lifespan_task() -> None:
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    adapter = ASGIAdapter(app)
    with pytest.raises(TimeoutError):
        async with _compat.timeout(0.05):
            await adapter.startup()
    await asyncio.wait_for(cancelled.wait(), 5)
    await adapter.shutdown()  # nothing to shut down


async def test_lifespan_answering_twice_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.startup.complete"})

    adapter = ASGIAdapter(app)
    await adapter.startup()
    await settle()
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        await adapter.shutdown()
    assert "already answered" in caplog.text


async def test_lifespan_app_returning_at_shutdown_is_fine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()

    adapter = ASGIAdapter(app)
    await adapter.startup()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        await adapter.shutdown()
    assert not [r for r in caplog.records if r.name == LOGGER]


async def test_lifespan_task_lingering_after_startup_failed_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "nope"})
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(LifespanFailure, match="nope"):
        await ASGIAdapter(app).startup()
    assert cancelled.is_set()


async def test_lifespan_startup_twice_is_an_error() -> None:
    adapter = ASGIAdapter(LifespanApp())
    await adapter.startup()
    with pytest.raises(RuntimeError, match="twice"):
        await adapter.startup()
    await adapter.shutdown()


# --- a real Starlette application -------------------------------------------------------------

starlette = pytest.importorskip("starlette")

from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402
from starlette.requests import Request as StarletteRequest  # noqa: E402
from starlette.responses import (  # noqa: E402
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route  # noqa: E402

HAVE_MULTIPART = importlib.util.find_spec("python_multipart") is not None


def make_starlette(tmp_path: Path) -> Starlette:
    static = tmp_path / "static.txt"
    static.write_bytes(b"static content\n")

    async def user(request: StarletteRequest) -> Response:
        return JSONResponse(
            {
                "id": int(request.path_params["user_id"]),
                "q": request.query_params.get("q"),
                "url": str(request.url),
                "db": request.state.db,
                "client": request.client.host if request.client else None,
            }
        )

    async def echo(request: StarletteRequest) -> Response:
        body = await request.body()
        return Response(body[::-1], media_type="application/octet-stream")

    async def stream(request: StarletteRequest) -> Response:
        async def numbers() -> AsyncIterator[bytes]:
            for i in range(5):
                yield b"%d\n" % i

        return StreamingResponse(numbers(), media_type="text/plain")

    async def cookies(request: StarletteRequest) -> Response:
        response = PlainTextResponse(f"seen={request.cookies.get('seen', '-')}")
        response.set_cookie("seen", "yes", httponly=True)
        response.set_cookie("other", "1")
        return response

    async def upload(request: StarletteRequest) -> Response:
        async with request.form() as form:
            f = form["file"]
            assert not isinstance(f, str)
            data = await f.read()
            return JSONResponse(
                {
                    "name": form["name"],
                    "filename": f.filename,
                    "size": len(data),
                    "head": data[:5].decode(),
                }
            )

    async def file(request: StarletteRequest) -> Response:
        return FileResponse(static)

    async def background(request: StarletteRequest) -> Response:
        async def later() -> None:
            done.append(req_ended())

        def req_ended() -> bool:
            return bool(request.scope["extensions"]["test.request"].ended)

        done: list[bool] = request.app.state.background_done
        return PlainTextResponse("queued", background=BackgroundTask(later))

    async def disconnected(request: StarletteRequest) -> Response:
        await request.body()
        return PlainTextResponse(str(await request.is_disconnected()))

    async def url_for(request: StarletteRequest) -> Response:
        return PlainTextResponse(str(request.url_for("user", user_id=3)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"db": "pool"}

    routes = [
        Route("/users/{user_id:int}", user, name="user"),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/cookies", cookies),
        Route("/upload", upload, methods=["POST"]),
        Route("/file", file),
        Route("/url-for", url_for),
        Route("/background", background),
        Route("/disconnected", disconnected, methods=["POST"]),
    ]
    app = Starlette(routes=[*routes, Mount("/sub", routes=routes)], lifespan=lifespan)
    app.state.background_done = []
    return app


@pytest.fixture
async def starlette_adapter(tmp_path: Path) -> AsyncIterator[ASGIAdapter]:
    adapter = ASGIAdapter(make_starlette(tmp_path))
    await adapter.startup()
    yield adapter
    await adapter.shutdown()


def get(uri: str, **params: str | bytes) -> FakeRequest:
    base: dict[str | bytes, str | bytes] = {
        "REQUEST_URI": uri,
        "SCRIPT_NAME": uri.partition("?")[0],
        "HTTP_HOST": "example.com",
    }
    base.update(params)
    return FakeRequest(base)


async def test_starlette_json_route(starlette_adapter: ASGIAdapter) -> None:
    req = get("/users/42?q=%C3%A9t%C3%A9", REMOTE_ADDR="192.0.2.9")
    await starlette_adapter(req)
    status, headers, body = req.parsed()
    assert status == 200
    assert ("content-type", "application/json") in headers
    assert req.writes == 1
    assert json.loads(body) == {
        "id": 42,
        "q": "été",
        "url": "http://example.com/users/42?q=%C3%A9t%C3%A9",
        "db": "pool",
        "client": "192.0.2.9",
    }


async def test_starlette_https_and_mount(starlette_adapter: ASGIAdapter) -> None:
    req = get("/sub/users/7", HTTPS="on")
    await starlette_adapter(req)
    assert json.loads(req.parsed()[2])["url"] == "https://example.com/sub/users/7"


async def test_starlette_under_root_path(tmp_path: Path) -> None:
    adapter = ASGIAdapter(make_starlette(tmp_path), root_path="/prefix")
    await adapter.startup()
    try:
        req = get("/prefix/url-for")
        await adapter(req)
        assert req.parsed()[2] == b"http://example.com/prefix/users/3"
        req = get("/prefix/users/5")
        await adapter(req)
        assert json.loads(req.parsed()[2])["id"] == 5
    finally:
        await adapter.shutdown()


async def test_starlette_not_found(starlette_adapter: ASGIAdapter) -> None:
    req = get("/nope")
    await starlette_adapter(req)
    assert req.parsed()[0] == 404
    assert req.ended


async def test_starlette_post_body(starlette_adapter: ASGIAdapter) -> None:
    req = FakeRequest(
        {
            "REQUEST_METHOD": "POST",
            "REQUEST_URI": "/echo",
            "CONTENT_LENGTH": "6",
            "CONTENT_TYPE": "application/octet-stream",
        },
        body=[b"abc", b"def"],
    )
    await starlette_adapter(req)
    assert req.parsed()[:1] == (200,)
    assert req.parsed()[2] == b"fedcba"


async def test_starlette_streaming_response(starlette_adapter: ASGIAdapter) -> None:
    req = get("/stream")
    await starlette_adapter(req)
    status, _, body = req.parsed()
    assert status == 200
    assert body == b"0\n1\n2\n3\n4\n"
    assert req.ended
    assert len(req.stdout) > 1


async def test_starlette_streaming_client_gone(starlette_adapter: ASGIAdapter) -> None:
    req = get("/stream")
    original = req.send_stdout
    sent = 0

    async def send_then_vanish(data: bytes) -> None:
        nonlocal sent
        await original(data)
        sent += 1
        if sent == 2:
            req.disconnect()

    req.send_stdout = send_then_vanish  # type: ignore[method-assign]
    await starlette_adapter(req)
    assert not req.ended
    assert not req.failed
    assert req.parsed()[2] == b"0\n1\n"


async def test_starlette_background_task_runs_after_the_response(tmp_path: Path) -> None:
    app = make_starlette(tmp_path)
    seen: list[FakeRequest] = []

    async def expose(scope: Scope, receive: Receive, send: Send) -> None:
        scope["extensions"]["test.request"] = seen[0]
        await app(scope, receive, send)

    adapter = ASGIAdapter(expose, lifespan="off")
    req = get("/background")
    seen.append(req)
    await adapter(req)
    assert req.parsed()[2] == b"queued"
    assert req.writes == 1
    assert app.state.background_done == [True]  # the response was complete before it ran


async def test_starlette_is_disconnected(starlette_adapter: ASGIAdapter) -> None:
    req = FakeRequest(
        {"REQUEST_METHOD": "POST", "REQUEST_URI": "/disconnected", "CONTENT_LENGTH": "2"},
        body=[b"hi"],
    )
    await starlette_adapter(req)
    assert req.parsed()[2] == b"False"


async def test_starlette_cookies(starlette_adapter: ASGIAdapter) -> None:
    req = get("/cookies", HTTP_COOKIE="seen=before; x=1")
    await starlette_adapter(req)
    _, headers, body = req.parsed()
    assert body == b"seen=before"
    set_cookies = [v for n, v in headers if n == "set-cookie"]
    assert len(set_cookies) == 2
    assert any(v.startswith("seen=yes;") and "HttpOnly" in v for v in set_cookies)


async def test_starlette_file_response_uses_pathsend(starlette_adapter: ASGIAdapter) -> None:
    req = get("/file")
    await starlette_adapter(req)
    status, headers, body = req.parsed()
    assert status == 200
    assert body == b"static content\n"
    assert ("content-length", "15") in headers
    assert req.writes == 1


@pytest.mark.skipif(not HAVE_MULTIPART, reason="python-multipart is not installed")
async def test_starlette_form_upload(starlette_adapter: ASGIAdapter) -> None:
    boundary = "----fcgiboundary"
    payload = os.urandom(100_000).hex().encode()
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="name"\r\n\r\n'
            "Zoë\r\n"
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="data.txt"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = [body[i : i + 32768] for i in range(0, len(body), 32768)]
    req = FakeRequest(
        {
            "REQUEST_METHOD": "POST",
            "REQUEST_URI": "/upload",
            "CONTENT_TYPE": f"multipart/form-data; boundary={boundary}",
            "CONTENT_LENGTH": str(len(body)),
        },
        body=chunks,
    )
    await starlette_adapter(req)
    status, _, out = req.parsed()
    assert status == 200, out
    assert json.loads(out) == {
        "name": "Zoë",
        "filename": "data.txt",
        "size": len(payload),
        "head": payload[:5].decode(),
    }


async def test_starlette_startup_failure(tmp_path: Path) -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise ConnectionError("cannot reach the database")
        yield

    adapter = ASGIAdapter(Starlette(lifespan=lifespan))
    with pytest.raises(LifespanFailure, match="cannot reach the database"):
        await adapter.startup()
