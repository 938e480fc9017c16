"""One typed, frozen configuration for the server (after hypercorn's Config, without its sins).

Every field has a unit-suffixed name and is declared once, with
:func:`~fcgi_async.settings.setting`: its default, help, kind, bounds and checks. The CLI
builds a Config from flags > ``FCGI_ASYNC_*`` environment variables > the ``--config`` TOML
file (whose keys are these field names, see :mod:`fcgi_async.configfile`) > defaults, all
generated from those declarations; library code only reads it and never configures logging
or exits the process.

``python -m fcgi_async.config --readme README.md`` rewrites the README's option table.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .accessformat import compile_access_format
from .netaddr import Network, parse_network, parse_networks
from .protocol import Limits, Role
from .protocol.limits import (
    CEILING_MAX_PARAMS_BYTES,
    CEILING_MAX_PARAMS_PAIRS,
    CEILING_MAX_REQUESTS_PER_CONNECTION,
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
from .settings import MAX_SECONDS as MAX_SECONDS
from .settings import Group, check_values, options_table, setting, splice_readme

#: php-fpm's default listen address; loopback only, never every interface (docs/architecture.md,
#: Security boundary).
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

#: Processes one supervisor may run (--workers, --pm-*): well past any machine's cores; a typo
#: such as 40000 should fail at start-up, not fork until the machine stops.
MAX_PROCESSES = 4096
#: Threads one worker may run WSGI apps on.
MAX_THREADS = 1024
#: Connections one process may hold: the usual kernel ceiling of open files (fs.nr_open).
MAX_CONNECTIONS = 1024 * 1024
#: Buffered request body one connection may hold before reading pauses.
MAX_BODY_BUFFER_BYTES = 1024 * 1024 * 1024
#: Memory one connection may hold: room for the largest body buffer plus the largest params.
MAX_CONNECTION_BUFFER_BYTES = 2 * 1024 * 1024 * 1024
#: The kernel caps listen queues at net.core.somaxconn, at most 65535 on Linux.
MAX_BACKLOG = 0xFFFF
#: Requests before a worker is recycled (--max-requests and its jitter); 0 is never.
MAX_REQUESTS = 1_000_000_000

Interface = Literal["auto", "asgi", "wsgi"]
LoopName = Literal["auto", "asyncio", "uvloop"]
LifespanMode = Literal["auto", "on", "off"]
ProcessManager = Literal["static", "dynamic", "ondemand"]

_ROLE_NAMES = {"responder": Role.RESPONDER, "authorizer": Role.AUTHORIZER, "filter": Role.FILTER}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the setting and the value."""


# ------------------------------------------------------------------------- field checks
# Each returns the error message for an invalid value, or None (see settings.Check).


