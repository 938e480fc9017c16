"""The one loader of the optional C accelerators (docs/architecture.md, C accelerators).

Each accelerated function has a pure-Python reference next to the selector that picks it
(``select_*`` in :mod:`fcgi_async.protocol.records` and :mod:`fcgi_async.adapters.asgi`). The
convention is one: a selector returns the C function when it is wanted and built, else the
reference, which does the same job (never a stub that declines). A C function that cannot
handle an unusual input itself says so by returning None, and its caller then runs the
reference for that input; the ASGI scope and header-block builders do.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: Set to a non-empty value to run every pure-Python reference (to test or debug them).
NO_SPEEDUPS_ENV = "FCGI_ASYNC_NO_SPEEDUPS"


def speedups_wanted() -> bool:
    """False when :data:`NO_SPEEDUPS_ENV` is set: the references everywhere."""
    return not os.environ.get(NO_SPEEDUPS_ENV)


def load_speedups(name: str, wanted: bool) -> ModuleType | None:
    """The compiled accelerator module ``name``; None when not ``wanted`` or not built.

    pip builds the extensions when a compiler is present; without one the package works on
    the references alone.
    """
    if not wanted:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


__all__ = ["NO_SPEEDUPS_ENV", "load_speedups", "speedups_wanted"]
