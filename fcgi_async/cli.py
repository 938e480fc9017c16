"""The ``fcgi-async`` command: the one place that composes config, app, adapters and server.

Every option is also an ``FCGI_ASYNC_<OPTION>`` environment variable (``--max-connections`` is
``FCGI_ASYNC_MAX_CONNECTIONS``; repeatable options take a comma-separated list). Precedence:
flags > environment > defaults.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import __version__
from .config import Config, ConfigError
from .importer import AppLoadError, import_from_string, looks_like_asgi
from .server.listeners import BindError, parse_bind
from .types import Application

ENV_PREFIX = "FCGI_ASYNC_"

_EPILOG = """\
examples:
  fcgi-async myapp:app                              # 127.0.0.1:9000, like php-fpm
  fcgi-async myproject.wsgi:application --bind unix:/run/app.sock --socket-mode 660
  fcgi-async main:create_app --factory --interface asgi --bind [::1]:9000
  fcgi-async call 127.0.0.1:9000 /ping              # talk FastCGI to any server

nginx:  location / { include fastcgi_params; fastcgi_pass unix:/run/app.sock; }
Every option can also be set as FCGI_ASYNC_<NAME> (for example FCGI_ASYNC_BIND).
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
    p.add_argument("app", metavar="MODULE:ATTR", help="the application, e.g. myproject.wsgi:app")
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
    srv.add_argument("--backlog", type=int, default=d.backlog, help="listen backlog (%(default)s)")
    srv.add_argument(
        "--allowed-clients",
        metavar="ADDRS",
        help="comma-separated IPs or networks allowed to connect over TCP; others are "
        "closed at once (default: FCGI_WEB_SERVER_ADDRS if set, else everyone)",
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
    p.add_argument("--version", action="version", version=f"fcgi-async {__version__}")
    return p


def _add_worker_arguments(p: argparse.ArgumentParser, d: Config) -> None:
    """The prefork supervisor's flags (php-fpm's pm.* names where they exist)."""
    wrk = p.add_argument_group(
        "workers (a supervisor process forks workers that share the listening sockets)",
        "--workers above 1, --pm dynamic|ondemand or --max-requests start a supervisor;\n"
        "otherwise the server runs inline. Signals to the supervisor: TERM/INT/QUIT graceful\n"
        "stop, HUP/USR2 graceful reload (new workers first), TTIN/TTOU one worker more/less,\n"
        "USR1 reopen log files.",
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
    "keepalive_timeout": float,
    "record_timeout": float,
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
        if dest in ("help", "version", "app"):
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


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> argparse.Namespace:
    """Parse ``argv`` over ``FCGI_ASYNC_*`` variables from ``environ`` over the defaults.

    Raises:
        SystemExit: argparse's own exit: 0 after ``--help``/``--version``, 2 on a usage error
            (the message is already on stderr).
    """
    parser = build_parser()
    late = _apply_env(parser, environ)
    args = parser.parse_args(list(argv))
    for dest, value in late.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    if args.allowed_clients is None:
        # The variable every FastCGI library honours (libfcgi, flup, mod_fcgid's docs).
        args.allowed_clients = environ.get("FCGI_WEB_SERVER_ADDRS")
    return args


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
        keepalive_timeout_s=args.keepalive_timeout,
        record_timeout_s=args.record_timeout,
        graceful_timeout_s=args.graceful_timeout,
        backlog=args.backlog,
        socket_mode=args.socket_mode,
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


def configure_logging(level: str) -> None:
    """Log to stderr with time, pid, level and logger: enough to read at 3 a.m."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the command; return the process exit status.

    0 on a clean stop (and after ``--help``/``--version``), 1 on errors, 2 on usage errors.
    Never raises SystemExit itself, so tests can call it without a subprocess.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "call":
        from .client.cli import main as call_main

        return call_main(args_list[1:])
    try:
        args = parse_args(args_list, os.environ if environ is None else environ)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    debug = args.log_level == "debug"
    log = logging.getLogger("fcgi_async")
    try:
        # Before logging is configured: a bad setting is a plain one-line error, and a
        # malformed --bind is reported before the app is imported (which may be slow).
        config = config_from_args(args)
        for value in config.bind:
            parse_bind(value)
    except (ConfigError, BindError) as exc:
        _fail(log, exc, debug)
        return 1
    configure_logging(args.log_level)
    try:
        if config.supervised:
            return _run_supervisor(config)
        app = load_application(config)
        from .runner import run as run_server

        run_server(config, app)
    except (AppLoadError, ConfigError, BindError) as exc:
        _fail(log, exc, debug)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        # Anything else at start-up (the app's own import failing, lifespan startup failing)
        # still gets one clear line; the traceback only with --log-level debug.
        _fail(log, exc, debug, with_type=True)
        return 1
    return 0


def _run_supervisor(config: Config) -> int:
    """Bind in this process, then fork workers that import the app themselves."""
    from .server.listeners import close_listeners
    from .supervisor import Supervisor, bind_listeners

    sockets = bind_listeners(config)
    try:
        return Supervisor(config, lambda: load_application(config), sockets).run()
    finally:
        close_listeners(sockets)


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