def _file_path(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        return f"{name} must be a file path, got {value!r}"
    return None


def _non_empty(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        return f"{name} must be a non-empty string, got {value!r}"
    return None


def _log_path(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        return f"{name} must be a file path or '-', got {value!r}"
    return None


def _url_path(name: str, value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.startswith("/")):
        return f"{name} must be a path starting with '/', got {value!r}"
    return None


def _binds(name: str, value: tuple[str, ...]) -> str | None:
    return None if value else "at least one bind address is needed"


def _roles(name: str, value: tuple[str, ...]) -> str | None:
    for role in value:
        if role not in _ROLE_NAMES:
            return f"unknown role {role!r}: choose from {', '.join(_ROLE_NAMES)}"
    return None


def _mode(name: str, value: int | None) -> str | None:
    if value is not None and not 0 <= value <= 0o777:
        return f"socket_mode must be between 000 and 777, got {value:o}"
    return None


def _networks(name: str, value: tuple[str, ...]) -> str | None:
    for client in value:
        try:
            parse_network(client)
        except ValueError:
            return f"allowed_clients: {client!r} is not an IP address or network"
    return None


def _process_manager(name: str, value: str) -> str | None:
    if value not in ("static", "dynamic", "ondemand"):
        return f"unknown pm {value!r}: choose from static, dynamic, ondemand"
    return None


def _access_format(name: str, value: str) -> str | None:
    try:
        compile_access_format(value)
    except ValueError as exc:
        return f"access_log_format: {exc}"
    return None


# ------------------------------------------------------------------------- --help's headings
# Each setting names its heading; a new heading also goes into GROUPS.

LISTENING = Group("listening")
APPLICATION = Group("application")
RUNTIME = Group("runtime")
WORKERS = Group(
    "workers (a supervisor process forks workers that share the listening sockets)",
    "--workers above 1, --pm dynamic|ondemand or --max-requests start a supervisor;\n"
    "otherwise the server runs inline. Signals to the supervisor: TERM/INT/QUIT graceful\n"
    "stop, HUP/USR2 graceful reload (new workers first), TTIN/TTOU one worker more/less,\n"
    "USR1 reopen log files. Dead workers are respawned with a back-off; "
    f"{CRASH_LIMIT} crashes\nwithin {CRASH_WINDOW_S:g} s stop the respawning with an "
    "error saying why (SIGHUP tries again).",
)
TIMEOUTS = Group(
    "request timeout and slow log (checked once a second)",
    "A request over --request-timeout gets a 504 (or a broken connection once its\n"
    "response started); ASGI code is cancelled, a WSGI thread that runs on is reported\n"
    "with its stack and its worker recycled (inline: a restart is recommended).",
)
OPERATIONS = Group(
    "status, ping and logs",
    "The status and ping paths are answered before the app, only for end users\n"
    "(REMOTE_ADDR) within --allowed-clients (loopback when that is unset); others get\n"
    "403. Status: ?json, ?openmetrics, ?full as php-fpm. SIGUSR1 reopens the log files.",
)
LIMITS = Group("limits (each protects memory or sockets from a bad peer)")
#: The headings in ``--help`` order (after the CLI's own "configuration file").
GROUPS = (LISTENING, APPLICATION, RUNTIME, WORKERS, TIMEOUTS, OPERATIONS, LIMITS)

_ROLES_DEFAULT = ("responder", "authorizer", "filter")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs to know, one declared field per setting.

    Each field's :func:`~fcgi_async.settings.setting` is its only declaration: the flag, the
    ``FCGI_ASYNC_*`` variable, the config file key, ``--help``, ``--check-config`` and the
    README's option table are generated from it, and every value is checked against it when a
    Config is made, whoever made it. Field order is ``--help``'s order within each heading.
    """

    app: str = setting(
        "",
        "the application, e.g. myproject.wsgi:app (or app = in the config file)",
        positional=True,
        metavar="MODULE:ATTR",
    )
    bind: tuple[str, ...] = setting(
        (DEFAULT_BIND,),
        "HOST:PORT, [V6]:PORT, unix:PATH or fd://N; repeat for several. Default "
        f"{DEFAULT_BIND}; when a web server passes a listening socket as fd 0 it is used instead.",
        LISTENING,
        kind="list",
        short="-b",
        metavar="ADDR",
        check=_binds,
    )
    interface: Interface = setting(
        "auto",
        "app interface; auto detects async callables as ASGI (%(default)s)",
        APPLICATION,
        choices=("auto", "asgi", "wsgi"),
    )
    factory: bool = setting(
        False, "MODULE:ATTR is a function that returns the app", APPLICATION, kind="bool"
    )
    app_dir: str = setting(
        ".", "directory put first on sys.path to import the app (%(default)s)", APPLICATION
    )
    threads: int = setting(
        DEFAULT_THREADS,
        "threads running WSGI app code at once (%(default)s)",
        APPLICATION,
        kind="int",
        bounds=(1, MAX_THREADS),
    )
    loop: LoopName = setting(
        "auto",
        "event loop; auto uses uvloop when installed (%(default)s)",
        RUNTIME,
        choices=("auto", "asyncio", "uvloop"),
    )
    lifespan: LifespanMode = setting(
        "auto",
        "ASGI lifespan: auto runs it if the app supports it (%(default)s)",
        APPLICATION,
        choices=("auto", "on", "off"),
    )
    root_path: str | None = setting(
        None,
        "the URL prefix the app is mounted at (SCRIPT_NAME); default: "
        "as the web server splits SCRIPT_NAME/PATH_INFO, else the root",
        APPLICATION,
        metavar="PATH",
    )
    roles: tuple[str, ...] = setting(
        _ROLES_DEFAULT,
        "FastCGI roles served, others get UNKNOWN_ROLE (%(default)s)",
        APPLICATION,
        kind="csv",
        lower=True,
        check=_roles,
    )
    multiplex: bool = setting(
        True,
        "refuse a 2nd concurrent request on a connection (CANT_MPX_CONN)",
        LIMITS,
        kind="bool",
        flag="--no-multiplex",
        negate=True,
    )
    max_connections: int = setting(
        DEFAULT_MAX_CONNECTIONS,
        "connections per process; more are closed (%(default)s)",
        LIMITS,
        kind="int",
        bounds=(1, MAX_CONNECTIONS),
    )
    max_requests_per_connection: int = setting(
        DEFAULT_MAX_REQUESTS_PER_CONNECTION,
        "concurrent requests on one connection; more get OVERLOADED (%(default)s)",
        LIMITS,
        kind="int",
        bounds=(1, CEILING_MAX_REQUESTS_PER_CONNECTION),
    )
    max_params_bytes: int = setting(
        DEFAULT_MAX_PARAMS_BYTES,
        "bytes of CGI params per request (%(default)s)",
        LIMITS,
        kind="int",
        bounds=(1, CEILING_MAX_PARAMS_BYTES),
    )
    max_params_pairs: int = setting(
        DEFAULT_MAX_PARAMS_PAIRS,
        "CGI params per request (%(default)s)",
        LIMITS,
        kind="int",
        bounds=(1, CEILING_MAX_PARAMS_PAIRS),
    )
    max_body_buffer_bytes: int = setting(
        DEFAULT_MAX_BODY_BUFFER_BYTES,
        "request body bytes buffered per connection before reading pauses (%(default)s)",
        LIMITS,
        kind="int",
        bounds=(1, MAX_BODY_BUFFER_BYTES),
    )
    #: Memory one connection may hold (unfinished params, buffered bodies, unsent output);
    #: ``max_body_buffer_bytes`` is the bodies' share of it.
    max_connection_buffer_bytes: int = setting(
        DEFAULT_MAX_CONNECTION_BUFFER_BYTES,
        "memory per connection: unfinished params, buffered bodies and unsent output; params"
        " beyond it close the connection; worst case per process is --max-connections times"
        " this (%(default)s)",
        LIMITS,
        kind="int",
        bounds=(1, MAX_CONNECTION_BUFFER_BYTES),
    )
    keepalive_timeout_s: float = setting(
        DEFAULT_KEEPALIVE_TIMEOUT_S,
        "idle keep-alive connection lifetime; keep above nginx's 60 s (%(default)s)",
        LIMITS,
        kind="seconds",
        metavar="S",
    )
    record_timeout_s: float = setting(
        DEFAULT_RECORD_TIMEOUT_S,
        "seconds a half-received record may wait for the rest (%(default)s)",
        LIMITS,
        kind="seconds",
        metavar="S",
    )
    #: Seconds a connection's output may stay unsent before the connection is aborted.
    send_timeout_s: float = setting(
        DEFAULT_SEND_TIMEOUT_S,
        "seconds output may stay unread by the web server (writing paused, or a close waiting"
        " to flush) before the connection is aborted and its slot freed (%(default)s)",
        LIMITS,
        kind="seconds",
        metavar="S",
    )
    #: php-fpm's request_terminate_timeout: a request running longer is ended (504, or a
    #: broken connection once its response started) and its app told; 0 = never.
    request_timeout_s: float = setting(
        0,
        "end requests running longer, php-fpm's request_terminate_timeout; 0 = off (%(default)s)",
        TIMEOUTS,
        kind="seconds",
        off=True,
        metavar="S",
    )
    #: php-fpm's request_slowlog_timeout: a request running longer gets one slow-log entry
    #: with the Python stack serving it; 0 = no slow log.
    slowlog_timeout_s: float = setting(
        0,
        "log the Python stack of requests running longer, once each, php-fpm's "
        "request_slowlog_timeout; 0 = off (%(default)s)",
        TIMEOUTS,
        kind="seconds",
        off=True,
        metavar="S",
    )
    #: php-fpm's slowlog: the file slow-log entries are appended to; None: the error log.
    slowlog: str | None = setting(
        None,
        "file the slow log is appended to, php-fpm's slowlog (default: the error log)",
        TIMEOUTS,
        metavar="PATH",
        empty_is_none=True,
        check=_file_path,
    )
    graceful_timeout_s: float = setting(
        DEFAULT_GRACEFUL_TIMEOUT_S,
        "seconds running requests get at shutdown (%(default)s)",
        RUNTIME,
        kind="seconds",
        metavar="S",
    )
    socket_mode: int | None = setting(
        None,
        "permissions of unix sockets we create, e.g. 660 (default: umask)",
        LISTENING,
        kind="octal",
        metavar="MODE",
        check=_mode,
    )
    #: Owner and group given to the unix socket files we create (names or numeric ids;
    #: php-fpm's listen.owner and listen.group). None leaves them to whoever we run as.
    socket_owner: str | None = setting(
        None,
        "owner of unix sockets we create, a name or uid (php-fpm's listen.owner)",
        LISTENING,
        kind="id",
        metavar="USER",
        check=_non_empty,
    )
    socket_group: str | None = setting(
        None,
        "group of unix sockets we create, a name or gid (php-fpm's listen.group)",
        LISTENING,
        kind="id",
        metavar="GROUP",
        check=_non_empty,
    )
    #: Written with our pid once the sockets are bound (by the supervisor when there is
    #: one), removed at a clean exit.
    pid_file: str | None = setting(
        None,
        "write our pid here once listening (the supervisor's with workers); removed at "
        "exit; refuses to start while it names a running process",
        LISTENING,
        metavar="PATH",
        check=_non_empty,
    )
    backlog: int = setting(
        DEFAULT_BACKLOG,
        "listen queue size of every listener, sockets from systemd or fd 0 included, "
        "php-fpm's listen.backlog (%(default)s)",
        LISTENING,
        kind="int",
        bounds=(1, MAX_BACKLOG),
    )
    #: Who may connect over TCP (FCGI_WEB_SERVER_ADDRS, php-fpm's listen.allowed_clients):
    #: IP addresses or networks; empty means whoever can reach the socket. Unix sockets are
    #: guarded by their file mode instead.
    allowed_clients: tuple[str, ...] = setting(
        (),
        "comma-separated IPv4/IPv6 addresses or CIDR networks allowed to connect over "
        "TCP, e.g. 127.0.0.1,10.0.0.0/8,::1; others are closed at accept with a log line, "
        "php-fpm's listen.allowed_clients (default: FCGI_WEB_SERVER_ADDRS if set, else "
        "everyone)",
        LISTENING,
        kind="csv",
        metavar="ADDRS",
        check=_networks,
    )
    log_level: str = setting(
        "info",
        "log level (%(default)s); debug also shows tracebacks of start-up errors",
        RUNTIME,
        choices=("critical", "error", "warning", "info", "debug"),
    )
    workers: int = setting(
        1,
        "worker processes for --pm static (%(default)s: no supervisor)",
        WORKERS,
        kind="int",
        bounds=(1, MAX_PROCESSES),
        short="-w",
        metavar="N",
    )
    pm: ProcessManager = setting(
        "static",
        "process manager, as php-fpm's pm (%(default)s)",
        WORKERS,
        choices=("static", "dynamic", "ondemand"),
        check=_process_manager,
    )
    pm_max_children: int = setting(
        DEFAULT_PM_MAX_CHILDREN,
        "dynamic/ondemand: the most workers (%(default)s)",
        WORKERS,
        kind="int",
        bounds=(1, MAX_PROCESSES),
        metavar="N",
    )
    pm_start_servers: int = setting(
        DEFAULT_PM_START_SERVERS,
        "dynamic: workers at start, php-fpm's pm.start_servers (%(default)s)",
        WORKERS,
        kind="int",
        bounds=(1, MAX_PROCESSES),
        flag="--pm-start",
        metavar="N",
    )
    pm_min_spare: int = setting(
        DEFAULT_PM_MIN_SPARE,
        "dynamic: fewest idle workers (%(default)s)",
        WORKERS,
        kind="int",
        bounds=(1, MAX_PROCESSES),
        metavar="N",
    )
    pm_max_spare: int = setting(
        DEFAULT_PM_MAX_SPARE,
        "dynamic: most idle workers (%(default)s)",
        WORKERS,
        kind="int",
        bounds=(1, MAX_PROCESSES),
        metavar="N",
    )
    pm_idle_timeout_s: float = setting(
        DEFAULT_PM_IDLE_TIMEOUT_S,
        "ondemand: stop a worker idle this long, pm.process_idle_timeout (%(default)s)",
        WORKERS,
        kind="seconds",
        metavar="S",
    )
    max_requests: int = setting(
        0,
        "recycle a worker after N requests; 0 = never. Implies a supervisor process "
        "even with --workers 1 (%(default)s)",
        WORKERS,
        kind="int",
        bounds=(0, MAX_REQUESTS),
        metavar="N",
    )
    max_requests_jitter: int = setting(
        0,
        "add 0..N to each worker's --max-requests so they do not recycle together (%(default)s)",
        WORKERS,
        kind="int",
        bounds=(0, MAX_REQUESTS),
        metavar="N",
    )
    worker_timeout_s: float = setting(
        DEFAULT_WORKER_TIMEOUT_S,
        "kill and replace a worker whose event loop was blocked this long (%(default)s)",
        WORKERS,
        kind="seconds",
        metavar="S",
    )
    #: php-fpm's pm.status_path and ping.path: answered by the server itself, before the app,
    #: for allowed clients only (see :mod:`fcgi_async.status`). None: passed to the app.
    status_path: str | None = setting(
        None,
        "answer the pool status at this path, php-fpm's pm.status_path (default: off)",
        OPERATIONS,
        metavar="PATH",
        empty_is_none=True,
        check=_url_path,
    )
    ping_path: str | None = setting(
        None,
        "answer --ping-response at this path, php-fpm's ping.path (default: off)",
        OPERATIONS,
        metavar="PATH",
        empty_is_none=True,
        check=_url_path,
    )
    ping_response: str = setting(
        DEFAULT_PING_RESPONSE,
        "the ping answer, php-fpm's ping.response (%(default)s)",
        OPERATIONS,
        metavar="TEXT",
    )
    #: The ``pool`` field of the status page (php-fpm's pool name).
    pool_name: str = setting(
        DEFAULT_POOL_NAME, "the status page's pool name (%(default)s)", OPERATIONS, metavar="NAME"
    )
    #: Access log file ("-": standard output); None: no access log (and no cost per request).
    #: The lines go to the ``fcgi_async.access`` logger; the CLI opens the file for it
    #: (:func:`fcgi_async.logs.configure_logging`), a library user attaches a handler.
    access_log: str | None = setting(
        None,
        "write one line per request to PATH, '-' for stdout, php-fpm's access.log "
        "(default: off, and free)",
        OPERATIONS,
        metavar="PATH",
        empty_is_none=True,
        check=_log_path,
    )
    #: The access log line, in the %-codes of :mod:`fcgi_async.logs`.
    access_log_format: str = setting(
        DEFAULT_ACCESS_LOG_FORMAT,
        "the access log line: %%h/%%R remote addr, %%t time, %%m method, %%r request "
        "line, %%U path, %%q query, %%s status, %%b/%%B bytes, %%d/%%D/%%T duration, %%p pid, "
        "%%i request id, %%{NAME}e param, %%{Header}i header, %%%% (the README lists them "
        "all); default: %(default)s",
        OPERATIONS,
        metavar="FORMAT",
        check=_access_format,
    )
    #: The server's own log ("-": standard error, the default).
    error_log: str | None = setting(
        None,
        "the server's own log, php-fpm's error_log; '-' for stderr (default: stderr)",
        OPERATIONS,
        metavar="PATH",
        empty_is_none=True,
        check=_log_path,
    )
    #: Whether ``bind`` was configured (False: the default address, which systemd's sockets
    #: or a listening fd 0 replace; True: those are served besides it). Derived by the CLI
    #: from whether any layer gave ``bind``; library code that builds a Config binds as told.
    #: Not compared: the same addresses serve the same way whichever way they were given.
    bind_explicit: bool = setting(
        True,
        "whether bind was configured rather than left at its default",
        settable=False,
        compare=False,
    )

    def __post_init__(self) -> None:
        message = check_values(self)
        if message is not None:
            raise ConfigError(message)
        self._check_process_manager()
        if self.max_body_buffer_bytes + self.max_params_bytes > self.max_connection_buffer_bytes:
            # The bodies' share plus one request's params must fit: a web server that sends
            # one request at a time is then never closed for its params.
            raise ConfigError(
                "max_connection_buffer_bytes must hold max_body_buffer_bytes plus"
                f" max_params_bytes, got {self.max_connection_buffer_bytes} <"
                f" {self.max_body_buffer_bytes} + {self.max_params_bytes}"
            )
        if self.status_path is not None and self.status_path == self.ping_path:
            raise ConfigError(f"status_path and ping_path are both {self.status_path!r}")

    def _check_process_manager(self) -> None:
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


def write_readme_table(path: str) -> bool:
    """Rewrite the option table of the README at ``path`` from the declarations.

    Returns:
        True when the file changed.

    Raises:
        ValueError: the README lacks the table's marker comments.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = splice_readme(text, options_table(Config))
    if new == text:
        return False
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fcgi_async.config --readme README.md``: regenerate the README's option
    table (after adding or changing a setting); without arguments, print the table."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(options_table(Config))
        return 0
    if len(args) != 2 or args[0] != "--readme":
        print("usage: python -m fcgi_async.config [--readme README.md]", file=sys.stderr)
        return 2
    changed = write_readme_table(args[1])
    print(f"{args[1]}: option table {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
