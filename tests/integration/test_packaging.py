"""What ``pip install`` gives a user: the wheel's contents and the installed commands."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fcgi_async import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_holds_the_package_the_adapters_and_the_type_marker(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("fcgi_async-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "fcgi_async/__init__.py",
        "fcgi_async/__main__.py",
        "fcgi_async/py.typed",
        "fcgi_async/protocol/server.py",
        "fcgi_async/server/connection.py",
        "fcgi_async/client/transport.py",
        # adapters/ is installed as fcgi_async.adapters
        "fcgi_async/adapters/__init__.py",
        "fcgi_async/adapters/asgi.py",
        "fcgi_async/adapters/wsgi.py",
    ):
        assert required in names, required
    assert not any(n.startswith(("adapters/", "tests/", "benchmarks/")) for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Python: >=3.10" in text
    # 3.10 gets the backports fcgi_async._compat imports there
    assert 'Requires-Dist: tomli>=2; python_version < "3.11"' in text
    assert 'Requires-Dist: async-timeout>=4.0.3; python_version < "3.11"' in text
    for minor in (10, 11, 12, 13):  # tests/run.sh --matrix runs the suite on each
        assert f"Classifier: Programming Language :: Python :: 3.{minor}\n" in text
    assert "Requires-Dist: anyio" in text
    assert "Requires-Dist: uvloop" in text
    assert "Provides-Extra: client" in text
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "fcgi-async = fcgi_async.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_console_script_and_module_entry_point() -> None:
    script = Path(sys.executable).parent / "fcgi-async"
    assert script.exists(), "pip install puts the fcgi-async command next to python"
    for argv in ([str(script), "--version"], [sys.executable, "-m", "fcgi_async", "--version"]):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"fcgi-async {__version__}"
