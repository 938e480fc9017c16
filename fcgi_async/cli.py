"""The ``fcgi-async`` command: the one place that composes config, app, adapters and server.

Every option is also an ``FCGI_ASYNC_<OPTION>`` environment variable (``--max-connections`` is
``FCGI_ASYNC_MAX_CONNECTIONS``; repeatable options take a comma-separated list), and every
Config field a key of the ``--config`` TOML file. Precedence: flags > environment > file >
defaults (:func:`resolve_settings`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import operator
import os
import socket
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .config import CRASH_LIMIT, CRASH_WINDOW_S, Config, ConfigError
from .configfile import ConfigFileError, format_config, load_config_file, settable_fields
from .importer import AppLoadError, import_from_string, looks_like_asgi
from .pidfile import PidFile, PidFileError
from .server.listeners import BindError, parse_bind, resolve_socket_owner, systemd_listeners
from .types import Application

ENV_PREFIX = "FCGI_ASYNC_"

_EPILOG = """\
examples:
  fcgi-async myapp:app                              # 127.0.0.1:9000, like php-fpm
  fcgi-async myproject.wsgi:application --bind unix:/run/app.sock --socket-mode 660
  fcgi-async main:create_app --factory --interface asgi --bind [::1]:9000
  fcgi-async call 127.0.0.1:9000 /ping              # talk FastCGI to any server
  fcgi-async --config /etc/fcgi-async.toml --check-config   # print the effective settings

