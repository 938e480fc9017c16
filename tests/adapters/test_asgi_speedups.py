"""The optional C builder of the ASGI ``http`` scope.

Wherever it builds a scope, it must be exactly the Python reference's; where it declines
(returns None), the adapter uses the reference. The adapter gives the same scope either way,
including for param names it has not seen before and once its name cache is full.
"""

from __future__ import annotations

from typing import Any

import pytest
from fcgi_async.adapters import asgi
from hypothesis import given, settings
from hypothesis import strategies as st

from fcgi_async.cgi import MAX_LENGTH_DIGITS, STRIPPED_PARAMS

from .fakes import FakeRequest

C = asgi.select_http_scope(True)
PY = asgi._http_scope_py

NGINX = {
    b"QUERY_STRING": b"a=1",
    b"REQUEST_METHOD": b"GET",
    b"CONTENT_TYPE": b"",
    b"CONTENT_LENGTH": b"",
    b"SCRIPT_NAME": b"/index",
    b"REQUEST_URI": b"/index?a=1",
    b"DOCUMENT_URI": b"/index",
    b"SERVER_PROTOCOL": b"HTTP/1.1",
    b"REQUEST_SCHEME": b"http",
    b"REMOTE_ADDR": b"127.0.0.1",
    b"REMOTE_PORT": b"40000",
    b"SERVER_ADDR": b"127.0.0.1",
    b"SERVER_PORT": b"8080",
    b"SERVER_NAME": b"example.org",
    b"HTTP_HOST": b"example.org",
    b"HTTP_ACCEPT": b"*/*",
}


def learnt(params: dict[bytes, Any]) -> dict[bytes, bytes | None]:
    """The adapter's name table, as the reference uses it, with ``params`` learnt."""
    if len(asgi._HEADER_NAMES) > asgi.MAX_CACHED_HEADER_NAMES // 2:  # random names fill it
        asgi._HEADER_NAMES.clear()
        asgi._HEADER_NAMES.update(asgi._INITIAL_HEADER_NAMES)
    asgi._translate_headers(params)
    return asgi._HEADER_NAMES


def outcome(fn: Any, *args: Any) -> object:
    try:
        return fn(*args)
    except Exception as exc:  # the same exception either way is the point
        return ("raised", type(exc), str(exc))


def check(params: dict[bytes, Any], root_path: bytes | None = None, **state: Any) -> object:
    """C's scope equals the reference's, or C declines; returns C's answer."""
    names = learnt(params)
    built = outcome(C, params, root_path, state, names)
    if built is not None:
        assert built == outcome(PY, params, root_path, state)
    return built


def test_the_c_builder_is_built() -> None:
    """CI builds the accelerator; a silent fallback would leave it untested."""
    assert C is not asgi._http_scope_ref


def test_builds_what_nginx_sends() -> None:
    scope = check(NGINX, lifespan_thing=1)
    assert isinstance(scope, dict)
    assert scope["path"] == "/index"
    assert scope["headers"] == [(b"host", b"example.org"), (b"accept", b"*/*")]
    assert scope["state"] == {"lifespan_thing": 1}


@pytest.mark.parametrize(
    "change",
    [
        {b"PATH_INFO": b"/rest", b"SCRIPT_NAME": b"/app//"},
        {b"PATH_INFO": b"/r\xc3\xa9st", b"SCRIPT_NAME": b""},
        {b"REQUEST_URI": b"/no-query?", b"QUERY_STRING": b""},
        {b"REQUEST_URI": b"/q?from=uri", b"QUERY_STRING": b""},
        {b"HTTPS": b"on", b"REQUEST_SCHEME": b"https"},
        {b"HTTPS": b"", b"REQUEST_SCHEME": b"https"},
        {b"SERVER_PROTOCOL": b"HTTP/2.0", b"REQUEST_METHOD": b"PROPFIND"},
        {b"SERVER_PROTOCOL": b"HTTP/1.0", b"REQUEST_METHOD": b""},
        {b"SERVER_PROTOCOL": b"SPDY", b"CONTENT_TYPE": b"text/plain", b"CONTENT_LENGTH": b"3"},
        {b"CONTENT_LENGTH": b"9" * MAX_LENGTH_DIGITS},
        {b"REMOTE_PORT": b"", b"SERVER_PORT": b"x", b"SERVER_ADDR": b""},
        {b"REMOTE_ADDR": b"", b"SERVER_NAME": b"", b"SERVER_ADDR": b""},
    ],
)
def test_common_variants_are_built_alike(change: dict[bytes, bytes]) -> None:
    assert check({**NGINX, **change}) is not None


