"""Load ``module:attr`` applications and pick their interface."""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any


class AppLoadError(Exception):
    """The application cannot be loaded; the message is one line for the user."""


def import_from_string(spec: str, *, app_dir: str | None = None) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted) with ``app_dir`` first on sys.path.

    Raises:
        AppLoadError: bad syntax, the module is missing, or the attribute is.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f'application {spec!r} must look like "module:attribute"')
    if app_dir is not None and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (
            exc.name
            and module_name.startswith(exc.name)
            and (exc.name == module_name or module_name.startswith(exc.name + "."))
        ):
            raise AppLoadError(f"could not import module {module_name!r}: {exc}") from exc
        raise  # The app's own import failed: show its traceback, that is the real error.
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def looks_like_asgi(app: Any) -> bool:
    """True when ``app`` is an ASGI callable (a coroutine function or async ``__call__``)."""
    if inspect.isclass(app):
        return False  # Instantiating a class is not serving a request.
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - we need the bound method itself
    return inspect.iscoroutinefunction(call)