nginx:  location / { include fastcgi_params; fastcgi_pass unix:/run/app.sock; }
Every option can also be set as FCGI_ASYNC_<NAME> (for example FCGI_ASYNC_BIND), and every
setting as a key of the --config file, named like the fields --check-config prints
(max_connections = 500). Precedence: flags > environment > config file > defaults.
systemd socket activation: sockets passed with LISTEN_FDS/LISTEN_PID replace the default
bind; binds you configure are served besides them.
"""


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 660") from None


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (defaults are filled from the environment later)."""
    d = Config()
    p = argparse.ArgumentParser(
        prog="fcgi-async",
        description="Serve a WSGI or ASGI application over FastCGI (behind nginx, Apache, "
        "lighttpd or any FastCGI web server).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "app",
        metavar="MODULE:ATTR",
        nargs="?",
        default=d.app,
        help="the application, e.g. myproject.wsgi:app (or app = in the config file)",
    )
    cfg = p.add_argument_group("configuration file")
    cfg.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML file of settings named as the Config fields (bind = [...], "
        "max_connections = 500); flags and FCGI_ASYNC_* variables override it",
    )
    cfg.add_argument(
        "--check-config",
        action="store_true",
        help="validate the settings, print the effective configuration with where each "
        "value came from, and exit (0 valid, 1 not); neither imports the app nor binds",
    )
    srv = p.add_argument_group("listening")
    srv.add_argument(
        "--bind",
        "-b",
        action="append",
        metavar="ADDR",
        help="HOST:PORT, [V6]:PORT, unix:PATH or fd://N; repeat for several. Default "
        f"{d.bind[0]}; when a web server passes a listening socket as fd 0 it is used instead.",
    )
    srv.add_argument(
        "--socket-mode",
        type=_octal,
        metavar="MODE",
        help="permissions of unix sockets we create, e.g. 660 (default: umask)",
    )
    srv.add_argument(
        "--socket-owner",
        metavar="USER",
        help="owner of unix sockets we create, a name or uid (php-fpm's listen.owner)",
    )
    srv.add_argument(
        "--socket-group",
        metavar="GROUP",
        help="group of unix sockets we create, a name or gid (php-fpm's listen.group)",
    )
    srv.add_argument(
        "--pid-file",
        metavar="PATH",
        help="write our pid here once listening (the supervisor's with workers); removed at "
        "exit; refuses to start while it names a running process",
    )
    srv.add_argument(
        "--backlog",
        type=int,
        default=d.backlog,
        help="listen queue size of every listener, sockets from systemd or fd 0 included, "
        "php-fpm's listen.backlog (%(default)s)",
    )
    srv.add_argument(
        "--allowed-clients",
        metavar="ADDRS",
        help="comma-separated IPv4/IPv6 addresses or CIDR networks allowed to connect over "
        "TCP, e.g. 127.0.0.1,10.0.0.0/8,::1; others are closed at accept with a log line, "
        "php-fpm's listen.allowed_clients (default: FCGI_WEB_SERVER_ADDRS if set, else "
        "everyone)",
    )
    app = p.add_argument_group("application")
    app.add_argument(
        "--interface",
        choices=["auto", "asgi", "wsgi"],
        default=d.interface,
        help="app interface; auto detects async callables as ASGI (%(default)s)",
    )
    app.add_argument(
        "--factory",
        action="store_true",
        default=d.factory,
        help="MODULE:ATTR is a function that returns the app",
    )
    app.add_argument(
        "--app-dir",
        default=d.app_dir,
        help="directory put first on sys.path to import the app (%(default)s)",
    )
    app.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="threads running WSGI app code at once (%(default)s)",
    )
    app.add_argument(
        "--lifespan",
        choices=["auto", "on", "off"],
        default=d.lifespan,
        help="ASGI lifespan: auto runs it if the app supports it (%(default)s)",
    )
    app.add_argument(
        "--root-path",
        default=None,
        metavar="PATH",
        help="the URL prefix the app is mounted at (SCRIPT_NAME); default: "
        "as the web server splits SCRIPT_NAME/PATH_INFO, else the root",
    )
    app.add_argument(
        "--roles",
        default=",".join(d.roles),
        help="FastCGI roles served, others get UNKNOWN_ROLE (%(default)s)",
    )
    run = p.add_argument_group("runtime")
    run.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default=d.loop,
        help="event loop; auto uses uvloop when installed (%(default)s)",
    )
    run.add_argument(
        "--graceful-timeout",
        type=float,
        default=d.graceful_timeout_s,
        metavar="S",
        help="seconds running requests get at shutdown (%(default)s)",
    )
    run.add_argument(
        "--log-level",
        default=d.log_level,
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (%(default)s); debug also shows tracebacks of start-up errors",
    )
    _add_worker_arguments(p, d)
    _add_timeout_arguments(p, d)
    _add_operations_arguments(p, d)
    lim = p.add_argument_group("limits (each protects memory or sockets from a bad peer)")
    lim.add_argument(
        "--no-multiplex",
        action="store_true",
        help="refuse a 2nd concurrent request on a connection (CANT_MPX_CONN)",
    )
    lim.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="connections per process; more are closed (%(default)s)",
    )
    lim.add_argument(
        "--max-requests-per-connection",
        type=int,
        default=d.max_requests_per_connection,
        help="concurrent requests on one connection; more get OVERLOADED (%(default)s)",
    )
    lim.add_argument(
        "--max-params-bytes",
        type=int,
        default=d.max_params_bytes,
        help="bytes of CGI params per request (%(default)s)",
    )
    lim.add_argument(
        "--max-params-pairs",
        type=int,
        default=d.max_params_pairs,
        help="CGI params per request (%(default)s)",
    )
    lim.add_argument(
        "--max-body-buffer-bytes",
        type=int,
        default=d.max_body_buffer_bytes,
        help="request body bytes buffered per connection before reading pauses (%(default)s)",
    )
    lim.add_argument(
        "--max-connection-buffer-bytes",
        type=int,
        default=d.max_connection_buffer_bytes,
        help="memory per connection: unfinished params, buffered bodies and unsent output;"
        " params beyond it close the connection (%(default)s)",
    )
    lim.add_argument(
        "--keepalive-timeout",
        type=float,
        default=d.keepalive_timeout_s,
        metavar="S",
        help="idle keep-alive connection lifetime; keep above nginx's 60 s (%(default)s)",
    )
    lim.add_argument(
        "--record-timeout",
        type=float,
        default=d.record_timeout_s,
        metavar="S",
        help="seconds a half-received record may wait for the rest (%(default)s)",
    )
    lim.add_argument(
        "--send-timeout",
        type=float,
        default=d.send_timeout_s,
        metavar="S",
        help="seconds output may stay unread by the web server before the connection is"
        " aborted (%(default)s)",
    )
    p.add_argument("--version", action="version", version=f"fcgi-async {__version__}")
    return p


