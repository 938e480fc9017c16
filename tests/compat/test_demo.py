"""``examples/demo.sh``, the README's demo command: it comes up, serves both apps, stops clean."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import NGINX, REPO_ROOT, free_port

pytestmark = pytest.mark.nginx

DEMO = REPO_ROOT / "examples" / "demo.sh"


def test_demo_serves_both_apps_and_stops_on_sigterm(tmp_path: Path) -> None:
    if not os.path.exists(NGINX):
        pytest.skip(f"{NGINX} is missing (.ci/run installs the nginx package)")
    if Path(sys.prefix).resolve() != (REPO_ROOT / ".venv").resolve():
        pytest.skip("demo.sh uses the repository's .venv; these tests run from another Python")
    port = free_port()
    out = tmp_path / "demo.out"
    with open(out, "wb") as out_file:
        proc = subprocess.Popen(
            ["bash", str(DEMO)],
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PORT=str(port)),
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        text = out.read_text()
        for mount, name in (("flask", "Flask"), ("starlette", "Starlette")):
            url = f"http://127.0.0.1:{port}/{mount}/"
            assert url in text
            response = httpx.get(url, timeout=30.0)
            assert response.status_code == 200
            assert f"Hello from {name} on fcgi-async" in response.text
        match = re.search(r"logs in (\S+?)\)?:", text)
        assert match, text
        run_dir = Path(match.group(1))
        assert run_dir.is_dir()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail(f"demo.sh ignored SIGTERM:\n{out.read_text()}")
    assert proc.returncode == 128 + signal.SIGTERM, out.read_text()
    assert not run_dir.exists(), "demo.sh left its run directory behind"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5.0)
