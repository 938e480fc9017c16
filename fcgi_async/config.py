"""One typed, frozen configuration for the server (after hypercorn's Config, without its sins).

Every field has a unit-suffixed name, a default and a validation rule. The CLI builds a Config
from flags > ``FCGI_ASYNC_*`` environment variables > the ``--config`` TOML file (whose keys are
these field names, see :mod:`fcgi_async.configfile`) > defaults; library code only reads it and
never configures logging or exits the process.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from .netaddr import Network, parse_network, parse_networks
from .protocol import Limits, Role
from .protocol.limits import (
    CEILING_MAX_PARAMS_BYTES,
    CEILING_MAX_PARAMS_PAIRS,
    CEILING_MAX_REQUESTS_PER_CONNECTION,
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MAX_BODY_BUFFER_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PARAMS_BYTES,
    DEFAULT_MAX_PARAMS_PAIRS,
    DEFAULT_MAX_REQUESTS_PER_CONNECTION,
    DEFAULT_RECORD_TIMEOUT_S,
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

#: The longest any time setting may be (a week). Longer is no timeout a deployment means, and
#: NaN or infinity would silently switch a protection off; 0 turns off the settings that can be.
MAX_SECONDS = 7 * 24 * 3600.0
#: Processes one supervisor may run (--workers, --pm-*): well past any machine's cores; a typo
#: such as 40000 should fail at start-up, not fork until the machine stops.
MAX_PROCESSES = 4096
#: Threads one worker may run WSGI apps on.
MAX_THREADS = 1024
#: Connections one process may hold: the usual kernel ceiling of open files (fs.nr_open).
MAX_CONNECTIONS = 1024 * 1024
#: Buffered request body one connection may hold before reading pauses.
MAX_BODY_BUFFER_BYTES = 1024 * 1024 * 1024
#: The kernel caps listen queues at net.core.somaxconn, at most 65535 on Linux.
MAX_BACKLOG = 0xFFFF
#: Requests before a worker is recycled (--max-requests and its jitter); 0 is never.
MAX_REQUESTS = 1_000_000_000

#: Whole-number settings and their inclusive bounds; each is checked when a Config is made,
#: whatever set it (flag, FCGI_ASYNC_* variable, config file, library code).
_WHOLE_NUMBERS: dict[str, tuple[int, int]] = {
    "threads": (1, MAX_THREADS),
    "max_params_bytes": (1, CEILING_MAX_PARAMS_BYTES),
    "max_params_pairs": (1, CEILING_MAX_PARAMS_PAIRS),
    "max_requests_per_connection": (1, CEILING_MAX_REQUESTS_PER_CONNECTION),
    "max_connections": (1, MAX_CONNECTIONS),
    "max_body_buffer_bytes": (1, MAX_BODY_BUFFER_BYTES),
    "backlog": (1, MAX_BACKLOG),
    "workers": (1, MAX_PROCESSES),
    "pm_max_children": (1, MAX_PROCESSES),
    "pm_start_servers": (1, MAX_PROCESSES),
    "pm_min_spare": (1, MAX_PROCESSES),
    "pm_max_spare": (1, MAX_PROCESSES),
    "max_requests": (0, MAX_REQUESTS),
    "max_requests_jitter": (0, MAX_REQUESTS),
}
#: Time settings in seconds; True where 0 means "off".
_SECONDS: dict[str, bool] = {
    "keepalive_timeout_s": False,
    "record_timeout_s": False,
    "graceful_timeout_s": False,
    "pm_idle_timeout_s": False,
    "worker_timeout_s": False,
    "request_timeout_s": True,
    "slowlog_timeout_s": True,
}

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
    keepalive_timeout_s: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    record_timeout_s: float = DEFAULT_RECORD_TIMEOUT_S
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
        for name, (low, high) in _WHOLE_NUMBERS.items():
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise ConfigError(
                    f"{name} must be a whole number from {low} to {high:,}, got {value!r}"
                )
        for name, off in _SECONDS.items():
            value = getattr(self, name)
            # NaN compares false with everything: "not value > 0" would let it through and
            # silently switch the protection off; isfinite() refuses NaN and infinities.
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
                or (value == 0 and not off)
                or value > MAX_SECONDS
            ):
                what = "0 (off) or a number of seconds" if off else "a number of seconds above 0"
                raise ConfigError(f"{name} must be {what} up to {MAX_SECONDS:,.0f}, got {value!r}")
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
                parse_network(client)
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
    def allowed_networks(self) -> tuple[Network, ...]:
        """``allowed_clients`` parsed (IPv4-mapped ones as IPv4); empty: every client allowed."""
        return parse_networks(self.allowed_clients)

    @property
    def served_roles(self) -> tuple[Role, ...]:
        """The FastCGI roles to serve; others are refused with UNKNOWN_ROLE."""
        return tuple(_ROLE_NAMES[r] for r in self.roles)

    @property
    def root_path_bytes(self) -> bytes | None:
        """``root_path`` as the latin-1 bytes the CGI layer compares with."""
        return None if self.root_path is None else self.root_path.encode("latin-1")