def _add_worker_arguments(p: argparse.ArgumentParser, d: Config) -> None:
    """The prefork supervisor's flags (php-fpm's pm.* names where they exist)."""
    wrk = p.add_argument_group(
        "workers (a supervisor process forks workers that share the listening sockets)",
        "--workers above 1, --pm dynamic|ondemand or --max-requests start a supervisor;\n"
        "otherwise the server runs inline. Signals to the supervisor: TERM/INT/QUIT graceful\n"
        "stop, HUP/USR2 graceful reload (new workers first), TTIN/TTOU one worker more/less,\n"
        "USR1 reopen log files. Dead workers are respawned with a back-off; "
        f"{CRASH_LIMIT} crashes\nwithin {CRASH_WINDOW_S:g} s stop the respawning with an "
        "error saying why (SIGHUP tries again).",
    )
    wrk.add_argument(
        "--workers",
        "-w",
        type=int,
        default=d.workers,
        metavar="N",
        help="worker processes for --pm static (%(default)s: no supervisor)",
    )
    wrk.add_argument(
        "--pm",
        choices=["static", "dynamic", "ondemand"],
        default=d.pm,
        help="process manager, as php-fpm's pm (%(default)s)",
    )
    wrk.add_argument(
        "--pm-max-children",
        type=int,
        default=d.pm_max_children,
        metavar="N",
        help="dynamic/ondemand: the most workers (%(default)s)",
    )
    wrk.add_argument(
        "--pm-start",
        type=int,
        default=d.pm_start_servers,
        metavar="N",
        help="dynamic: workers at start, php-fpm's pm.start_servers (%(default)s)",
    )
    wrk.add_argument(
        "--pm-min-spare",
        type=int,
        default=d.pm_min_spare,
        metavar="N",
        help="dynamic: fewest idle workers (%(default)s)",
    )
    wrk.add_argument(
        "--pm-max-spare",
        type=int,
        default=d.pm_max_spare,
        metavar="N",
        help="dynamic: most idle workers (%(default)s)",
    )
    wrk.add_argument(
        "--pm-idle-timeout",
        type=float,
        default=d.pm_idle_timeout_s,
        metavar="S",
        help="ondemand: stop a worker idle this long, pm.process_idle_timeout (%(default)s)",
    )
    wrk.add_argument(
        "--max-requests",
        type=int,
        default=d.max_requests,
        metavar="N",
        help="recycle a worker after N requests; 0 = never. Implies a supervisor process "
        "even with --workers 1 (%(default)s)",
    )
    wrk.add_argument(
        "--max-requests-jitter",
        type=int,
        default=d.max_requests_jitter,
        metavar="N",
        help="add 0..N to each worker's --max-requests so they do not recycle together "
        "(%(default)s)",
    )
    wrk.add_argument(
        "--worker-timeout",
        type=float,
        default=d.worker_timeout_s,
        metavar="S",
        help="kill and replace a worker whose event loop was blocked this long (%(default)s)",
    )


def _add_timeout_arguments(p: argparse.ArgumentParser, d: Config) -> None:
    """Request timeout and slow log (php-fpm's request_terminate_timeout and slowlog)."""
    tmo = p.add_argument_group(
        "request timeout and slow log (checked once a second)",
        "A request over --request-timeout gets a 504 (or a broken connection once its\n"
        "response started); ASGI code is cancelled, a WSGI thread that runs on is reported\n"
        "with its stack and its worker recycled (inline: a restart is recommended).",
    )
    tmo.add_argument(
        "--request-timeout",
        type=float,
        default=d.request_timeout_s,
        metavar="S",
        help="end requests running longer, php-fpm's request_terminate_timeout; 0 = off "
        "(%(default)s)",
    )
    tmo.add_argument(
        "--slowlog-timeout",
        type=float,
        default=d.slowlog_timeout_s,
        metavar="S",
        help="log the Python stack of requests running longer, once each, php-fpm's "
        "request_slowlog_timeout; 0 = off (%(default)s)",
    )
    tmo.add_argument(
        "--slowlog",
        default=d.slowlog,
        metavar="PATH",
        help="file the slow log is appended to, php-fpm's slowlog (default: the error log)",
    )


