"""Imports point one way: protocol <- core <- server <- features <- runner/supervisor <- cli.

Walks every module of ``fcgi_async`` and ``fcgi_async.adapters`` (the ``adapters/`` directory)
with :mod:`ast`, imports inside functions included, and fails on an import against the layer
order (docs/architecture.md, "Layers") or on a cycle. Imports under ``if TYPE_CHECKING:``
are held to the same order (a type must not point up either) but are left out of the cycle
check: they never run. tests/protocol/test_sans_io.py checks the other rule of the bottom
layer (no I/O library in fcgi_async.protocol).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Each layer and the layers it may import (itself included: within a layer any direction,
#: as long as there is no cycle). The client is a sibling of the server: both stand on the
#: protocol and the core, neither imports the other.
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset({"protocol"}),
    "core": frozenset({"protocol", "core"}),
    "server": frozenset({"protocol", "core", "server"}),
    "client": frozenset({"protocol", "core", "client"}),
    "features": frozenset({"protocol", "core", "server", "features"}),
    "process": frozenset({"protocol", "core", "server", "features", "process"}),
    # The CLI also picks an adapter by name (--interface).
    "cli": frozenset(
        {"protocol", "core", "server", "client", "features", "process", "cli", "adapters"}
    ),
    # The adapters depend on the core's types, the CGI view and the protocol's constants
    # only (checked module by module in ADAPTER_MAY_IMPORT).
    "adapters": frozenset({"protocol", "core", "adapters"}),
}

#: Modules by name (or package prefix) and their layer; the first match wins.
LAYER_OF: list[tuple[str, str]] = [
    ("fcgi_async.adapters", "adapters"),
    ("fcgi_async.protocol", "protocol"),
    ("fcgi_async.server", "server"),
    ("fcgi_async.client", "client"),
    ("fcgi_async.status", "features"),
    ("fcgi_async.logs", "features"),
    ("fcgi_async.features", "features"),
    ("fcgi_async.runner", "process"),
    ("fcgi_async.supervisor", "process"),
    ("fcgi_async.cli", "cli"),
    ("fcgi_async.__main__", "cli"),
    # The core: the package itself, settings and config, the CGI view, addresses, the
    # access-log format, the scoreboard's table, the app importer, the pid file.
    ("fcgi_async", "core"),
]

#: The core modules an adapter may import (besides the protocol and the adapters package).
ADAPTER_MAY_IMPORT = frozenset({"fcgi_async", "fcgi_async.types", "fcgi_async.cgi"})


def layer(module: str) -> str:
    """The layer of a module name of this project."""
    for prefix, name in LAYER_OF:
        if module == prefix or module.startswith(prefix + "."):
            return name
    raise AssertionError(f"{module}: in no layer (add it to LAYER_OF)")


def project_modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the project: name -> (file, is a package)."""
    found: dict[str, tuple[Path, bool]] = {}
    for directory, package in (
        (ROOT / "fcgi_async", "fcgi_async"),
        (ROOT / "adapters", "fcgi_async.adapters"),
    ):
        for path in sorted(directory.rglob("*.py")):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join([package, *parts])] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith(
        "TYPE_CHECKING"
    )


def imports(
    source: str, module: str, is_package: bool, known: set[str]
) -> Iterator[tuple[str, int, bool]]:
    """Project modules ``source`` imports: (target, line, under TYPE_CHECKING).

    Every import statement anywhere (module level, functions, branches) counts, and
    ``importlib.import_module``/``__import__`` of a literal or f-string prefix. ``from P import
    n`` is an import of ``P.n`` when that is a module (or ``from . import n``, which in this
    project always names a submodule, such as a C accelerator), else of ``P``.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            child_type_only = type_only
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk_stmt(stmt, True)
                for stmt in child.orelse:
                    yield from walk_stmt(stmt, type_only)
                continue
            yield from own(child, child_type_only)
            yield from walk(child, child_type_only)

    def walk_stmt(stmt: ast.AST, type_only: bool) -> Iterator[tuple[str, int, bool]]:
        yield from own(stmt, type_only)
        yield from walk(stmt, type_only)

    def own(node: ast.AST, type_only: bool) -> Iterator[tuple[str, int, bool]]:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                names.append(sub if sub in known or node.module is None else target)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func).split(".")[-1] in {"import_module", "__import__"}
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names = [arg.value]
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                names = [str(arg.values[0].value).rstrip(".")]
        for name in names:
            if name == "fcgi_async" or name.startswith("fcgi_async."):
                yield name, getattr(node, "lineno", 0), type_only

    yield from walk(ast.parse(source), False)


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    """Every project module's project imports."""
    modules = project_modules()
    known = set(modules)
    return {
        name: list(imports(path.read_text(encoding="utf-8"), name, is_package, known))
        for name, (path, is_package) in modules.items()
    }


