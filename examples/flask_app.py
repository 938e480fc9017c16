"""A small Flask app for fcgi-async: pages, a JSON API, cookies, uploads and streaming.

Run it behind nginx (see ``nginx.conf`` and ``demo.sh``)::

    fcgi-async flask_app:app --app-dir examples --bind unix:/run/fcgi-async/flask.sock

Mounted at ``/flask/`` through ``fastcgi_split_path_info``, Flask sees SCRIPT_NAME=/flask, so
``url_for`` builds links under the mount without any configuration here.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, make_response, request, stream_with_context, url_for

app = Flask(__name__)

#: The JSON API's store: a list in memory, per process (this is a demo).
ITEMS: list[dict[str, object]] = [{"id": 1, "name": "first item"}]


@app.get("/")
def index() -> str:
    links = {
        "JSON API": url_for("list_items"),
        "set a cookie": url_for("set_cookie", value="hello"),
        "read cookies": url_for("read_cookies"),
        "streaming": url_for("stream", n=5),
    }
    items = "".join(f'<li><a href="{href}">{name}</a></li>' for name, href in links.items())
    upload = url_for("upload")
    return (
        "<!doctype html><title>Flask on fcgi-async</title>"
        f"<h1>Hello from Flask on fcgi-async</h1><p>Mounted at {request.script_root or '/'}</p>"
        f"<ul>{items}</ul>"
        f'<form method="post" action="{upload}" enctype="multipart/form-data">'
        '<input type="file" name="file"> <button>Upload</button></form>'
    )


@app.get("/api/items")
def list_items() -> Response:
    return jsonify(items=ITEMS)


@app.post("/api/items")
def create_item() -> tuple[Response, int]:
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return jsonify(error='send JSON like {"name": "..."}'), 400
    item = {"id": len(ITEMS) + 1, "name": data["name"]}
    ITEMS.append(item)
    return jsonify(item), 201


@app.get("/cookie/set")
def set_cookie() -> Response:
    value = request.args.get("value", "hello")
    response = make_response(jsonify(set={"demo": value, "visits": "1"}))
    response.set_cookie("demo", value, httponly=True, path=request.script_root or "/")
    response.set_cookie("visits", "1", path=request.script_root or "/")
    return response


@app.get("/cookie/read")
def read_cookies() -> Response:
    return jsonify(cookies=dict(request.cookies))


@app.post("/upload")
def upload() -> tuple[Response, int] | Response:
    file = request.files.get("file")
    if file is None:
        return jsonify(error="send a multipart form with a 'file' field"), 400
    digest = hashlib.sha256()
    size = 0
    while chunk := file.stream.read(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return jsonify(filename=file.filename, size=size, sha256=digest.hexdigest())


@app.get("/stream")
def stream() -> Response:
    n = min(int(request.args.get("n", "5")), 100)
    delay = min(float(request.args.get("delay", "0.2")), 1.0)

    def lines() -> Iterator[str]:
        for i in range(1, n + 1):
            yield f"line {i} of {n}\n"
            if i < n:
                time.sleep(delay)

    # X-Accel-Buffering: no makes nginx pass each line on as it comes.
    return Response(
        stream_with_context(lines()),
        mimetype="text/plain",
        headers={"X-Accel-Buffering": "no"},
    )