def _add_operations_arguments(p: argparse.ArgumentParser, d: Config) -> None:
    """Status and ping pages, access log and error log (php-fpm's names in the help)."""
    ops = p.add_argument_group(
        "status, ping and logs",
        "The status and ping paths are answered before the app, only for end users\n"
        "(REMOTE_ADDR) within --allowed-clients (loopback when that is unset); others get\n"
        "403. Status: ?json, ?openmetrics, ?full as php-fpm. SIGUSR1 reopens the log files.",
    )
    ops.add_argument(
        "--status-path",
        default=d.status_path,
        metavar="PATH",
        help="answer the pool status at this path, php-fpm's pm.status_path (default: off)",
    )
    ops.add_argument(
        "--ping-path",
        default=d.ping_path,
        metavar="PATH",
        help="answer --ping-response at this path, php-fpm's ping.path (default: off)",
    )
    ops.add_argument(
        "--ping-response",
        default=d.ping_response,
        metavar="TEXT",
        help="the ping answer, php-fpm's ping.response (%(default)s)",
    )
    ops.add_argument(
        "--pool-name",
        default=d.pool_name,
        metavar="NAME",
        help="the status page's pool name (%(default)s)",
    )
    ops.add_argument(
        "--access-log",
        default=d.access_log,
        metavar="PATH",
        help="write one line per request to PATH, '-' for stdout, php-fpm's access.log "
        "(default: off, and free)",
    )
    ops.add_argument(
        "--access-log-format",
        default=d.access_log_format,
        metavar="FORMAT",
        help="the access log line: %%h/%%R remote addr, %%t time, %%m method, %%r request "
        "line, %%U path, %%q query, %%s status, %%b/%%B bytes, %%d/%%D/%%T duration, %%p pid, "
        "%%i request id, %%{NAME}e param, %%{Header}i header, %%%% (the README lists them "
        "all); default: " + d.access_log_format.replace("%", "%%"),
    )
    ops.add_argument(
        "--error-log",
        default=d.error_log,
        metavar="PATH",
        help="the server's own log, php-fpm's error_log; '-' for stderr (default: stderr)",
    )


#: dest -> how to parse its environment variable (str when absent).
_ENV_TYPES: dict[str, Callable[[str], Any]] = {
    "socket_mode": _octal,
    "backlog": int,
    "factory": _bool,
    "threads": int,
    "graceful_timeout": float,
    "no_multiplex": _bool,
    "max_connections": int,
    "max_requests_per_connection": int,
    "max_params_bytes": int,
    "max_params_pairs": int,
    "max_body_buffer_bytes": int,
    "max_connection_buffer_bytes": int,
    "keepalive_timeout": float,
    "record_timeout": float,
    "send_timeout": float,
    "workers": int,
    "pm_max_children": int,
    "pm_start": int,
    "pm_min_spare": int,
    "pm_max_spare": int,
    "pm_idle_timeout": float,
    "max_requests": int,
    "max_requests_jitter": int,
    "worker_timeout": float,
    "request_timeout": float,
    "slowlog_timeout": float,
}


def _apply_env(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> dict[str, Any]:
    """Make FCGI_ASYNC_* variables the defaults, so that flags still override them.

    Returns the values of repeatable options (``--bind``): argparse *appends* flags to an
    ``append`` action's default, so those are applied after parsing, only when no flag was given.
    """
    late: dict[str, Any] = {}
    for action in parser._actions:
        dest = action.dest
        if dest in ("help", "version", "app", "check_config"):
            continue
        name = ENV_PREFIX + dest.upper()
        raw = environ.get(name)
        if raw is None:
            continue
        try:
            if isinstance(action, argparse._AppendAction):
                late[dest] = [b.strip() for b in raw.split(",") if b.strip()]
                continue
            value: Any = _ENV_TYPES.get(dest, str)(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            parser.error(f"environment variable {name}: {exc}")
        if action.choices is not None and value not in action.choices:
            # argparse checks choices of flags only, never of defaults.
            choices = ", ".join(map(str, action.choices))
            parser.error(f"environment variable {name}: {raw!r} is not one of {choices}")
        action.default = value
    return late


#: Config fields whose flag is named differently, and how a file value becomes the flag's
#: value. Every other field's flag is named as the field, or as the field without its ``_s``.
_FIELD_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "multiplex": ("no_multiplex", operator.not_),
    "pm_start_servers": ("pm_start", lambda value: value),
}


def _field_actions(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.Action, Any]]:
    """Config field -> (the argparse action that sets it, file value -> flag value)."""
    actions = {a.dest: a for a in parser._actions}
    result: dict[str, tuple[argparse.Action, Any]] = {}
    for name in settable_fields():
        dest, convert = _FIELD_FLAGS.get(name, (name, lambda value: value))
        if dest not in actions and name.endswith("_s"):
            dest = name[:-2]
        if dest in actions:
            result[name] = (actions[dest], convert)
    return result


