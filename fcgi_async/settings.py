"""Each setting declared once: the declaration every way of setting it is generated from.

A :class:`~fcgi_async.config.Config` field is declared with :func:`setting`, which stores a
:class:`Setting` in the field's metadata: its help text and group, its kind (how text from a
flag or an ``FCGI_ASYNC_*`` variable becomes the value, how the value prints as TOML), its
choices and its bounds. From the declarations come the command line's options
(:mod:`fcgi_async.cli`), the environment variables, the config file's keys
(:mod:`fcgi_async.configfile`), ``--check-config``'s report, the README's option table
(:func:`options_table`) and the checks :class:`~fcgi_async.config.Config` runs on every value.

Names follow from the field: the flag is ``--`` + the field name without a unit suffix ``_s``,
with dashes (``keepalive_timeout_s`` is ``--keepalive-timeout``) unless the declaration names
it; the variable is ``FCGI_ASYNC_`` + the flag's name (``FCGI_ASYNC_KEEPALIVE_TIMEOUT``); the
file key is the field name.

This module is a leaf: it imports nothing of the package, so the Config can use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

#: Every option is also an environment variable named with this prefix.
ENV_PREFIX = "FCGI_ASYNC_"
#: The longest any time setting may be (a week). Longer is no timeout a deployment means, and
#: NaN or infinity would silently switch a protection off; 0 turns off the settings that can be.
MAX_SECONDS = 7 * 24 * 3600.0

#: How a setting's text (a flag's argument, an environment variable) becomes its value, and
#: how its value prints:
#:
#: - ``str``: as given; ``int``: a whole number (with ``bounds``); ``seconds``: a number of
#:   seconds, finite, above 0 (or 0 with ``off``), up to :data:`MAX_SECONDS`;
#: - ``bool``: a flag without argument; its variable takes 1/true/yes/on or 0/false/no/off;
#: - ``octal``: a file mode such as ``660`` (``0o660`` or ``"660"`` in the file);
#: - ``id``: a user or group name, or a numeric id (an integer will do in the file);
#: - ``list``: a repeatable flag, one value each (its variable: a comma-separated list);
#: - ``csv``: one flag with a comma-separated list (the file: an array of strings).
Kind = Literal["str", "int", "seconds", "bool", "octal", "id", "list", "csv"]

#: A check beyond the kind's: (field name, value) -> the error message, or None when valid.
Check = Callable[[str, Any], str | None]

T = TypeVar("T")

_METADATA_KEY = "fcgi_async.setting"


@dataclass(frozen=True, slots=True)
class Group:
    """A heading of ``--help`` (an argparse argument group), with its optional paragraph."""

    title: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Setting:
    """How one Config field is set, checked, shown and documented (see :func:`setting`)."""

    #: One line for ``--help`` and the README; ``%(default)s`` is the default, ``%%`` a ``%``.
    help: str
    #: The ``--help`` heading; None for the positional argument and derived fields.
    group: Group | None = None
    kind: Kind = "str"
    #: The long flag when it is not derived from the field name (``--no-multiplex``).
    flag: str | None = None
    #: A one-letter alias (``-b``).
    short: str | None = None
    #: The flag argument's name in ``--help`` (argparse's default: the field name in capitals).
    metavar: str | None = None
    #: The values a flag, variable or file may give (Config itself does not check them).
    choices: tuple[str, ...] = ()
    #: ``int``: the inclusive range every value must be within, whoever set it.
    bounds: tuple[int, int] | None = None
    #: ``seconds``: 0 is allowed and turns the feature off.
    off: bool = False
    #: A ``bool`` flag that sets the field to False (``--no-multiplex`` for ``multiplex``).
    negate: bool = False
    #: An empty string from a flag, variable or file means None (not set).
    empty_is_none: bool = False
    #: ``csv`` items are lowercased (names compared without case).
    lower: bool = False
    #: A further check of the value, whoever set it.
    check: Check | None = None
    #: The positional argument (``MODULE:ATTR``): no flag and no variable.
    positional: bool = False
    #: False: derived by the code (never a flag, a variable or a file key).
    settable: bool = True


def setting(
    default: T,
    help: str,
    group: Group | None = None,
    *,
    kind: Kind = "str",
    flag: str | None = None,
    short: str | None = None,
    metavar: str | None = None,
    choices: tuple[str, ...] = (),
    bounds: tuple[int, int] | None = None,
    off: bool = False,
    negate: bool = False,
    empty_is_none: bool = False,
    lower: bool = False,
    check: Check | None = None,
    positional: bool = False,
    settable: bool = True,
    compare: bool = True,
) -> T:
    """A dataclass field with ``default`` that carries its :class:`Setting` declaration.

    The parameters are the Setting's (see its attributes); ``compare`` is the dataclass
    field's.
    """
    declared = Setting(
        help, group, kind, flag, short, metavar, choices, bounds, off, negate, empty_is_none,
        lower, check, positional, settable,
    )  # fmt: skip
    return dataclasses.field(default=default, compare=compare, metadata={_METADATA_KEY: declared})


# ------------------------------------------------------------------------- text -> value


class TextError(argparse.ArgumentTypeError, ValueError):
    """Text that is no value of a setting's kind. A ValueError for callers; for argparse an
    ArgumentTypeError, whose message it shows as it is."""


def parse_octal(text: str) -> int:
    """``"660"`` -> ``0o660``.

    Raises:
        TextError: not octal digits.
    """
    try:
        return int(text, 8)
    except ValueError:
        raise TextError(f"{text!r} is not an octal mode like 660") from None


def parse_bool(text: str) -> bool:
    """A variable's boolean: 1/true/yes/on or 0/false/no/off (any case), empty is false.

    Raises:
        TextError: anything else.
    """
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise TextError(f"{text!r} is not a boolean")


def split_list(text: str) -> tuple[str, ...]:
    """A comma-separated list, items stripped, empty ones dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


