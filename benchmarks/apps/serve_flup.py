"""Run a WSGI app under flup (PyPI) on a unix socket: ``serve_flup.py MOD:ATTR PATH``.

flup has no command line of its own; this is its documented ``WSGIServer(...).run()``.
"""

from __future__ import annotations

import importlib
import os
import sys


def main() -> None:
    target, path = sys.argv[1:3]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr)
    from flup.server.fcgi import WSGIServer

    WSGIServer(app, bindAddress=path).run()


if __name__ == "__main__":
    main()