def _apply_file(
    parser: argparse.ArgumentParser, values: Mapping[str, object], path: str
) -> tuple[dict[str, Any], dict[str, object]]:
    """Make a config file's values the parser's defaults (the environment goes over them).

    Returns:
        ``(late, file_only)``: values of repeatable options, applied after parsing like
        :func:`_apply_env`'s; and fields that no flag sets, for :meth:`Settings.config`.

    Raises:
        ConfigFileError: a value is not one of its flag's choices.
    """
    actions = _field_actions(parser)
    late: dict[str, Any] = {}
    file_only: dict[str, object] = {}
    for name, value in values.items():
        if name not in actions:
            file_only[name] = value
            continue
        action, convert = actions[name]
        flag_value = convert(value)
        if isinstance(flag_value, tuple):
            if isinstance(action, argparse._AppendAction):
                late[action.dest] = list(flag_value)
                continue
            flag_value = ",".join(flag_value)  # comma-separated flags: --roles, --allowed-clients
        if action.choices is not None and flag_value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            raise ConfigFileError(f"config file {path}: {name} must be one of {choices}")
        action.default = flag_value
    return late, file_only


def _given_flags(argv: Sequence[str]) -> argparse.Namespace:
    """Only what the command line itself gives: a parse with every default suppressed.

    ``--help`` and ``--version`` are left to the real parse (help shows the defaults), as are
    unknown arguments.
    """
    parser = build_parser()
    for action in list(parser._actions):
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            parser._remove_action(action)
            for option in action.option_strings:
                parser._option_string_actions.pop(option, None)
        else:
            action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(list(argv))
    return given


@dataclass
class Settings:
    """Parsed arguments with every layer applied, and where each Config field came from."""

    #: The namespace :func:`config_from_args` turns into a Config.
    args: argparse.Namespace
    #: Config field -> ``flag``, ``env NAME``, ``file`` or ``default``.
    sources: dict[str, str] = field(default_factory=dict)
    #: The configuration file read, if any.
    config_file: str | None = None
    #: File values of Config fields that have no flag (applied to the Config directly).
    file_only: dict[str, object] = field(default_factory=dict)

    def config(self) -> Config:
        """The validated Config.

        Raises:
            ConfigError: a value is invalid.
        """
        config = config_from_args(self.args)
        return config.replace(**self.file_only) if self.file_only else config


def resolve_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Layer flags over ``FCGI_ASYNC_*`` variables over the ``--config`` file over defaults.

    The file (``--config`` or ``FCGI_ASYNC_CONFIG``) becomes the parser's defaults, the
    environment goes over those (:func:`_apply_env`), and argparse puts the flags on top. A
    second parse with suppressed defaults tells which values the command line gave.

    Raises:
        SystemExit: argparse's own exit: 0 after ``--help``/``--version``, 2 on a usage error
            (the message is already on stderr).
        ConfigFileError: the file is unreadable, or has an unknown or mistyped key.
    """
    given = vars(_given_flags(argv))
    config_file = given.get("config") or environ.get(ENV_PREFIX + "CONFIG") or None
    parser = build_parser()
    file_values = load_config_file(config_file) if config_file else {}
    file_late, file_only = _apply_file(parser, file_values, config_file or "")
    late = {**file_late, **_apply_env(parser, environ)}
    args = parser.parse_args(list(argv))
    for dest, value in late.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if not args.app and not args.check_config:
        parser.error("the following arguments are required: MODULE:ATTR")
    sources: dict[str, str] = {}
    for name, (action, _) in _field_actions(parser).items():
        variable = ENV_PREFIX + action.dest.upper()
        if action.dest in given:
            sources[name] = "flag"
        elif variable in environ and action.dest != "app":
            sources[name] = f"env {variable}"
        elif name in file_values:
            sources[name] = "file"
    for name in file_only:
        sources[name] = "file"
    if sources.get("allowed_clients") in (None, "file") and "FCGI_WEB_SERVER_ADDRS" in environ:
        # The variable every FastCGI library honours (libfcgi, flup, mod_fcgid's docs); as
        # an environment variable it beats the file.
        args.allowed_clients = environ["FCGI_WEB_SERVER_ADDRS"]
        sources["allowed_clients"] = "env FCGI_WEB_SERVER_ADDRS"
    return Settings(args, sources, config_file, file_only)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse ``argv`` over ``FCGI_ASYNC_*`` variables from ``environ`` over the ``--config``
    file over the defaults (see :func:`resolve_settings`).

    Raises:
        SystemExit: argparse's own exit: 0 after ``--help``/``--version``, 2 on a usage error
            (the message is already on stderr).
        ConfigFileError: the file is unreadable, or has an unknown or mistyped key.
    """
    return resolve_settings(argv, environ).args


