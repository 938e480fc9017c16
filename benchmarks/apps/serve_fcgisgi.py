"""Run an app under fcgisgi (PyPI) on a unix socket: ``serve_fcgisgi.py asgi|wsgi MOD:ATTR PATH``.

fcgisgi has no command line of its own; this is the documented ``run_*_server`` call.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys


def main() -> None:
    interface, target, path = sys.argv[1:4]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    module, _, attr = target.partition(":")
    app = getattr(importlib.import_module(module), attr)
    import fcgisgi

    run = fcgisgi.run_asgi_server if interface == "asgi" else fcgisgi.run_wsgi_server
    try:  # the same event loop the other asyncio servers get
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(app, bind_address=path))


if __name__ == "__main__":
    main()
