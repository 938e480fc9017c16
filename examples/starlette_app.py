"""A small Starlette app for fcgi-async: the same routes as ``flask_app.py``, async.

Run it behind nginx (see ``nginx.conf`` and ``demo.sh``)::

    fcgi-async starlette_app:app --app-dir examples --bind unix:/run/fcgi-async/starlette.sock

Mounted at ``/starlette/``, the app gets ``root_path="/starlette"`` from the SCRIPT_NAME nginx
sends, so ``url_for`` builds links under the mount. Uploads need ``python-multipart``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from html import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

#: The JSON API's store: a list in memory, per process (this is a demo).
ITEMS: list[dict[str, object]] = [{"id": 1, "name": "first item"}]


async def index(request: Request) -> Response:
    links = {
        "JSON API": request.url_for("list_items").path,
        "set a cookie": request.url_for("set_cookie").path + "?value=hello",
        "read cookies": request.url_for("read_cookies").path,
        "streaming": request.url_for("stream").path + "?n=5",
    }
    items = "".join(f'<li><a href="{href}">{name}</a></li>' for name, href in links.items())
    upload = request.url_for("upload").path
    mount = escape(request.scope.get("root_path", "") or "/")
    return HTMLResponse(
        "<!doctype html><title>Starlette on fcgi-async</title>"
        f"<h1>Hello from Starlette on fcgi-async</h1><p>Mounted at {mount}</p>"
        f"<ul>{items}</ul>"
        f'<form method="post" action="{upload}" enctype="multipart/form-data">'
        '<input type="file" name="file"> <button>Upload</button></form>'
    )


async def list_items(request: Request) -> Response:
    return JSONResponse({"items": ITEMS})


async def create_item(request: Request) -> Response:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return JSONResponse({"error": 'send JSON like {"name": "..."}'}, status_code=400)
    item = {"id": len(ITEMS) + 1, "name": data["name"]}
    ITEMS.append(item)
    return JSONResponse(item, status_code=201)


async def set_cookie(request: Request) -> Response:
    value = request.query_params.get("value", "hello")
    path = request.scope.get("root_path") or "/"
    response = JSONResponse({"set": {"demo": value, "visits": "1"}})
    response.set_cookie("demo", value, httponly=True, path=path)
    response.set_cookie("visits", "1", path=path)
    return response


async def read_cookies(request: Request) -> Response:
    return JSONResponse({"cookies": dict(request.cookies)})


async def upload(request: Request) -> Response:
    async with request.form() as form:
        file = form.get("file")
        if file is None or isinstance(file, str):
            return JSONResponse(
                {"error": "send a multipart form with a 'file' field"}, status_code=400
            )
        digest = hashlib.sha256()
        size = 0
        while chunk := await file.read(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"filename": file.filename, "size": size, "sha256": digest.hexdigest()})


async def stream(request: Request) -> Response:
    n = min(int(request.query_params.get("n", "5")), 100)
    delay = min(float(request.query_params.get("delay", "0.2")), 1.0)

    async def lines() -> AsyncIterator[str]:
        for i in range(1, n + 1):
            yield f"line {i} of {n}\n"
            if i < n:
                await asyncio.sleep(delay)

    # X-Accel-Buffering: no makes nginx pass each line on as it comes.
    return StreamingResponse(lines(), media_type="text/plain", headers={"X-Accel-Buffering": "no"})


app = Starlette(
    routes=[
        Route("/", index),
        Route("/api/items", list_items, methods=["GET"]),
        Route("/api/items", create_item, methods=["POST"], name="create_item"),
        Route("/cookie/set", set_cookie),
        Route("/cookie/read", read_cookies),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
    ]
)
