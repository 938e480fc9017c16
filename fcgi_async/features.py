"""The features a Server's caller puts in front of the application: status and ping
endpoints, the access log.

The server package imports no feature (imports point one way: protocol, then server, then
features, then runner and supervisor, then cli; docs/architecture.md). Its callers pass
:func:`install_features` as the Server's ``wrap``.
"""

from __future__ import annotations

from .logs import AccessLogApp, LoggedRequestHandle
from .server.state import ServerState
from .status import StatusApp
from .types import Application


def install_features(app: Application, state: ServerState) -> Application:
    """Return ``app`` with the features ``state.config`` enables in front of it.

    The status and ping endpoints (``status_path``, ``ping_path``) answer their paths and
    pass the rest on; the access log (``access_log``) is outermost, so that it logs the
    status endpoints too, and makes every request handle a :class:`LoggedRequestHandle`.
    Nothing configured: ``app`` itself, plain handles, no cost per request.
    """
    config = state.config
    if config.status_path or config.ping_path:
        app = state.status = StatusApp(app, state)
    if config.access_log is not None:
        state.handle_class = LoggedRequestHandle
        app = AccessLogApp(app, state)
    return app


__all__ = ["install_features"]
