"""``python -m fcgi_async`` is the ``fcgi-async`` command."""

from .cli import run

run()