def against_the_order(edges: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    """Every import that points up (or sideways between server and client), as text."""
    wrong = []
    for module, targets in edges.items():
        own = layer(module)
        for target, line, _ in targets:
            other = layer(target)
            if other not in ALLOWED[own]:
                wrong.append(f"{module}:{line} ({own}) imports {target} ({other})")
            elif own == "adapters" and other == "core" and target not in ADAPTER_MAY_IMPORT:
                wrong.append(f"{module}:{line} (adapters) imports {target}: not the core's types")
    return wrong


def _runs(module: str, target: str) -> list[str]:
    """What importing ``target`` from ``module`` runs: ``target`` and its packages'
    ``__init__`` (those that ``module`` itself is not inside: they are already running).

    The package counts: logs.py imported server/connection.py, whose package's ``__init__``
    imports server/server.py, which imported config.py, which imported logs.py.
    """
    parts = target.split(".")
    own = module.split(".")
    return [
        ".".join(parts[:n])
        for n in range(1, len(parts) + 1)
        if n == len(parts) or parts[:n] != own[:n]
    ]


def cycles(edges: dict[str, list[tuple[str, int, bool]]]) -> list[list[str]]:
    """The import cycles among imports that run (TYPE_CHECKING ones left out)."""
    runtime: dict[str, set[str]] = {}
    for module, targets in edges.items():
        runtime[module] = set()
        for target, _, type_only in targets:
            if not type_only:
                runtime[module].update(_runs(module, target))
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(runtime.get(module, ())):
            if state.get(target) == 1:
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(runtime):
        if module not in state:
            visit(module)
    return found


def test_every_module_is_walked() -> None:
    edges = graph()
    assert {"fcgi_async.server.state", "fcgi_async.features", "fcgi_async.adapters.asgi"} <= set(
        edges
    )
    # Function-level imports are seen: the CLI starts the server lazily.
    assert "fcgi_async.runner" in {t for t, _, _ in edges["fcgi_async.cli"]}


def test_imports_point_one_way() -> None:
    assert against_the_order(graph()) == []


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


KNOWN = {
    "fcgi_async.config",
    "fcgi_async.logs",
    "fcgi_async.server",
    "fcgi_async.server.server",
    "fcgi_async.status",
    "fcgi_async.protocol",
}


@pytest.mark.parametrize(
    ("module", "source"),
    [
        # The two function-level imports that held the old circle together.
        ("fcgi_async.config", "def f():\n    from .logs import compile_access_format"),
        ("fcgi_async.server.server", "def f():\n    from ..status import StatusApp"),
        ("fcgi_async.server.server", "if TYPE_CHECKING:\n    from ..status import StatusApp"),
        ("fcgi_async.protocol.records", "import fcgi_async.server"),
        ("fcgi_async.client.pool", "from ..server import Server"),
        ("fcgi_async.adapters.asgi", "from fcgi_async.config import Config"),
        ("fcgi_async.status", "importlib.import_module('fcgi_async.cli')"),
        ("fcgi_async.runner", "import_module(f'fcgi_async.cli.{x}')"),
    ],
)
def test_the_walker_finds_an_import_against_the_order(module: str, source: str) -> None:
    edges = {module: list(imports(source, module, False, KNOWN))}
    assert against_the_order(edges)


def test_the_walker_finds_a_cycle_through_a_function_level_import() -> None:
    edges = {
        "fcgi_async.config": list(
            imports("def f():\n    from .logs import x", "fcgi_async.config", False, KNOWN)
        ),
        "fcgi_async.logs": list(
            imports("from .config import Config", "fcgi_async.logs", False, KNOWN)
        ),
    }
    assert cycles(edges) == [["fcgi_async.config", "fcgi_async.logs", "fcgi_async.config"]]


def test_type_checking_imports_are_not_a_cycle() -> None:
    edges = {
        "fcgi_async.server.state": list(
            imports(
                "from .connection import RequestHandle", "fcgi_async.server.state", False, KNOWN
            )
        ),
        "fcgi_async.server.connection": list(
            imports(
                "if TYPE_CHECKING:\n    from .state import ServerState",
                "fcgi_async.server.connection",
                False,
                KNOWN,
            )
        ),
    }
    assert edges["fcgi_async.server.connection"][0][2] is True
    assert cycles(edges) == []


def test_the_walker_finds_a_cycle_through_a_package_init() -> None:
    # The old circle: config -> logs (in a function) -> server.connection, whose package's
    # __init__ imports server.server, which imports config.
    known = KNOWN | {"fcgi_async.server.connection"}
    sources = {
        "fcgi_async.config": ("def f():\n    from .logs import x", False),
        "fcgi_async.logs": ("from .server.connection import RequestHandle", False),
        "fcgi_async.server": ("from .server import Server", True),
        "fcgi_async.server.server": ("from ..config import Config", False),
        "fcgi_async.server.connection": ("import asyncio", False),
    }
    edges = {m: list(imports(src, m, pkg, known)) for m, (src, pkg) in sources.items()}
    assert cycles(edges) == [
        [
            "fcgi_async.config",
            "fcgi_async.logs",
            "fcgi_async.server",
            "fcgi_async.server.server",
            "fcgi_async.config",
        ]
    ]