def config_from_args(args: argparse.Namespace) -> Config:
    """Turn parsed arguments into a validated Config."""
    binds = tuple(args.bind) if args.bind else None
    return Config(
        app=args.app,
        bind=binds or Config().bind,
        interface=args.interface,
        factory=args.factory,
        app_dir=args.app_dir,
        threads=args.threads,
        loop=args.loop,
        lifespan=args.lifespan,
        root_path=args.root_path,
        roles=tuple(r.strip().lower() for r in args.roles.split(",") if r.strip()),
        multiplex=not args.no_multiplex,
        max_params_bytes=args.max_params_bytes,
        max_params_pairs=args.max_params_pairs,
        max_requests_per_connection=args.max_requests_per_connection,
        max_connections=args.max_connections,
        max_body_buffer_bytes=args.max_body_buffer_bytes,
        max_connection_buffer_bytes=args.max_connection_buffer_bytes,
        keepalive_timeout_s=args.keepalive_timeout,
        record_timeout_s=args.record_timeout,
        send_timeout_s=args.send_timeout,
        graceful_timeout_s=args.graceful_timeout,
        backlog=args.backlog,
        socket_mode=args.socket_mode,
        socket_owner=args.socket_owner,
        socket_group=args.socket_group,
        pid_file=args.pid_file,
        allowed_clients=tuple(
            a.strip() for a in (args.allowed_clients or "").split(",") if a.strip()
        ),
        log_level=args.log_level,
        workers=args.workers,
        pm=args.pm,
        pm_max_children=args.pm_max_children,
        pm_start_servers=args.pm_start,
        pm_min_spare=args.pm_min_spare,
        pm_max_spare=args.pm_max_spare,
        pm_idle_timeout_s=args.pm_idle_timeout,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        worker_timeout_s=args.worker_timeout,
        request_timeout_s=args.request_timeout,
        slowlog_timeout_s=args.slowlog_timeout,
        slowlog=args.slowlog or None,
        status_path=args.status_path or None,
        ping_path=args.ping_path or None,
        ping_response=args.ping_response,
        pool_name=args.pool_name,
        access_log=args.access_log or None,
        access_log_format=args.access_log_format,
        error_log=args.error_log or None,
        extra={"bind_explicit": binds is not None},
    )


def load_application(config: Config) -> Application:
    """Import the configured app and wrap it in the adapter for its interface.

    An object that already has the :class:`Application` shape (a raw FastCGI handler) is
    served as it is.

    Raises:
        AppLoadError: the app cannot be imported, or is not an app.
    """
    obj = import_from_string(config.app, app_dir=config.app_dir)
    if config.factory:
        if not callable(obj):
            raise AppLoadError(f"--factory given but {config.app!r} is not callable")
        obj = obj()
    if isinstance(obj, Application) and config.interface == "auto":
        return obj
    if not callable(obj):
        raise AppLoadError(f"{config.app!r} is not callable, so it is not a WSGI or ASGI app")
    interface = config.interface
    if interface == "auto":
        interface = "asgi" if looks_like_asgi(obj) else "wsgi"
    if interface == "asgi":
        asgi = _adapter("asgi", "ASGIAdapter")
        return asgi(obj, lifespan=config.lifespan, root_path=config.root_path)
    wsgi = _adapter("wsgi", "WSGIAdapter")
    return wsgi(
        obj,
        threads=config.threads,
        root_path=config.root_path,
        multiprocess=config.supervised,
    )


def _adapter(module: str, name: str) -> Callable[..., Application]:
    """Import an adapter class by name.

    The adapters live in the top-level ``adapters/`` folder, installed as
    ``fcgi_async.adapters`` through a package-dir mapping that mypy cannot follow; importing
    them by name keeps the core's type check independent of that layout.
    """
    factory: Callable[..., Application] = getattr(
        importlib.import_module(f"fcgi_async.adapters.{module}"), name
    )
    return factory


