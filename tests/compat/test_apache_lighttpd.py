"""fcgi-async behind a real Apache httpd (mod_proxy_fcgi) and a real lighttpd (mod_fastcgi).

Both web servers come from Debian's packages (``apache2-bin`` and ``lighttpd``, installed by
``.ci/run``), run in the foreground on 127.0.0.1 with configs written to pytest's temporary
directory, and are stopped at teardown. Each mounts the test app (WSGI and ASGI) under
``/app`` the way the README's configurations do, so these tests check the README's claims:
the path conventions (Apache sends no PATH_INFO, so fcgi-async runs with ``--root-path /app``;
lighttpd splits SCRIPT_NAME and PATH_INFO itself), bodies in both directions, several
Set-Cookie headers, and that an app failing after its headers left gives the client a broken
response rather than a clean short one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import (
    TEST_APPS,
    FcgiServer,
    fetch_error_after,
    free_port,
    run_fcgi_async,
    stop_process,
    wait_until_connectable,
)

APACHE = "/usr/sbin/apache2"
APACHE_MODULES = Path("/usr/lib/apache2/modules")
LIGHTTPD = "/usr/sbin/lighttpd"
MIB = 1024 * 1024


@dataclass
class Front:
    """A web server on 127.0.0.1:``port`` with the app mounted at /app."""

    kind: str
    port: int
    server: FcgiServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/app"


def _apache_config(prefix: Path, port: int, backend: tuple[str, int] | str) -> str:
    """A whole httpd.conf inside ``prefix``: the README's ProxyPass line over TCP."""
    modules = ["mpm_event", "authz_core", "proxy", "proxy_fcgi"]  # unixd is built in
    loads = "\n".join(
        f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so" for name in modules
    )
    # As root, httpd's children run as www-data: they reach the app over loopback TCP, since
    # pytest's temporary directories are closed to other users.
    user = "User www-data\nGroup www-data" if os.getuid() == 0 else ""
    assert isinstance(backend, tuple)
    host, backend_port = backend
    return f"""\
ServerRoot "{prefix}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile "{prefix}/httpd.pid"
DefaultRuntimeDir "{prefix}"
ErrorLog "{prefix}/error.log"
LogLevel warn
Mutex posixsem default
{loads}
{user}
ProxyPass "/app/" "fcgi://{host}:{backend_port}/" enablereuse=on
"""


def _lighttpd_config(
    prefix: Path, port: int, backend: tuple[str, int] | str, stream: int = 1
) -> str:
    """A whole lighttpd.conf inside ``prefix``: the README's lines (``stream``: lighttpd's
    ``server.stream-response-body``; the README sets 1, lighttpd's default is 0)."""
    docroot = prefix / "htdocs"
    docroot.mkdir(exist_ok=True)
    assert isinstance(backend, str)
    return f"""\
server.document-root = "{docroot}"
server.bind = "127.0.0.1"
server.port = {port}
server.pid-file = "{prefix}/lighttpd.pid"
server.errorlog = "{prefix}/error.log"
server.upload-dirs = ("{prefix}")
server.modules += ("mod_fastcgi")
server.stream-response-body = {stream}
fastcgi.server = ("/app" => ((
    "socket" => "{backend}",
    "check-local" => "disable",
)))
"""


@dataclass(frozen=True)
class FrontKind:
    """How to run one web server: its binary, config, and how it reaches the app."""

    binary: str
    config: Callable[..., str]
    tcp: bool  # the app listens on loopback TCP instead of a unix socket
    flags: tuple[str, ...]  # fcgi-async's extra flags behind this server
    check: tuple[str, ...]  # arguments that test the config (before -f CONF)
    foreground: tuple[str, ...]  # arguments that run it in the foreground


FRONTS = {
    "apache": FrontKind(
        APACHE, _apache_config, True, ("--root-path", "/app"), ("-t",), ("-DFOREGROUND",)
    ),
    "lighttpd": FrontKind(LIGHTTPD, _lighttpd_config, False, (), ("-tt",), ("-D",)),
}


