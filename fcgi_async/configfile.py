"""``--config fcgi-async.toml``: Config fields in a TOML file, and the effective configuration.

The keys are the :class:`~fcgi_async.config.Config` field names, one spelling only: the
unit-suffixed ones with underscores (``keepalive_timeout_s = 75``, ``max_connections = 500``,
``bind = ["unix:/run/app.sock"]``). A flag's spelling (``max-connections``,
``keepalive-timeout``) is an unknown key whose error suggests the field name. Every value is
type-checked against the field's annotation before the Config validates it, so an error names
the key, the file and the type the key needs.

Precedence (composed in :mod:`fcgi_async.cli`): flags > ``FCGI_ASYNC_*`` environment >
this file > defaults.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin

from ._compat import tomllib
from .config import Config, ConfigError
from .settings import Declared, parse_octal, settable

#: Where a value came from, for ``--check-config``.
Source = str


class ConfigFileError(ConfigError):
    """The configuration file is unreadable, not TOML, or has an unknown or mistyped key."""


def settable_fields() -> dict[str, Any]:
    """Config field name -> its resolved type annotation, for every key a file may set (the
    declared settings; derived fields such as ``bind_explicit`` are not keys)."""
    hints = typing.get_type_hints(Config)
    return {d.name: hints[d.name] for d in settable(Config)}


#: Config field -> its declaration, for every key a file may set.
_DECLARED: dict[str, Declared] = {d.name: d for d in settable(Config)}


def _describe(hint: Any) -> str:
    """The type a key needs, in words ('an integer', 'an array of strings')."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is tuple:
        return f"an array of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    return str(hint)


def _got(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    kind = kinds.get(type(value), "an array" if isinstance(value, list) else "a table")
    return f"{kind} ({json.dumps(value, default=str)})"


def _coerce(hint: Any, value: object) -> tuple[bool, object]:
    """Check ``value`` against ``hint``; return (ok, the value as the Config field holds it)."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value  # type: ignore[arg-type]
    if hint is str:
        return isinstance(value, str), value
    if origin is Literal:
        return value in args and isinstance(value, str), value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list):
            return False, value
        items = [_coerce(args[0], item) for item in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if origin in (typing.Union, types.UnionType):
        for member in args:
            if member is type(None):
                continue
            ok, coerced = _coerce(member, value)
            if ok:
                return True, coerced
        return False, value
    return True, value  # a type this checker does not know: Config validates it


def _special(declared: Declared, value: object) -> object:
    """Spellings a file may use beyond the annotation: an ``octal`` setting as text, as the
    flag takes it (``socket_mode = "660"``), and an ``id`` setting as an integer
    (``socket_group = 33``)."""
    kind = declared.setting.kind
    if kind == "octal" and isinstance(value, str):
        try:
            return parse_octal(value)
        except ValueError:
            return value
    if kind == "id" and type(value) is int:
        return str(value)
    return value


def parse_config_values(values: Mapping[str, object], path: str) -> dict[str, object]:
    """Check a parsed file's keys and value types; return field name -> value.

    Raises:
        ConfigFileError: an unknown key (with the nearest field name as a hint) or a value of
            the wrong type (naming the type the key needs); the message names ``path``.
    """
    fields = settable_fields()
    result: dict[str, object] = {}
    for key, raw in values.items():
        if key not in fields:
            hint = ""
            guess = key.replace("-", "_")
            close = [guess] if guess in fields else []
            close = close or difflib.get_close_matches(guess, list(fields), n=1)
            if not close:
                close = [f for f in fields if f.startswith(guess + "_")][:1]
            if close:
                hint = f" (did you mean {close[0]!r}?)"
            raise ConfigFileError(f"config file {path}: unknown key {key!r}{hint}")
        declared = _DECLARED[key]
        value = _special(declared, raw)
        ok, coerced = _coerce(fields[key], value)
        if not ok:
            expected = _describe(fields[key])
            if declared.setting.kind == "octal":
                expected = 'an octal mode such as 0o660 or "660"'
            raise ConfigFileError(f"config file {path}: {key} must be {expected}, got {_got(raw)}")
        choices = declared.setting.choices
        if choices and coerced not in choices:
            # Fields typed str with a fixed set of values (log_level); Literal-typed ones
            # were refused above, with the same list.
            listed = ", ".join(map(repr, choices))
            raise ConfigFileError(f"config file {path}: {key} must be one of {listed}")
        result[key] = coerced
    return result


def load_config_file(path: str) -> dict[str, object]:
    """Read and check a TOML configuration file; return field name -> value.

    Raises:
        ConfigFileError: unreadable, not TOML, an unknown key or a wrongly typed value.
    """
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"config file {path}: not valid TOML: {exc}") from exc
    return parse_config_values(values, path)


def format_config(config: Config, sources: Mapping[str, Source]) -> str:
    """The effective configuration as TOML a ``--config`` file accepts, each value followed by
    a comment saying where it came from (``flag``, ``env NAME``, ``file``, ``default``).

    Settings without a value (None: not set) are printed commented out.
    """
    lines = []
    for declared in settable(Config):
        key = declared.name
        value = getattr(config, key)
        source = sources.get(key, "default")
        if value is None or (declared.setting.positional and not value):
            lines.append(f"# {key} is not set  # {source}")
        else:
            lines.append(f"{key} = {declared.toml(value)}  # {source}")
    return "\n".join(lines) + "\n"
