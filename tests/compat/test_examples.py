"""The example Flask and Starlette apps behind nginx, with ``examples/nginx.conf`` as shipped.

Each app runs in its own fcgi-async process on a unix socket; nginx mounts them at
``/flask/`` and ``/starlette/`` (prefix mounts), exactly as ``examples/demo.sh`` does.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import NGINX, REPO_ROOT, Nginx, run_fcgi_async, run_nginx

pytestmark = pytest.mark.nginx

EXAMPLES = REPO_ROOT / "examples"
MOUNTS = ["flask", "starlette"]


def render_config(run_dir: Path, port: int) -> str:
    """examples/nginx.conf with its placeholders filled in, as demo.sh does."""
    template = (EXAMPLES / "nginx.conf").read_text()
    return template.replace("__RUN_DIR__", str(run_dir)).replace("__PORT__", str(port))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if not os.path.exists(NGINX):
        pytest.skip(f"{NGINX} is missing (.ci/run installs the nginx package)")
    run_dir = tmp_path_factory.mktemp("examples")
    with (
        run_fcgi_async("flask_app:app", run_dir, app_dir=EXAMPLES, name="flask"),
        run_fcgi_async("starlette_app:app", run_dir, app_dir=EXAMPLES, name="starlette"),
        run_nginx(run_dir, lambda port: render_config(run_dir, port)) as nginx,
    ):
        yield nginx


@pytest.fixture(params=MOUNTS)
def site(request: pytest.FixtureRequest, demo: Nginx) -> Iterator[tuple[str, httpx.Client]]:
    mount = f"/{request.param}"
    with httpx.Client(base_url=demo.url + mount, timeout=30.0) as client:
        yield mount, client


def test_landing_page(demo: Nginx) -> None:
    response = httpx.get(demo.url + "/", timeout=30.0)
    assert response.status_code == 200
    assert 'href="/flask/"' in response.text
    assert 'href="/starlette/"' in response.text


def test_mount_without_slash_redirects(demo: Nginx) -> None:
    for mount in MOUNTS:
        response = httpx.get(f"{demo.url}/{mount}", timeout=30.0)
        assert response.status_code == 301
        assert response.headers["location"].endswith(f"/{mount}/")


def test_index_links_stay_under_the_mount(site: tuple[str, httpx.Client]) -> None:
    mount, client = site
    response = client.get("/")
    assert response.status_code == 200
    assert "on fcgi-async" in response.text
    assert f"Mounted at {mount}<" in response.text
    # url_for built every link from root_path / SCRIPT_NAME.
    assert f'href="{mount}/api/items"' in response.text
    assert f'action="{mount}/upload"' in response.text
    assert f'href="{mount}/stream?n=5"' in response.text


def test_json_api(site: tuple[str, httpx.Client]) -> None:
    _, client = site
    listed = client.get("/api/items")
    assert listed.status_code == 200
    assert listed.headers["content-type"].startswith("application/json")
    before = listed.json()["items"]
    created = client.post("/api/items", json={"name": "from the test"})
    assert created.status_code == 201
    item = created.json()
    assert item["name"] == "from the test"
    after = client.get("/api/items").json()["items"]
    assert after == [*before, item]
    bad = client.post("/api/items", json=["not", "an", "object"])
    assert bad.status_code == 400


def test_cookies(site: tuple[str, httpx.Client]) -> None:
    mount, client = site
    response = client.get("/cookie/set", params={"value": "oatmeal"})
    assert response.status_code == 200
    set_cookies = response.headers.get_list("set-cookie")
    assert len(set_cookies) == 2
    assert any(c.startswith("demo=oatmeal") and "HttpOnly" in c for c in set_cookies)
    assert all(f"Path={mount}" in c for c in set_cookies)
    # The client keeps them (path matches the mount) and sends them back.
    read = client.get("/cookie/read")
    assert read.json() == {"cookies": {"demo": "oatmeal", "visits": "1"}}


@pytest.mark.parametrize("size", [0, 1000, 5 * 1024 * 1024 + 3])
def test_upload(site: tuple[str, httpx.Client], size: int) -> None:
    _, client = site
    payload = os.urandom(size)
    response = client.post("/upload", files={"file": ("data.bin", payload)})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "filename": "data.bin",
        "size": size,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    missing = client.post("/upload", data={"other": "field"})
    assert missing.status_code == 400


def test_streaming_arrives_line_by_line(site: tuple[str, httpx.Client]) -> None:
    _, client = site
    arrivals: list[float] = []
    lines: list[str] = []
    start = time.monotonic()
    with client.stream("GET", "/stream", params={"n": 4, "delay": 0.3}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        for line in response.iter_lines():
            lines.append(line)
            arrivals.append(time.monotonic() - start)
    assert lines == [f"line {i} of 4" for i in range(1, 5)]
    # 0.9 s of delays in all: the first line must have come well before the last was made.
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals
