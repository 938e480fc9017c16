"""Serve an existing PHP application under ``/legacy/`` from a Starlette app.

The PHP side is ``examples/legacy_php`` behind a php-fpm pool. Start one in the foreground
(``-R`` lets it run as root; otherwise leave it out and drop nothing else)::

    cat > /tmp/legacy-fpm.conf <<'CONF'
    [global]
    error_log = /dev/stderr
    daemonize = no
    [legacy]
    listen = /tmp/legacy-php.sock
    pm = static
    pm.max_children = 4
    CONF
    php-fpm8.2 -F -R -y /tmp/legacy-fpm.conf

then the Python app with any ASGI server (``pip install uvicorn``)::

    uvicorn php_mount:app --app-dir examples --port 8000

and open http://127.0.0.1:8000/ (Python) and http://127.0.0.1:8000/legacy/ (PHP: every path
below it runs ``index.php``, the front controller). ``PHP_FPM`` and ``LEGACY_ROOT`` override
the socket and the PHP directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from fcgi_async.client import FastCGIApp

PHP_FPM = os.environ.get("PHP_FPM", "unix:/tmp/legacy-php.sock")
LEGACY_ROOT = os.environ.get("LEGACY_ROOT", str(Path(__file__).resolve().parent / "legacy_php"))

legacy = FastCGIApp(PHP_FPM, document_root=LEGACY_ROOT, index="index.php")


async def home(request: Request) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><title>Starlette</title><h1>Hello from Python</h1>"
        '<p>The old pages live at <a href="/legacy/">/legacy/</a>.</p>'
    )


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Starlette does not pass lifespan events to mounted apps: close the pool here.
    yield
    await legacy.aclose()


app = Starlette(routes=[Route("/", home), Mount("/legacy", app=legacy)], lifespan=lifespan)
