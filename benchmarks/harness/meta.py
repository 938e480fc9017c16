"""What a result needs to be judged later: versions, machine, load, date, git commit."""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .load import WRK
from .stacks import NGINX, PHP_FPM

REPO = Path(__file__).resolve().parents[2]


def _run(argv: list[str], *, with_stderr: bool = True) -> str:
    """The command's output ('' if it cannot run); ``nginx -v`` prints to stderr."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + (proc.stderr if with_stderr else "")).strip()


def _first_match(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1) if m else None


#: Python packages whose versions every result records (None when not installed).
PACKAGES = (
    "fcgi-async",
    "uvicorn",
    "uvloop",
    "httptools",
    "flask",
    "starlette",
    "flup",
    "fcgisgi",
    "matplotlib",
    "anyio",
)


def versions() -> dict[str, str | None]:
    """Versions of the servers, tools and packages; every key is always present (None when
    unknown), whatever the child interpreter printed or how long it took."""
    py = sys.executable
    # Ask the interpreter that runs the servers (it may not be the one importing this module).
    code = (
        "import json\nfrom importlib import metadata\nout = {}\n"
        f"for n in {list(PACKAGES)!r}:\n"
        "    try: out[n] = metadata.version(n)\n"
        "    except metadata.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))"
    )
    import json

    try:
        found = json.loads(_run([py, "-c", code], with_stderr=False) or "{}")
    except ValueError:  # a warning on stdout, a crash: the versions stay unknown
        found = {}
    if not isinstance(found, dict):
        found = {}
    return {
        "python": platform.python_version(),
        "nginx": _first_match(r"nginx/(\S+)", _run([NGINX, "-v"])),
        "php-fpm": _first_match(r"PHP (\S+)", _run([PHP_FPM, "-v"])),
        "wrk": _first_match(r"wrk (\S+)", _run([WRK, "-v"])),
        **{name: found.get(name) for name in PACKAGES},
    }


def cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or None
    return _first_match(r"model name\s*:\s*(.+)", text)


def mem_total_mib() -> int | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    kib = _first_match(r"MemTotal:\s*(\d+)", text)
    return int(kib) // 1024 if kib else None


def git_state() -> dict[str, Any]:
    """The commit measured, and which server files differed from it (uncommitted work)."""
    commit = _run(["git", "-C", str(REPO), "rev-parse", "HEAD"], with_stderr=False) or None
    paths = ["--", "fcgi_async", "adapters"]
    modified = _run(
        ["git", "-C", str(REPO), "diff", "--name-only", "HEAD", *paths], with_stderr=False
    )
    untracked = _run(
        ["git", "-C", str(REPO), "ls-files", "--others", "--exclude-standard", *paths],
        with_stderr=False,
    )
    changed = sorted({ln for ln in (modified + "\n" + untracked).splitlines() if ln.strip()})
    return {"commit": commit, "dirty": bool(changed), "uncommitted_server_files": changed}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def host() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_mib": mem_total_mib(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "uid": os.geteuid(),
    }
