"""The stacks under test: what each one runs, how nginx fronts it, and how to find its workers.

A *stack* is nginx (one worker process, always) in front of one application server. Each stack
instance gets its own nginx on a free 127.0.0.1 port and its backend on a unix socket in the run's
temporary directory, so that nothing listens beyond this machine and no two stacks share state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .procs import Proc, ProcessSet, StartError, children, free_port, wait_connectable

APPS_DIR = Path(__file__).resolve().parent.parent / "apps"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PHP_FPM = shutil.which("php-fpm8.2") or "/usr/sbin/php-fpm8.2"

#: Idle upstream connections nginx keeps per worker for keep-alive stacks. As large as the largest
#: concurrency we drive, so that keep-alive stacks never churn connections at 256 clients.
UPSTREAM_KEEPALIVE = 256

#: What each interface can serve, by app family (see ``APP_TARGETS``).
FAMILIES: dict[str, tuple[str, ...]] = {
    "static": ("raw",),
    "php": ("raw",),
    "asgi": ("raw", "starlette"),
    "wsgi": ("raw", "flask"),
}

#: The app each Python interface runs for each family (modules in ``benchmarks/apps``).
APP_TARGETS: dict[tuple[str, str], str] = {
    ("asgi", "raw"): "raw_asgi:app",
    ("asgi", "starlette"): "starlette_app:app",
    ("wsgi", "raw"): "raw_wsgi:app",
    ("wsgi", "flask"): "flask_app:app",
}

#: Modules a family's app imports (checked before a stack is started for it).
FAMILY_MODULES: dict[str, tuple[str, ...]] = {
    "raw": (),
    "flask": ("flask",),
    "starlette": ("starlette",),
}


@dataclass(frozen=True)
class Stack:
    """One configuration under test."""

    name: str
    server: str  # nginx | php-fpm | uvicorn | fcgi-async | fcgisgi | flup
    interface: str  # static | php | asgi | wsgi
    description: str
    workers: int = 1
    upstream_keepalive: bool = True
    #: More fcgi-async flags (the soak passes limits such as ``--max-connections`` this way).
    server_args: tuple[str, ...] = ()

    @property
    def families(self) -> tuple[str, ...]:
        return FAMILIES[self.interface]

    @property
    def is_reference(self) -> bool:
        """True for the fcgi-async single-worker stacks that ratios are computed against."""
        return self.server == "fcgi-async" and self.workers == 1


STACKS: tuple[Stack, ...] = (
    Stack("nginx", "nginx", "static", "nginx alone: `return 200` / a static file (the ceiling)"),
    Stack(
        "php-fpm-1",
        "php-fpm",
        "php",
        "php-fpm, pm=static, 1 child, new connection per request",
        1,
        False,
    ),
    Stack("php-fpm-1-ka", "php-fpm", "php", "php-fpm, pm=static, 1 child, upstream keep-alive", 1),
    Stack(
        "php-fpm-2",
        "php-fpm",
        "php",
        "php-fpm, pm=static, 2 children, new connection per request",
        2,
        False,
    ),
    Stack(
        "php-fpm-2-ka", "php-fpm", "php", "php-fpm, pm=static, 2 children, upstream keep-alive", 2
    ),
    Stack(
        "uvicorn",
        "uvicorn",
        "asgi",
        "uvicorn (uvloop + httptools), 1 worker, nginx proxy_pass with upstream keep-alive",
    ),
    Stack(
        "uvicorn-wsgi",
        "uvicorn",
        "wsgi",
        "uvicorn --interface wsgi (its WSGI middleware), "
        "1 worker, proxy_pass with upstream keep-alive",
    ),
    Stack(
        "fcgi-async-asgi-1w", "fcgi-async", "asgi", "fcgi-async ASGI, 1 worker, upstream keep-alive"
    ),
    Stack(
        "fcgi-async-asgi-2w",
        "fcgi-async",
        "asgi",
        "fcgi-async ASGI, 2 workers, upstream keep-alive",
        2,
    ),
    Stack(
        "fcgi-async-wsgi-1w", "fcgi-async", "wsgi", "fcgi-async WSGI, 1 worker, upstream keep-alive"
    ),
    Stack(
        "fcgi-async-wsgi-2w",
        "fcgi-async",
        "wsgi",
        "fcgi-async WSGI, 2 workers, upstream keep-alive",
        2,
    ),
    Stack("fcgisgi-asgi", "fcgisgi", "asgi", "fcgisgi (PyPI) ASGI, upstream keep-alive"),
    Stack(
        "fcgisgi-wsgi", "fcgisgi", "wsgi", "fcgisgi (PyPI) WSGI (thread pool), upstream keep-alive"
    ),
    Stack("flup-wsgi", "flup", "wsgi", "flup (PyPI) threaded WSGIServer, upstream keep-alive"),
)
STACKS_BY_NAME = {s.name: s for s in STACKS}


def _python_ok(code: str) -> str | None:
    """Run ``code`` in this Python; None if it exits 0, else the reason."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def fcgi_async_help() -> str:
    """The text of ``python -m fcgi_async --help`` ('' if the command fails)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fcgi_async", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def availability(stack: Stack, help_text: str) -> str | None:
    """None if ``stack`` can be started on this machine, else why not (shown in the results)."""
    if not os.access(NGINX, os.X_OK):
        return f"nginx not found ({NGINX})"
    if stack.server == "nginx":
        return None
    if stack.server == "php-fpm":
        return None if os.access(PHP_FPM, os.X_OK) else f"php-fpm not found ({PHP_FPM})"
    if stack.server == "uvicorn":
        why = _python_ok("import uvicorn, uvloop, httptools")
        return None if why is None else f"uvicorn[standard] not installed: {why}"
    if stack.server == "fcgi-async":
        if not help_text:
            return "`python -m fcgi_async --help` fails"
        if stack.workers > 1 and "--workers" not in help_text:
            return "not available: `fcgi-async --help` does not list --workers yet"
        why = _python_ok(f"import fcgi_async.adapters.{stack.interface}")
        return None if why is None else f"fcgi_async.adapters.{stack.interface}: {why}"
    if stack.server in ("fcgisgi", "flup"):
        why = _python_ok(f"import {stack.server}")
        return None if why is None else f"`pip install {stack.server}` failed or missing: {why}"
    return f"unknown server {stack.server!r}"


def family_availability(family: str) -> str | None:
    modules = FAMILY_MODULES[family]
    if not modules:
        return None
    why = _python_ok("import " + ", ".join(modules))
    return None if why is None else f"{family} app cannot be imported: {why}"


# --- nginx -------------------------------------------------------------------------------------

_COMMON_FASTCGI_PARAMS = """\
        fastcgi_param QUERY_STRING $query_string;
        fastcgi_param REQUEST_METHOD $request_method;
        fastcgi_param CONTENT_TYPE $content_type;
        fastcgi_param CONTENT_LENGTH $content_length;
        fastcgi_param REQUEST_URI $request_uri;
        fastcgi_param DOCUMENT_URI $document_uri;
        fastcgi_param DOCUMENT_ROOT $document_root;
        fastcgi_param SERVER_PROTOCOL $server_protocol;
        fastcgi_param REQUEST_SCHEME $scheme;
        fastcgi_param HTTPS $https if_not_empty;
        fastcgi_param GATEWAY_INTERFACE CGI/1.1;
        fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
        fastcgi_param REMOTE_ADDR $remote_addr;
        fastcgi_param REMOTE_PORT $remote_port;
        fastcgi_param SERVER_ADDR $server_addr;
        fastcgi_param SERVER_PORT $server_port;
        fastcgi_param SERVER_NAME $server_name;
