"""The protocol layer stays sans-IO: no module in it imports an I/O or event-loop library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fcgi_async.protocol

FORBIDDEN = frozenset({"asyncio", "socket", "selectors", "uvloop", "anyio", "trio"})
PACKAGE = Path(fcgi_async.protocol.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def _imported_roots(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import anywhere in ``tree`` (functions included)."""
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", ""))
            in {"__import__", "import_module"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_modules_found() -> None:
    names = {m.name for m in MODULES}
    assert {"__init__.py", "server.py", "client.py", "records.py", "_buffer.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_no_io_imports(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"), filename=str(module))
    assert not (_imported_roots(tree) & FORBIDDEN)


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import socket as s",
        "import os, selectors",
        "from trio import lowlevel",
        "from anyio.abc import ByteStream",
        "import uvloop.loop",
        "def f():\n    import asyncio",
        "importlib.import_module('socket')",
        "__import__('asyncio.events')",
    ],
)
def test_the_walker_catches(source: str) -> None:
    assert _imported_roots(ast.parse(source)) & FORBIDDEN


def test_the_walker_ignores_relative_imports() -> None:
    assert not _imported_roots(ast.parse("from .socket import x\nfrom . import asyncio"))
