"""One typed, frozen configuration for the server (after hypercorn's Config, without its sins).

Every field has a unit-suffixed name, a default and a validation rule. The CLI builds a Config
from flags > ``FCGI_ASYNC_*`` environment variables > the ``--config`` TOML file (whose keys are
these field names, see :mod:`fcgi_async.configfile`) > defaults; library code only reads it and
never configures logging or exits the process.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from .protocol import Limits, Role
from .protocol.limits import (
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MAX_BODY_BUFFER_BYTES,
    DEFAULT_MAX_CONNECTION_BUFFER_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PARAMS_BYTES,
    DEFAULT_MAX_PARAMS_PAIRS,
    DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    DEFAULT_RECORD_TIMEOUT_S,
    DEFAULT_SEND_TIMEOUT_S,
)

#: php-fpm's default listen address; loopback only, never every interface (DESIGN.md §6).
DEFAULT_BIND = "127.0.0.1:9000"
#: Worker threads for WSGI apps (each blocks on I/O like a php-fpm child would).
DEFAULT_THREADS = 10
#: Seconds running requests get to finish after SIGTERM/SIGINT before they are cancelled.
DEFAULT_GRACEFUL_TIMEOUT_S = 30.0
#: Listen backlog; php-fpm's default (``listen.backlog = 511``).
DEFAULT_BACKLOG = 511
#: Process-manager defaults, php-fpm's (``pm.max_children = 5``, ``pm.start_servers = 2``,
#: ``pm.min_spare_servers = 1``, ``pm.max_spare_servers = 3``,
#: ``pm.process_idle_timeout = 10s``).
DEFAULT_PM_MAX_CHILDREN = 5
DEFAULT_PM_START_SERVERS = 2
DEFAULT_PM_MIN_SPARE = 1
DEFAULT_PM_MAX_SPARE = 3
DEFAULT_PM_IDLE_TIMEOUT_S = 10.0
#: Seconds without a heartbeat before a worker counts as hung and is killed (gunicorn's 30).
DEFAULT_WORKER_TIMEOUT_S = 30.0
#: Crash-loop detection (php-fpm's emergency_restart_threshold/interval, built in): this many
#: unexpected worker exits ...
CRASH_LIMIT = 5
#: ... within this many seconds stop the respawning (a SIGHUP reload starts it again). Here,
#: not in the supervisor, so that ``--help`` can quote them on any platform.
CRASH_WINDOW_S = 10.0
#: What the ping path answers (php-fpm's ping.response).
DEFAULT_PING_RESPONSE = "pong"
#: The status page's pool name (php-fpm's default pool is "www").
DEFAULT_POOL_NAME = "www"
#: php-fpm's access.format default (``%R - %u %t "%m %r%Q%q" %s``) plus the response size and
#: the duration in milliseconds (see :mod:`fcgi_async.logs` for the codes).
DEFAULT_ACCESS_LOG_FORMAT = '%R - %u %t "%m %U%Q%q" %s %b %{milliseconds}d'

Interface = Literal["auto", "asgi", "wsgi"]
LoopName = Literal["auto", "asyncio", "uvloop"]
LifespanMode = Literal["auto", "on", "off"]
ProcessManager = Literal["static", "dynamic", "ondemand"]

_ROLE_NAMES = {"responder": Role.RESPONDER, "authorizer": Role.AUTHORIZER, "filter": Role.FILTER}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the setting and the value."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to know. See ``fcgi-async --help`` for each field."""

    app: str = ""
    bind: tuple[str, ...] = (DEFAULT_BIND,)
    interface: Interface = "auto"
    factory: bool = False
    app_dir: str = "."
    threads: int = DEFAULT_THREADS
    loop: LoopName = "auto"
    lifespan: LifespanMode = "auto"
    root_path: str | None = None
    roles: tuple[str, ...] = ("responder", "authorizer", "filter")
    multiplex: bool = True
    max_params_bytes: int = DEFAULT_MAX_PARAMS_BYTES
    max_params_pairs: int = DEFAULT_MAX_PARAMS_PAIRS
    max_requests_per_connection: int = DEFAULT_MAX_REQUESTS_PER_CONNECTION
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_body_buffer_bytes: int = DEFAULT_MAX_BODY_BUFFER_BYTES
    #: Memory one connection may hold (unfinished params, buffered bodies, unsent output);
    #: ``max_body_buffer_bytes`` is the bodies' share of it.
    max_connection_buffer_bytes: int = DEFAULT_MAX_CONNECTION_BUFFER_BYTES
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    record_timeout_s: float = DEFAULT_RECORD_TIMEOUT_S
    #: Seconds a connection's output may stay unsent before the connection is aborted.
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S
    #: php-fpm's request_terminate_timeout: a request running longer is ended (504, or a
    #: broken connection once its response started) and its app told; 0 = never.
    request_timeout_s: float = 0
    #: php-fpm's request_slowlog_timeout: a request running longer gets one slow-log entry
    #: with the Python stack serving it; 0 = no slow log.
    slowlog_timeout_s: float = 0
    #: php-fpm's slowlog: the file slow-log entries are appended to; None: the error log.
    slowlog: str | None = None
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S
    backlog: int = DEFAULT_BACKLOG
    socket_mode: int | None = None
    #: Owner and group given to the unix socket files we create (names or numeric ids;
    #: php-fpm's listen.owner and listen.group). None leaves them to whoever we run as.
    socket_owner: str | None = None
    socket_group: str | None = None
    #: Written with our pid once the sockets are bound (by the supervisor when there is
    #: one), removed at a clean exit.
    pid_file: str | None = None
    #: Who may connect over TCP (FCGI_WEB_SERVER_ADDRS, php-fpm's listen.allowed_clients):
    #: IP addresses or networks; empty means whoever can reach the socket. Unix sockets are
    #: guarded by their file mode instead.
    allowed_clients: tuple[str, ...] = ()
    log_level: str = "info"
    workers: int = 1
    pm: ProcessManager = "static"
    pm_max_children: int = DEFAULT_PM_MAX_CHILDREN
    pm_start_servers: int = DEFAULT_PM_START_SERVERS
    pm_min_spare: int = DEFAULT_PM_MIN_SPARE
    pm_max_spare: int = DEFAULT_PM_MAX_SPARE
    pm_idle_timeout_s: float = DEFAULT_PM_IDLE_TIMEOUT_S
    max_requests: int = 0
    max_requests_jitter: int = 0
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S
    #: php-fpm's pm.status_path and ping.path: answered by the server itself, before the app,
    #: for allowed clients only (see :mod:`fcgi_async.status`). None: passed to the app.
    status_path: str | None = None
    ping_path: str | None = None
    ping_response: str = DEFAULT_PING_RESPONSE
    #: The ``pool`` field of the status page (php-fpm's pool name).
    pool_name: str = DEFAULT_POOL_NAME
    #: Access log file ("-": standard output); None: no access log (and no cost per request).
    #: The lines go to the ``fcgi_async.access`` logger; the CLI opens the file for it
    #: (:func:`fcgi_async.logs.configure_logging`), a library user attaches a handler.
    access_log: str | None = None
    #: The access log line, in the %-codes of :mod:`fcgi_async.logs`.
    access_log_format: str = DEFAULT_ACCESS_LOG_FORMAT
    #: The server's own log ("-": standard error, the default).
    error_log: str | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        positive = (
            "threads",
            "max_params_bytes",
            "max_params_pairs",
            "max_requests_per_connection",
            "max_connections",
            "max_body_buffer_bytes",
            "max_connection_buffer_bytes",
            "backlog",
            "workers",
            "pm_max_children",
            "pm_start_servers",
            "pm_min_spare",
            "pm_max_spare",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("max_requests", "max_requests_jitter"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number of at least 0, got {value!r}")
        for name in (
            "keepalive_timeout_s",
            "record_timeout_s",
            "send_timeout_s",
            "graceful_timeout_s",
            "pm_idle_timeout_s",
            "worker_timeout_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a number of seconds above 0, got {value!r}")
        if self.max_body_buffer_bytes + self.max_params_bytes > self.max_connection_buffer_bytes:
            # The bodies' share plus one request's params must fit: a web server that sends
            # one request at a time is then never closed for its params.
            raise ConfigError(
                "max_connection_buffer_bytes must hold max_body_buffer_bytes plus"
                f" max_params_bytes, got {self.max_connection_buffer_bytes} <"
                f" {self.max_body_buffer_bytes} + {self.max_params_bytes}"
            )
        for name in ("request_timeout_s", "slowlog_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ConfigError(f"{name} must be 0 (off) or a number of seconds, got {value!r}")
        if self.slowlog is not None and (not isinstance(self.slowlog, str) or not self.slowlog):
            raise ConfigError(f"slowlog must be a file path, got {self.slowlog!r}")
        if not self.bind:
            raise ConfigError("at least one bind address is needed")
        for role in self.roles:
            if role not in _ROLE_NAMES:
                raise ConfigError(f"unknown role {role!r}: choose from {', '.join(_ROLE_NAMES)}")
        if self.socket_mode is not None and not 0 <= self.socket_mode <= 0o777:
            raise ConfigError(f"socket_mode must be between 000 and 777, got {self.socket_mode:o}")
        for name in ("socket_owner", "socket_group", "pid_file"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        for client in self.allowed_clients:
            try:
                ipaddress.ip_network(client, strict=False)
            except ValueError:
                raise ConfigError(
                    f"allowed_clients: {client!r} is not an IP address or network"
                ) from None
        self._check_process_manager()
        self._check_operations()

    def _check_operations(self) -> None:
        for name in ("status_path", "ping_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.startswith("/")):
                raise ConfigError(f"{name} must be a path starting with '/', got {value!r}")
        if self.status_path is not None and self.status_path == self.ping_path:
            raise ConfigError(f"status_path and ping_path are both {self.status_path!r}")
        for name in ("access_log", "error_log"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be a file path or '-', got {value!r}")
        from .logs import compile_access_format  # the codes live with the access log

        try:
            compile_access_format(self.access_log_format)
        except ValueError as exc:
            raise ConfigError(f"access_log_format: {exc}") from None

    def _check_process_manager(self) -> None:
        if self.pm not in ("static", "dynamic", "ondemand"):
            raise ConfigError(f"unknown pm {self.pm!r}: choose from static, dynamic, ondemand")
        if self.pm != "dynamic":
            return
        # php-fpm's own rules for pm = dynamic.
        if not self.pm_min_spare <= self.pm_max_spare <= self.pm_max_children:
            raise ConfigError(
                "pm dynamic needs pm_min_spare <= pm_max_spare <= pm_max_children, got "
                f"{self.pm_min_spare}, {self.pm_max_spare}, {self.pm_max_children}"
            )
        if not self.pm_min_spare <= self.pm_start_servers <= self.pm_max_spare:
            raise ConfigError(
                "pm dynamic needs pm_start_servers between pm_min_spare and pm_max_spare, got "
                f"{self.pm_start_servers} (spare {self.pm_min_spare}..{self.pm_max_spare})"
            )

    @property
    def supervised(self) -> bool:
        """True when a supervisor process forks workers instead of serving inline.

        That is the case with several workers, a dynamic or ondemand process manager, or
        ``max_requests`` (recycling a worker needs someone to start its replacement).
        """
        return self.workers > 1 or self.pm != "static" or self.max_requests > 0

    def replace(self, **changes: object) -> Config:
        """Return a copy with ``changes`` applied (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def limits(self) -> Limits:
        """The protocol-layer bounds this configuration sets."""
        return Limits(
            max_params_bytes=self.max_params_bytes,
            max_params_pairs=self.max_params_pairs,
            max_requests_per_connection=self.max_requests_per_connection,
        )

    @property
    def allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """``allowed_clients`` parsed; empty when every client is allowed."""
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.allowed_clients)

    @property
    def served_roles(self) -> tuple[Role, ...]:
        """The FastCGI roles to serve; others are refused with UNKNOWN_ROLE."""
        return tuple(_ROLE_NAMES[r] for r in self.roles)

    @property
    def root_path_bytes(self) -> bytes | None:
        """``root_path`` as the latin-1 bytes the CGI layer compares with."""
        return None if self.root_path is None else self.root_path.encode("latin-1")