"""


def nginx_config(stack: Stack, tmp: Path, port: int, backend_sock: Path | None) -> str:
    """The complete nginx.conf for one stack instance (one worker process, loopback only)."""
    name = stack.name
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = tmp / f"nginx-{name}"
    temp.mkdir(parents=True, exist_ok=True)
    keepalive = stack.upstream_keepalive
    # php-fpm: never more idle connections than children. A child serves one connection until
    # nginx closes it, so surplus kept connections would wait in the listen queue.
    pool = stack.workers if stack.server == "php-fpm" else UPSTREAM_KEEPALIVE
    upstream = ""
    if backend_sock is not None:
        ka = ""
        if keepalive:
            ka = f"        keepalive {pool};\n        keepalive_requests 1000000;\n"
        upstream = f"    upstream backend {{\n        server unix:{backend_sock};\n{ka}    }}\n"
    fcgi_keep = "        fastcgi_keep_conn on;\n" if keepalive else ""
    if stack.server == "nginx":
        static = tmp / "static"
        locations = f"""\
        location = /1mib {{ alias {static}/1mib; }}
        location / {{ return 200 "Hello, world!"; }}
"""
    elif stack.server == "php-fpm":
        blocks = []
        for path, script in (
            ("/hello", "hello.php"),
            ("/1mib", "1mib.php"),
            ("/upload", "upload.php"),
        ):
            blocks.append(f"""\
        location = {path} {{
            fastcgi_pass backend;
{fcgi_keep}            fastcgi_param SCRIPT_FILENAME {APPS_DIR / "php" / script};
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param REDIRECT_STATUS 200;
{_COMMON_FASTCGI_PARAMS}        }}
""")
        locations = "".join(blocks)
    elif stack.server == "uvicorn":
        locations = """\
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }
"""
    else:
        # Python FastCGI apps are mounted at the root: the whole path is PATH_INFO.
        locations = f"""\
        location / {{
            fastcgi_pass backend;
{fcgi_keep}            fastcgi_param SCRIPT_NAME "";
            fastcgi_param PATH_INFO $uri;
{_COMMON_FASTCGI_PARAMS}        }}
"""
    return f"""\
{user}worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
master_process on;
pid {temp}/nginx.pid;
error_log {temp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 32m;
    client_body_buffer_size 16m;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    proxy_buffers 32 16k;
    fastcgi_buffers 32 16k;
    proxy_max_temp_file_size 0;
    fastcgi_max_temp_file_size 0;
{upstream}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        server_name bench;
{locations}    }}
}}
"""


# --- backends ----------------------------------------------------------------------------------


def php_fpm_config(stack: Stack, tmp: Path, sock: Path) -> str:
    user = "user = root\ngroup = root\n" if os.geteuid() == 0 else ""
    return f"""\
