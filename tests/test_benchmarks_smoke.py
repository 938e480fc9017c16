"""Keep the benchmark harness working: run it for about a second per stack, check its outputs.

No timing is asserted (benchmarks are not unit tests): only that the harness brings the stacks
up, drives them, stops them, and writes JSON and Markdown with the expected shape.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed"),
    pytest.mark.skipif(not os.access(WRK, os.X_OK), reason="wrk is not installed"),
]


def test_harness_tiny_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--duration",
            "1",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--stacks",
            "nginx,fcgi-async-asgi-1w",
            "--scenarios",
            "hello-32",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hello-32" in proc.stderr  # progress lines

    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("schema", "meta", "stacks", "scenarios", "runs", "summary", "memory", "targets"):
        assert key in results
    meta = results["meta"]
    for key in (
        "date_start",
        "date_end",
        "command",
        "loadavg_start",
        "loadavg_end",
        "host",
        "versions",
        "settings",
        "git",
    ):
        assert key in meta
    for key in ("nginx", "python", "php-fpm", "uvicorn", "fcgi-async"):
        assert key in meta["versions"]
    assert meta["host"]["cpu_count"] >= 1

    assert set(results["stacks"]) == {"nginx", "fcgi-async-asgi-1w"}
    rows = results["summary"]["hello-32"]
    for stack in ("nginx", "fcgi-async-asgi-1w"):
        row = rows[stack]
        assert row["available"], row
        assert row["rps_median"] > 0
        assert row["p50_ms"] >= 0
        assert row["p99_ms"] >= row["p50_ms"]
    assert rows["fcgi-async-asgi-1w"]["ratio_vs"]["fcgi-async-asgi-1w"] == pytest.approx(1.0)
    assert "fcgi-async-asgi-1w" in rows["nginx"]["ratio_vs"]
    assert {r["stack"] for r in results["runs"]} == {"nginx", "fcgi-async-asgi-1w"}

    mem = results["memory"]["fcgi-async-asgi-1w"]
    for key in ("idle_mib", "load_mib", "load_rps", "conns_1000_mib", "conns_held"):
        assert key in mem, mem
    assert mem["idle_mib"] > 0, mem
    for key in ("load_mib", "conns_1000_mib", "conns_held"):
        # Measured, or (wrk or the connection holder failing on a busy machine) None with the
        # reason in the note: the shape of the results never depends on how the run went.
        assert mem[key] is not None or mem.get("note"), mem
    assert "nginx" not in results["memory"]

    md = (tmp_path / "results.md").read_text()
    assert "## hello-32" in md
    assert "| stack | ok req/s (median) |" in md
    assert "## Memory" in md
    assert "## Targets" in md