#: kind -> the function argparse calls on a flag's argument (argparse names it in "invalid int
#: value" errors, hence the builtins).
_FLAG_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int,
    "seconds": float,
    "octal": parse_octal,
}


# ------------------------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True)
class Declared:
    """One declared field: its name, default and :class:`Setting`, with the names derived."""

    name: str
    default: Any
    setting: Setting

    @property
    def flag(self) -> str | None:
        """The long flag (``--keepalive-timeout``); None for the positional and derived ones."""
        if self.setting.positional or not self.setting.settable:
            return None
        return self.setting.flag or "--" + self.name.removesuffix("_s").replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """The long flag and the short one, as argparse takes them."""
        if self.flag is None:
            return ()
        return (self.flag, self.setting.short) if self.setting.short else (self.flag,)

    @property
    def env(self) -> str | None:
        """``FCGI_ASYNC_`` + the flag's name (``FCGI_ASYNC_NO_MULTIPLEX``); None without a flag."""
        flag = self.flag
        return None if flag is None else ENV_PREFIX + flag[2:].replace("-", "_").upper()

    @property
    def flag_type(self) -> Callable[[str], Any] | None:
        """What argparse calls on the flag's argument (None: the text itself)."""
        return _FLAG_TYPES.get(self.setting.kind)

    def from_flag(self, given: Any) -> Any:
        """The field's value from what argparse parsed for the flag."""
        s = self.setting
        if s.kind == "bool":
            return not given if s.negate else bool(given)
        if s.kind == "list":
            return tuple(given)
        if s.kind == "csv":
            items = split_list(given)
            return tuple(i.lower() for i in items) if s.lower else items
        if s.empty_is_none and given == "":
            return None
        return given

    def from_text(self, text: str) -> Any:
        """The field's value from an environment variable's text.

        Raises:
            ValueError: the text is not of the setting's kind (a :class:`TextError`, or the
                builtin int()'s and float()'s own).
            LookupError: a value outside the choices (the message lists them).
        """
        s = self.setting
        if s.kind == "bool":
            return self.from_flag(parse_bool(text))
        if s.kind == "list":
            return split_list(text)
        convert = self.flag_type
        value = self.from_flag(convert(text) if convert else text)
        if s.choices and value not in s.choices:
            raise LookupError(f"{text!r} is not one of {', '.join(s.choices)}")
        return value

    def from_file(self, value: Any) -> Any:
        """A config file's value (already of the field's type) as the field holds it."""
        s = self.setting
        if s.kind == "csv" and isinstance(value, tuple):
            return self.from_flag(",".join(value))
        if s.empty_is_none and value == "":
            return None
        return value

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this field (the message names it), or None."""
        s, name = self.setting, self.name
        if s.bounds is not None:
            low, high = s.bounds
            if type(value) is not int or not low <= value <= high:
                return f"{name} must be a whole number from {low} to {high:,}, got {value!r}"
        # NaN compares false with everything: "not value > 0" would let it through and
        # silently switch the protection off; isfinite() refuses NaN and infinities.
        if s.kind == "seconds" and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (value == 0 and not s.off)
            or value > MAX_SECONDS
        ):
            what = "0 (off) or a number of seconds" if s.off else "a number of seconds above 0"
            return f"{name} must be {what} up to {MAX_SECONDS:,.0f}, got {value!r}"
        return s.check(name, value) if s.check is not None else None

    def default_text(self) -> str:
        """The default as ``--help`` shows it (a flag's spelling: lists comma-separated)."""
        if isinstance(self.default, tuple):
            return ",".join(map(str, self.default))
        return str(self.default)

    def help_text(self) -> str:
        """The help with the default filled in, ``%`` still doubled for argparse."""
        return self.setting.help.replace("%(default)s", self.default_text().replace("%", "%%"))

    def toml(self, value: Any) -> str:
        """``value`` as a TOML value a config file accepts for this key."""
        if self.setting.kind == "octal" and isinstance(value, int):
            return f"0o{value:03o}"
        return toml_value(value)


def toml_value(value: object) -> str:
    """A str, bool, number or sequence of them as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


#: Dataclass -> its declarations (the fields never change once the class exists).
_DECLARATIONS: dict[type, tuple[Declared, ...]] = {}


def declarations(cls: type) -> tuple[Declared, ...]:
    """Every field of the dataclass ``cls`` with its declaration, in field order.

    Raises:
        TypeError: a field was not declared with :func:`setting`.
    """
    cached = _DECLARATIONS.get(cls)
    if cached is not None:
        return cached
    result = []
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(_METADATA_KEY)
        if not isinstance(declared, Setting):
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with setting()")
        result.append(Declared(field.name, field.default, declared))
    _DECLARATIONS[cls] = tuple(result)
    return _DECLARATIONS[cls]


def settable(cls: type) -> tuple[Declared, ...]:
    """The declarations a user sets (flag, variable or file key), in field order."""
    return tuple(d for d in declarations(cls) if d.setting.settable)


def check_values(obj: object) -> str | None:
    """The first field of the declared dataclass instance ``obj`` whose value is invalid,
    as its error message; None when every value is valid."""
    for declared in declarations(type(obj)):
        message = declared.problem(getattr(obj, declared.name))
        if message is not None:
            return message
    return None


# ------------------------------------------------------------------------- the README table

#: The README's option table sits between these lines (see :func:`splice_readme`).
README_BEGIN = "<!-- options: written by python -m fcgi_async.config --readme; do not edit -->"
README_END = "<!-- end of options -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _values(d: Declared) -> str:
    """What a setting takes, in words, for the README table."""
    s = d.setting
    if s.choices:
        return ", ".join(f"`{c}`" for c in s.choices)
    if s.bounds is not None:
        return f"{s.bounds[0]} to {s.bounds[1]:,}"
    if s.kind == "seconds":
        return f"seconds, {'0 (off) ' if s.off else 'above 0 '}up to {MAX_SECONDS:,.0f}"
    words = {
        "bool": "flag; variable: `1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`",
        "octal": 'octal mode (`660`; file: `0o660` or `"660"`)',
        "id": "name or numeric id",
        "list": "repeatable; variable: comma-separated; file: array",
        "csv": "comma-separated; file: array",
    }
    return words.get(s.kind, "text")


def options_table(cls: type) -> str:
    """The README's table of every setting of ``cls``, between README_BEGIN and README_END:
    flag, environment variable, file key, default, values taken and the help text."""
    lines = [
        README_BEGIN,
        "",
        "| flag | environment variable | file key | default | values | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for d in settable(cls):
        if d.setting.positional:
            flag = f"`{d.setting.metavar or d.name.upper()}` (argument)"
        else:
            flag = ", ".join(f"`{f}`" for f in d.flags)
        env = f"`{d.env}`" if d.env else "—"
        default = "not set" if d.default in (None, "") else f"`{_cell(d.toml(d.default))}`"
        # The default has its own column; argparse's %% is a plain % here.
        help_text = d.setting.help.replace(" (%(default)s)", "")
        help_text = help_text.replace("; default: %(default)s", "")
        described = help_text.replace("%(default)s", d.default_text()).replace("%%", "%")
        lines.append(
            f"| {flag} | {env} | `{d.name}` | {default} | {_values(d)} | {_cell(described)} |"
        )
    lines += ["", README_END]
    return "\n".join(lines)


def splice_readme(text: str, section: str) -> str:
    """``text`` with the part from README_BEGIN to README_END replaced by ``section``.

    Raises:
        ValueError: ``text`` lacks the markers.
    """
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError("README.md has no option table markers")
    return text[:start] + section + text[end + len(README_END) :]