[global]
pid = {tmp}/php-fpm-{stack.name}.pid
error_log = /proc/self/fd/2
daemonize = no
log_level = warning

[bench]
listen = {sock}
listen.backlog = 511
{user}pm = static
pm.max_children = {stack.workers}
pm.max_requests = 0
catch_workers_output = yes
php_admin_value[post_max_size] = 32M
php_admin_value[memory_limit] = 256M
"""


def backend_argv(stack: Stack, family: str, tmp: Path, sock: Path) -> list[str]:
    """The command line that serves ``family`` on ``sock`` for ``stack``."""
    if stack.server == "php-fpm":
        conf = tmp / f"php-fpm-{stack.name}.conf"
        conf.write_text(php_fpm_config(stack, tmp, sock))
        argv = [
            PHP_FPM,
            "--nodaemonize",
            "--fpm-config",
            str(conf),
            "-d",
            "opcache.enable=1",
            "-d",
            "opcache.validate_timestamps=0",
        ]
        if os.geteuid() == 0:
            argv.append("--allow-to-run-as-root")
        return argv
    target = APP_TARGETS[(stack.interface, family)]
    py = sys.executable
    if stack.server == "fcgi-async":
        argv = [
            py,
            "-m",
            "fcgi_async",
            target,
            "--app-dir",
            str(APPS_DIR),
            "--interface",
            stack.interface,
            "--bind",
            f"unix:{sock}",
            "--log-level",
            "warning",
        ]
        if stack.workers > 1:
            argv += ["--workers", str(stack.workers)]
        return argv + list(stack.server_args)
    if stack.server == "uvicorn":
        return [
            py,
            "-m",
            "uvicorn",
            target,
            "--app-dir",
            str(APPS_DIR),
            "--uds",
            str(sock),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--interface",
            "asgi3" if stack.interface == "asgi" else "wsgi",
            "--no-access-log",
            "--log-level",
            "warning",
            # nginx keeps idle upstream connections 60 s; uvicorn's 5 s default would close
            # them under it between measurements.
            "--timeout-keep-alive",
            "75",
        ]
    if stack.server == "fcgisgi":
        return [py, str(APPS_DIR / "serve_fcgisgi.py"), stack.interface, target, str(sock)]
    if stack.server == "flup":
        return [py, str(APPS_DIR / "serve_flup.py"), target, str(sock)]
    raise ValueError(f"no backend for {stack.server}")


@dataclass
class Instance:
    """A running stack: its backend (None for nginx alone) and its nginx."""

    stack: Stack
    family: str
    port: int
    backend: Proc | None
    nginx: Proc
    sock: Path | None
    notes: list[str] = field(default_factory=list)

    @property
    def url_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def holder_protocol(self) -> str | None:
        """How to hold idle connections to the backend directly: fastcgi, http, or None."""
        if self.stack.server in ("nginx", "php-fpm"):
            return None
        return "http" if self.stack.server == "uvicorn" else "fastcgi"

    def error_log_tail(self, lines: int = 3) -> str:
        """The last lines of this instance's nginx error log (why a request failed)."""
        path = self.nginx.log.parent.parent / f"nginx-{self.stack.name}" / "error.log"
        try:
            return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """The processes that run the app (php-fpm children, supervisor workers, or itself)."""
        if self.backend is None:
            return []
        if self.stack.server == "php-fpm" or (
            self.stack.server == "fcgi-async" and self.stack.workers > 1
        ):
            return children(self.backend.pid)
        return [self.backend.pid]


