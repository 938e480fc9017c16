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
import os
import socket
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .config import GROUPS, Config, ConfigError
from .configfile import ConfigFileError, format_config, load_config_file
from .importer import AppLoadError, import_from_string, looks_like_asgi
from .pidfile import PidFile, PidFileError
from .server.listeners import BindError, parse_bind, resolve_socket_owner, systemd_listeners
from .settings import ENV_PREFIX, Declared, settable, split_list
from .types import Application

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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser: an option per declared setting, plus the command's own.

    The settings' options come from the Config's declarations (:mod:`fcgi_async.settings`):
    each stores into its Config field's name. Every default is suppressed, so a parse gives
    only what the command line said; :func:`resolve_settings` layers that over the
    environment, the file and the defaults, and ``--help`` shows each default in its help.
    """
    p = argparse.ArgumentParser(
        prog="fcgi-async",
        description="Serve a WSGI or ASGI application over FastCGI (behind nginx, Apache, "
        "lighttpd or any FastCGI web server).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    declared = settable(Config)
    for d in declared:
        if d.setting.positional:
            p.add_argument(d.name, metavar=d.setting.metavar, nargs="?", help=d.help_text())
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
    lost = [d.name for d in declared if d.flag is not None and d.setting.group not in GROUPS]
    if lost:
        raise ValueError(f"settings under no heading of config.GROUPS: {', '.join(lost)}")
    # Heading by heading, so that the usage line lists the options in --help's order.
    for group in GROUPS:
        arguments = p.add_argument_group(group.title, group.description)
        for d in declared:
            if d.flag is not None and d.setting.group == group:
                arguments.add_argument(*d.flags, **_option(d))
    p.add_argument("--version", action="version", version=f"fcgi-async {__version__}")
    return p


def _option(d: Declared) -> dict[str, Any]:
    """``add_argument``'s keywords for a declared setting's flag: it stores what argparse
    parsed under the field's name (:meth:`Declared.from_flag` makes that the value)."""
    options: dict[str, Any] = {"dest": d.name, "help": d.help_text()}
    if d.setting.kind == "bool":
        options["action"] = "store_true"
    else:
        if d.setting.kind == "list":
            options["action"] = "append"
        if d.flag_type is not None:
            options["type"] = d.flag_type
        if d.setting.choices:
            options["choices"] = list(d.setting.choices)
        if d.setting.metavar:
            options["metavar"] = d.setting.metavar
    return options


@dataclass
class Settings:
    """The command line over the environment over the config file: each layer's values of
    Config fields, where each came from, and the command's own options."""

    #: Config field -> value, from the highest layer that gave one (defaults are not here).
    values: dict[str, Any]
    #: Config field -> ``flag``, ``env NAME`` or ``file`` (absent: the default).
    sources: dict[str, str] = field(default_factory=dict)
    #: The configuration file read, if any.
    config_file: str | None = None
    #: ``--check-config`` was given.
    check_config: bool = False

    def config(self) -> Config:
        """The validated Config; ``bind_explicit`` says whether any layer gave ``bind``.

        Raises:
            ConfigError: a value is invalid.
        """
        values = dict(self.values)
        # An empty list (FCGI_ASYNC_BIND="", bind = []) leaves the default, as no bind would.
        bind = values.pop("bind", None)
        if bind:
            values["bind"] = bind
        return Config(**values, bind_explicit=bool(bind))

    @property
    def log_level(self) -> str:
        """The log level asked for, before the Config is validated (for error reports)."""
        return str(self.values.get("log_level", _SETTABLE["log_level"].default))


#: Config field -> its declaration, for the settings a user sets.
_SETTABLE = {d.name: d for d in settable(Config)}


def resolve_settings(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Layer flags over ``FCGI_ASYNC_*`` variables over the ``--config`` file over defaults.

    The file is ``--config`` or ``FCGI_ASYNC_CONFIG``. ``FCGI_WEB_SERVER_ADDRS`` (the variable
    every FastCGI library honours) sets ``allowed_clients`` over the file, under
    ``FCGI_ASYNC_ALLOWED_CLIENTS``. A repeatable flag replaces the lower layers' list.

    Raises:
        SystemExit: argparse's own exit: 0 after ``--help``/``--version``, 2 on a usage error
            or a malformed environment variable (the message is already on stderr).
        ConfigFileError: the file is unreadable, or has an unknown or mistyped key.
    """
    parser = build_parser()
    given = vars(parser.parse_args(list(argv)))
    check_config = bool(given.pop("check_config", False))
    config_file = given.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG") or None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if config_file:
        for name, value in load_config_file(config_file).items():
            values[name] = _SETTABLE[name].from_file(value)
            sources[name] = "file"
    for d in _SETTABLE.values():
        if d.env is None or d.env not in environ:
            continue
        try:
            values[d.name] = d.from_text(environ[d.env])
        except (ValueError, LookupError) as exc:
            parser.error(f"environment variable {d.env}: {exc}")
        sources[d.name] = f"env {d.env}"
    if sources.get("allowed_clients") in (None, "file") and "FCGI_WEB_SERVER_ADDRS" in environ:
        # libfcgi's, flup's and mod_fcgid's variable; as an environment variable it beats the
        # file, and ours beats it.
        values["allowed_clients"] = split_list(environ["FCGI_WEB_SERVER_ADDRS"])
        sources["allowed_clients"] = "env FCGI_WEB_SERVER_ADDRS"
    for name, value in given.items():
        values[name] = _SETTABLE[name].from_flag(value)
        sources[name] = "flag"
    if not values.get("app") and not check_config:
        parser.error("the following arguments are required: MODULE:ATTR")
    return Settings(values, sources, config_file, check_config)


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """The same as :func:`resolve_settings` (the name the tests and scripts know)."""
    return resolve_settings(argv, environ)


def config_from_args(settings: Settings) -> Config:
    """The validated Config of resolved settings (:meth:`Settings.config`).

    Raises:
        ConfigError: a value is invalid.
    """
    return settings.config()


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
    debug = settings.log_level == "debug"
    try:
        # Before logging is configured: a bad setting is a plain one-line error, and a
        # malformed --bind is reported before the app is imported (which may be slow).
        config = settings.config()
        for value in config.bind:
            parse_bind(value)
        if settings.check_config:
            resolve_socket_owner(config.socket_owner, config.socket_group)
    except (ConfigError, BindError) as exc:
        _fail(log, exc, debug)
        return 1
    if settings.check_config:
        print(_describe_config(settings, config), end="")
        return 0
    try:
        configure_logging(config.log_level, config.error_log, config.access_log)
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
        close_listeners(
            [s for s in sockets if all(s is not i for i in inherited)], unlink=config.bind_explicit
        )
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