@pytest.mark.parametrize(
    ("change", "root_path"),
    [
        ({b"REQUEST_URI": b"/%41"}, None),  # unquoting: the reference's
        ({b"REQUEST_URI": b"/\xff"}, None),  # not UTF-8: latin-1 in both paths
        ({b"PATH_INFO": b"/x", b"SCRIPT_NAME": b"/\xe9"}, None),
        ({b"REQUEST_URI": b""}, None),
        ({b"HTTPS": b"ON"}, None),
        ({b"HTTPS": b"on", b"REQUEST_SCHEME": b"http"}, None),
        ({b"HTTP_PROXY": b"http://evil"}, None),
        ({b"HTTP_HOST": "not bytes"}, None),
        ({b"CONTENT_LENGTH": b"-1"}, None),  # unknown lengths: the reference drops them
        ({b"CONTENT_LENGTH": b" 5"}, None),
        ({b"CONTENT_LENGTH": "\u00b2".encode()}, None),
        ({b"CONTENT_LENGTH": b"1" * (MAX_LENGTH_DIGITS + 1)}, None),
        ({}, b"/mount"),
    ],
)
def test_unusual_requests_are_declined(change: dict[bytes, Any], root_path: bytes | None) -> None:
    params = {**NGINX, **change}
    assert C(params, root_path, {}, learnt(params)) is None


def test_unknown_names_and_other_mappings_are_declined() -> None:
    assert C({**NGINX, b"HTTP_NEVER_LEARNT": b"1"}, None, {}, learnt(NGINX)) is None

    class Params(dict[bytes, bytes]):
        pass

    assert C(Params(NGINX), None, {}, learnt(NGINX)) is None


def test_c_knows_the_longest_length() -> None:
    """C accepts CONTENT_LENGTH of 1 to 19 digits: MAX_LENGTH_DIGITS must be taught to it."""
    assert MAX_LENGTH_DIGITS == 19


def test_c_knows_every_stripped_param() -> None:
    """C declines HTTP_PROXY by name: a new entry in STRIPPED_PARAMS must be taught to it."""
    assert frozenset({b"HTTP_PROXY"}) == STRIPPED_PARAMS


names = st.sampled_from([*NGINX, b"PATH_INFO", b"HTTPS", b"HTTP_X_A", b"HTTP_"]) | (
    st.binary(max_size=10)
)
#: CONTENT_LENGTH values the parser refuses (the C builder declines them) or just accepts.
LENGTHS = [b"-1", b" 5", b"+5", b"1_0", "\u00b2".encode(), b"9" * 19, b"9" * 20]
values = (
    st.sampled_from(
        [b"", b"0", b"80", b"0080", b"8o", b"on", b"https", b"http", b"HTTP/2", b"/a?b", b"/%2F"]
    )
    | st.sampled_from(LENGTHS)
    | st.builds(lambda parts: b"/".join(parts), st.lists(st.binary(max_size=4), max_size=4))
    | st.binary(max_size=8)
)


@given(
    change=st.dictionaries(names, values, max_size=8),
    drop=st.lists(st.sampled_from(list(NGINX)), max_size=5),
    root_path=st.sampled_from([None, None, None, b"/index", b""]),
)
@settings(max_examples=400, deadline=None)
def test_c_matches_python(
    change: dict[bytes, bytes], drop: list[bytes], root_path: bytes | None
) -> None:
    params = {**NGINX, **change}
    for name in drop:
        params.pop(name, None)
    check(params, root_path)


async def scope_of(params: dict[str, str]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await asgi.ASGIAdapter(app, lifespan="off")(FakeRequest(params))
    return seen


@pytest.mark.parametrize("use_c", [True, False])
async def test_new_names_are_learnt_then_served_from_the_cache(
    use_c: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asgi, "_http_scope", C if use_c else asgi._http_scope_ref)
    # A fresh cache: earlier tests may have filled the process-wide one with random names.
    monkeypatch.setattr(asgi, "_HEADER_NAMES", dict(asgi._INITIAL_HEADER_NAMES))
    params = {"HTTP_X_NEVER_SEEN": "1", "HTTP_": "empty name", "DOCUMENT_ROOT": "/srv"}
    for _ in range(2):
        scope = await scope_of(params)
        assert (b"x-never-seen", b"1") in scope["headers"]
        assert all(name for name, _ in scope["headers"])
    assert asgi._HEADER_NAMES[b"HTTP_X_NEVER_SEEN"] == b"x-never-seen"
    assert asgi._HEADER_NAMES[b"DOCUMENT_ROOT"] is None


@pytest.mark.parametrize("use_c", [True, False])
async def test_headers_are_right_once_the_name_cache_is_full(
    use_c: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asgi, "_http_scope", C if use_c else asgi._http_scope_ref)
    monkeypatch.setattr(asgi, "_HEADER_NAMES", dict(asgi._HEADER_NAMES))
    monkeypatch.setattr(asgi, "MAX_CACHED_HEADER_NAMES", len(asgi._HEADER_NAMES))
    scope = await scope_of({"HTTP_X_FULL": "yes", "HTTP_ACCEPT": "*/*"})
    assert (b"x-full", b"yes") in scope["headers"]
    assert (b"accept", b"*/*") in scope["headers"]
    assert b"HTTP_X_FULL" not in asgi._HEADER_NAMES


HEAD_C = asgi.select_response_head(True)


def head_check(status: Any, headers: Any) -> object:
    """C's header block equals the reference's, or C declines; returns C's answer."""
    built = HEAD_C(status, headers, asgi._STATUS_LINES)
    if built is not None:
        message = {"type": "http.response.start", "status": status, "headers": headers}
        assert built == asgi._response_head_py(message)
    return built


def test_the_c_header_block_builder_is_built() -> None:
    assert HEAD_C is not asgi._response_head_ref


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, [(b"content-type", b"text/plain"), (b"content-length", b"13")]),
        (404, ()),
        (226, ((b"x", b""),)),
        (204, [(b"", b"")]),
    ],
)
def test_header_blocks_are_built_alike(status: int, headers: Any) -> None:
    assert head_check(status, headers) is not None


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (199, []),
        (1000, []),
        (2**70, []),
        (True, []),
        ("200", []),
        (599, []),  # no reason phrase known: the reference writes "Unknown"
        (200, iter([(b"a", b"b")])),
        (200, [[b"a", b"b"]]),
        (200, [(b"a", "text")]),
        (200, [(b"a", b"b", b"c")]),
        (200, [(b"a", bytearray(b"b"))]),
        (200, [(b"a\r\nb", b"c")]),
        (200, [(b"a", b"c\n")]),
        (200, [(b"a", b"\0")]),
    ],
)
def test_unusual_header_blocks_are_declined(status: Any, headers: Any) -> None:
    assert HEAD_C(status, headers, asgi._STATUS_LINES) is None


@given(
    status=st.integers(150, 1050),
    headers=st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=5),
    as_tuple=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_header_blocks_match_python(
    status: int, headers: list[tuple[bytes, bytes]], as_tuple: bool
) -> None:
    head_check(status, tuple(headers) if as_tuple else headers)


def test_without_the_accelerator_the_selectors_return_the_references() -> None:
    """One convention (fcgi_async.protocol.speedups): C or the reference, never a stub."""
    params = {b"REQUEST_METHOD": b"GET", b"REQUEST_URI": b"/a?b=c", b"HTTP_HOST": b"x"}
    scope = asgi.select_http_scope(False)(params, None, {}, {})
    assert scope == asgi._http_scope_py(params, None, {})
    headers = [(b"content-type", b"text/plain")]
    head = asgi.select_response_head(False)(200, headers, asgi._STATUS_LINES)
    message = {"type": "http.response.start", "status": 200, "headers": headers}
    assert head == asgi._response_head_py(message)