def configure_logging(
    level: str, error_log: str | None = None, access_log: str | None = None
) -> None:
    """Log with time, pid, level and logger (enough to read at 3 a.m.) to stderr or
    ``error_log``; access lines alone to ``access_log`` (see :mod:`fcgi_async.logs`).

    Raises:
        OSError: a log file cannot be opened.
    """
    from .logs import configure_logging as configure

    configure(level, error_log, access_log)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command; return the process exit status.

    0 on a clean stop (and after ``--help``/``--version``), 1 on errors, 2 on usage errors.
    Never raises SystemExit itself, so tests can call it without a subprocess.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "call":
        from .client.cli import main as call_main

        return call_main(args_list[1:])
    log = logging.getLogger("fcgi_async")
    checking = "--check-config" in args_list
    try:
        settings = resolve_settings(args_list, os.environ if environ is None else environ)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        return 1 if checking and code else code  # --check-config: 0 valid, 1 not
    except ConfigFileError as exc:
        _fail(log, exc, False)
        return 1
    args = settings.args
    debug = args.log_level == "debug"
    try:
        # Before logging is configured: a bad setting is a plain one-line error, and a
        # malformed --bind is reported before the app is imported (which may be slow).
        config = settings.config()
        for value in config.bind:
            parse_bind(value)
        if args.check_config:
            resolve_socket_owner(config.socket_owner, config.socket_group)
    except (ConfigError, BindError) as exc:
        _fail(log, exc, debug)
        return 1
    if args.check_config:
        print(_describe_config(settings, config), end="")
        return 0
    try:
        configure_logging(args.log_level, config.error_log, config.access_log)
    except OSError as exc:
        _fail(log, exc, debug, with_type=True)
        return 1
    pid_file = PidFile(config.pid_file) if config.pid_file else None
    try:
        if pid_file is not None:
            pid_file.check()  # before binding: a running instance is the likelier error
        # systemd's variables leave our environment here, whatever we do with them.
        inherited = systemd_listeners(
            os.environ if environ is None else dict(environ), backlog=config.backlog
        )
        if config.supervised:
            return _run_supervisor(config, inherited, pid_file)
        app = load_application(config)
        from .runner import run as run_server

        def listening(server: object) -> None:
            if pid_file is not None:
                pid_file.write()

        run_server(config, app, inherited=inherited, ready=listening)
    except (AppLoadError, ConfigError, BindError, PidFileError) as exc:
        _fail(log, exc, debug)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        # Anything else at start-up (the app's own import failing, lifespan startup failing)
        # still gets one clear line; the traceback only with --log-level debug.
        _fail(log, exc, debug, with_type=True)
        return 1
    finally:
        if pid_file is not None:
            pid_file.remove()
    return 0


def _describe_config(settings: Settings, config: Config) -> str:
    """``--check-config``'s report: the effective settings as TOML, with their sources."""
    where = f"config file {settings.config_file}" if settings.config_file else "no config file"
    head = f"# fcgi-async {__version__}: configuration is valid ({where})\n"
    return head + format_config(config, settings.sources)


def _run_supervisor(
    config: Config, inherited: Sequence[socket.socket], pid_file: PidFile | None
) -> int:
    """Bind in this process, then fork workers that import the app themselves.

    The pid file holds this (the supervisor's) pid, written once the sockets are bound.
    """
    from .server.listeners import close_listeners
    from .supervisor import Supervisor, bind_listeners

    sockets = bind_listeners(config, inherited)
    try:
        if pid_file is not None:
            pid_file.write()
        return Supervisor(config, lambda: load_application(config), sockets).run()
    finally:
        # Only unix socket files we bound are removed: systemd's belong to the socket unit,
        # and without a configured bind the only unix socket can be fd 0 (spawn-fcgi's).
        explicit = bool(config.extra.get("bind_explicit", True))
        close_listeners([s for s in sockets if all(s is not i for i in inherited)], unlink=explicit)
        close_listeners(list(inherited), unlink=False)


def _fail(log: logging.Logger, exc: BaseException, debug: bool, with_type: bool = False) -> None:
    text = f"{type(exc).__name__}: {exc}" if with_type else str(exc)
    print(f"fcgi-async: error: {text}", file=sys.stderr)
    if debug:
        traceback.print_exception(exc)
    else:
        log.debug("start-up failed", exc_info=exc)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