def _www_data_exists() -> bool:
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def _run_front(
    kind: str, prefix: Path, backend: tuple[str, int] | str, **options: int
) -> Iterator[int]:
    """Start the web server in the foreground; yield its port once it accepts connections.

    ``options`` go to the config writer (lighttpd's ``stream``).
    """
    front = FRONTS[kind]
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / f"{kind}.conf"
    conf.write_text(front.config(prefix, port, backend, **options))
    log = prefix / f"{kind}.stderr"
    checked = subprocess.run(
        [front.binary, *front.check, "-f", str(conf)], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        pytest.fail(f"{kind} rejected its config:\n{checked.stdout}{checked.stderr}")
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [front.binary, *front.foreground, "-f", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_connectable(("127.0.0.1", port), proc, log, kind)
        yield port
    finally:
        stop_process(proc, kind, log, check=False)


@pytest.fixture(
    scope="module",
    params=[(kind, adapter) for kind in sorted(FRONTS) for adapter in sorted(TEST_APPS)],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def front(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Front]:
    kind, adapter = request.param
    web = FRONTS[kind]
    if not os.path.exists(web.binary):
        pytest.skip(f"{web.binary} is missing (.ci/run installs apache2-bin and lighttpd)")
    if kind == "apache" and os.getuid() == 0 and not _www_data_exists():
        pytest.skip("httpd started as root needs the www-data user for its children")
    workdir = tmp_path_factory.mktemp(f"{kind}-{adapter}")
    with (
        run_fcgi_async(
            TEST_APPS[adapter],
            workdir,
            tcp=web.tcp,
            extra_args=["--interface", adapter, *web.flags],
        ) as server,
        _run_front(kind, workdir / kind, server.address) as port,
    ):
        yield Front(kind, port, server)


@pytest.fixture
def client(front: Front) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front.url, timeout=30.0) as c:
        yield c


def test_hello(client: httpx.Client) -> None:
    response = client.get("/hello")
    assert response.status_code == 200, response.text
    assert response.text == "Hello, world!\n"


@pytest.mark.parametrize(
    ("raw", "path_info", "query"),
    [
        ("/echo-path/plain", "/echo-path/plain", ""),
        ("/echo-path/a%20b/%C3%A9?x=1&y=%C3%A9", "/echo-path/a b/é", "x=1&y=%C3%A9"),
    ],
)
def test_the_mount_and_the_path_below_it(
    client: httpx.Client, front: Front, raw: str, path_info: str, query: str
) -> None:
    response = client.get(raw)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["script_name"] == "/app", front.kind
    assert data["path_info"] == path_info
    assert data["query"] == query
    assert data["request_uri"] == "/app" + raw


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 5 * MIB])
def test_post_body_arrives_intact(client: httpx.Client, size: int) -> None:
    body = os.urandom(size)
    response = client.post("/echo", content=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["length"] == size
    assert data["sha256"] == hashlib.sha256(body).hexdigest()


def test_big_response_and_several_cookies(client: httpx.Client) -> None:
    response = client.get("/big?mib=8")
    assert response.status_code == 200
    assert len(response.content) == 8 * MIB
    cookies = client.get("/cookies")
    assert cookies.headers.get_list("set-cookie") == [
        "a=1; Path=/",
        "b=2; Path=/; HttpOnly",
        "c=3; Path=/; Max-Age=60",
    ]


def test_error_after_start_fails_visibly(front: Front, client: httpx.Client) -> None:
    status, body, error = fetch_error_after(f"{front.url}/error-after")
    print(f"{front.kind}: status={status} error={error}")
    # A 502 (nothing sent yet), a dropped connection or a cut body are all visible; a clean
    # 200 with a complete-looking body would be a silent truncation.
    if status is None or status == 200:
        assert body is None, f"truncated response looked complete: {len(body or b'')} bytes"
        assert error
    else:
        assert status in (500, 502, 503)
    # Only that response broke: the next request is served.
    assert client.get("/hello").status_code == 200


def test_lighttpd_default_buffering_hides_a_failed_response(tmp_path: Path) -> None:
    """What the README warns about: with lighttpd's default ``server.stream-response-body =
    0`` a response that failed after its headers reaches the client as a complete-looking one
    (lighttpd buffers it, logs the backend error, and sends what it got with a Content-Length
    of its own). If a lighttpd release changes that, this test says so and the README's
    warning can go."""
    if not os.path.exists(LIGHTTPD):
        pytest.skip(f"{LIGHTTPD} is missing (.ci/run installs lighttpd)")
    with (
        run_fcgi_async(TEST_APPS["asgi"], tmp_path, extra_args=["--interface", "asgi"]) as app,
        _run_front("lighttpd", tmp_path / "lighttpd", app.address, stream=0) as port,
    ):
        status, body, error = fetch_error_after(f"http://127.0.0.1:{port}/app/error-after")
        log = (tmp_path / "lighttpd" / "error.log").read_text()
    assert (status, error) == (200, "")
    assert body is not None
    assert body.startswith(b"partial response")
    assert "response already sent out, but backend returned error" in log
