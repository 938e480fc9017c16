"""The optional C builder of the ASGI scope's headers, client and server.

It must behave exactly like the Python reference, and the adapter must give the same scope
whichever is used, including for param names it has not seen before and once its name cache
is full.
"""

from __future__ import annotations

from typing import Any

import pytest
from fcgi_async.adapters import asgi
from hypothesis import given, settings
from hypothesis import strategies as st

from .fakes import FakeRequest

PY = asgi.select_scope_parts(False)
C = asgi.select_scope_parts(True)
CONTENT = frozenset({b"content-type", b"content-length"})


def outcome(fn: asgi.ScopePartsFunction, *args: Any) -> object:
    try:
        return fn(*args)
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def as_the_adapter_uses_it(*args: Any) -> object:
    """C's answer, or the reference's where C declines (returns None), as the adapter does."""
    result = outcome(C, *args)
    return outcome(PY, *args) if result is None else result


def test_the_c_builder_is_built() -> None:
    """CI builds the accelerator; a silent fallback would leave it untested."""
    assert C is not PY
    assert PY is asgi._scope_parts_py


names = st.sampled_from(
    [
        *(b"HTTP_HOST", b"HTTP_X_A", b"HTTP_", b"CONTENT_TYPE", b"CONTENT_LENGTH", b"REMOTE_ADDR"),
        *(b"REMOTE_PORT", b"SERVER_ADDR", b"SERVER_NAME", b"SERVER_PORT", b"QUERY_STRING"),
    ]
) | st.binary(max_size=12)
values = st.sampled_from([b"", b"0", b"80", b"0080", b"65535", b"8o", b" 1", b"1_0", b"\xff"]) | (
    st.binary(max_size=8)
)


@given(params=st.dictionaries(names, values, max_size=12), learn=st.booleans())
@settings(max_examples=400, deadline=None)
def test_c_matches_python(params: dict[bytes, bytes], learn: bool) -> None:
    table: dict[bytes, bytes | None] = {b"CONTENT_TYPE": b"content-type"}
    if learn:
        table.update({k: asgi._header_name(k) for k in params})
    # Bytes params in a dict: C declines only for a name the table lacks, as Python does.
    assert outcome(C, params, table, CONTENT) == outcome(PY, params, table, CONTENT)


@pytest.mark.parametrize(
    "params",
    [
        {b"REMOTE_ADDR": "text"},  # not bytes: the Python path decides (and fails)
        {b"SERVER_NAME": b"h", b"SERVER_PORT": "80"},
        {b"HTTP_HOST": "text"},
    ],
)
def test_unusual_values_behave_the_same(params: dict[bytes, Any]) -> None:
    table = {k: asgi._header_name(k) for k in params}
    assert outcome(C, params, table, CONTENT) is None  # C leaves what is not bytes to Python
    assert as_the_adapter_uses_it(params, table, CONTENT) == outcome(PY, params, table, CONTENT)


def test_a_port_over_the_int_digit_limit_raises_the_same() -> None:
    params = {b"REMOTE_ADDR": b"::1", b"REMOTE_PORT": b"9" * 5000}
    table = {k: asgi._header_name(k) for k in params}
    assert outcome(C, params, table, CONTENT) == outcome(PY, params, table, CONTENT)
    assert outcome(PY, params, table, CONTENT)[0] == "raised"  # type: ignore[index]


def test_a_mapping_that_is_not_a_dict_takes_the_python_path() -> None:
    class Params(dict[bytes, bytes]):
        pass

    params = Params({b"HTTP_HOST": b"h"})
    table = {b"HTTP_HOST": b"host"}
    assert C(params, table, CONTENT) is None
    assert PY(params, table, CONTENT) == ([(b"host", b"h")], None, None)


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
    monkeypatch.setattr(asgi, "_scope_parts", C if use_c else PY)
    # A fresh cache: earlier tests may have filled the process-wide one with random names.
    monkeypatch.setattr(asgi, "_HEADER_NAMES", {b"CONTENT_TYPE": b"content-type"})
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
    monkeypatch.setattr(asgi, "_scope_parts", C if use_c else PY)
    monkeypatch.setattr(asgi, "_HEADER_NAMES", dict(asgi._HEADER_NAMES))
    monkeypatch.setattr(asgi, "MAX_CACHED_HEADER_NAMES", len(asgi._HEADER_NAMES))
    scope = await scope_of({"HTTP_X_FULL": "yes", "HTTP_ACCEPT": "*/*"})
    assert (b"x-full", b"yes") in scope["headers"]
    assert (b"accept", b"*/*") in scope["headers"]
    assert b"HTTP_X_FULL" not in asgi._HEADER_NAMES