def start_instance(stack: Stack, family: str, tmp: Path, procs: ProcessSet) -> Instance:
    """Start the backend, wait for it, then start nginx in front and wait for it.

    Raises:
        StartError: something did not come up (the message carries the log tail).
    """
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    sock: Path | None = None
    backend: Proc | None = None
    if stack.server != "nginx":
        sock = tmp / "s" / f"{stack.name}-{family}.sock"
        sock.parent.mkdir(exist_ok=True)
        if sock.exists():
            sock.unlink()
        argv = backend_argv(stack, family, tmp, sock)
        backend = procs.start(
            f"{stack.name} ({family})", argv, logs / f"{stack.name}-{family}.log", cwd=tmp
        )
        try:
            wait_connectable(str(sock), backend)
        except StartError:
            procs.stop(backend)
            raise
    port = free_port()
    conf = tmp / f"nginx-{stack.name}-{family}.conf"
    conf.write_text(nginx_config(stack, tmp, port, sock))
    nginx = procs.start(
        f"nginx for {stack.name}",
        [NGINX, "-e", str(logs / f"nginx-{stack.name}.stderr"), "-p", str(tmp), "-c", str(conf)],
        logs / f"nginx-{stack.name}-{family}.log",
        cwd=tmp,
    )
    try:
        wait_connectable(("127.0.0.1", port), nginx)
    except StartError:
        procs.stop(nginx)
        if backend is not None:
            procs.stop(backend)
        raise
    return Instance(stack, family, port, backend, nginx, sock)


def stop_instance(inst: Instance, procs: ProcessSet) -> None:
    procs.stop(inst.nginx)
    if inst.backend is not None:
        procs.stop(inst.backend)
