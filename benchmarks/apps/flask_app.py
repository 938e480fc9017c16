"""The 13-byte hello as a Flask app: what a WSGI user actually runs."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.route("/hello")
def hello() -> tuple[str, int, dict[str, str]]:
    return "Hello, world!", 200, {"Content-Type": "text/plain"}
