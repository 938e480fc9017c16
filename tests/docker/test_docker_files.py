"""What can be checked of docker/ without a Docker engine (none runs on the build machines).

The compose file parses and wires nginx to healthy app replicas; the nginx config passes
``nginx -t``; the image's entrypoint command starts the server as the image would, and the
image's health check (``fcgi-async call`` of the ping path, over FastCGI itself) succeeds
against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dockerfile_json_array(instruction: str) -> list[str]:
    text = (DOCKER / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        if line.startswith(instruction + " "):
            match = re.search(r"(CMD )?(\[.*\])\s*$", line)
            assert match, f"{instruction} is not in exec (JSON array) form: {line}"
            value = json.loads(match.group(2))
            assert isinstance(value, list)
            return [str(v) for v in value]
    raise AssertionError(f"no {instruction} in the Dockerfile")


def test_compose_file_parses_and_wires_nginx_to_healthy_replicas() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"app", "nginx"}
    assert services["app"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["app"]["deploy"]["replicas"] >= 2
    assert services["nginx"]["depends_on"]["app"]["condition"] == "service_healthy"
    # Only nginx is published, and only on loopback: never the FastCGI port.
    assert services["nginx"]["ports"] == ["127.0.0.1:8080:80"]
    assert "ports" not in services["app"]


def test_dockerfile_runs_as_non_root_with_a_fastcgi_healthcheck() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert text.count("FROM ") == 2, "multi-stage: a build stage and a runtime stage"
    assert re.search(r"^USER app$", text, re.M)
    health = _dockerfile_json_array("HEALTHCHECK")
    assert health[:2] == ["fcgi-async", "call"]
    assert health[-1] == _dockerfile_env()["FCGI_ASYNC_PING_PATH"] == "/ping"


def _dockerfile_env() -> dict[str, str]:
    """The Dockerfile's ``ENV KEY=value ...`` settings (unquoted values, as it writes them)."""
    joined = re.sub(r"\\\n\s*", " ", (DOCKER / "Dockerfile").read_text())
    values: dict[str, str] = {}
    for line in joined.splitlines():
        if line.startswith("ENV "):
            for pair in line.split()[1:]:
                key, _, value = pair.partition("=")
                values[key] = value
    return values


@pytest.mark.nginx
@pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx is not installed (.ci/run installs it)"
)
def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    conf = (DOCKER / "nginx.conf").read_text()
    # Outside Docker the name "app" does not resolve and fastcgi_params lives in /etc/nginx.
    conf = conf.replace("server app:9000", "server 127.0.0.1:9000")
    conf = conf.replace("include fastcgi_params;", "include /etc/nginx/fastcgi_params;")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_entrypoint_starts_the_server_and_the_healthcheck_passes(tmp_path: Path) -> None:
    entry = _dockerfile_json_array("ENTRYPOINT")
    health = _dockerfile_json_array("HEALTHCHECK")
    port = _free_port()
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCGI_ASYNC_")}
    env.update(_dockerfile_env())  # the image's settings, then what differs outside Docker:
    env.update(
        PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        FCGI_ASYNC_BIND=f"127.0.0.1:{port}",
        FCGI_ASYNC_APP_DIR=str(ROOT / "examples"),
    )
    health = [h.replace("127.0.0.1:9000", f"127.0.0.1:{port}") for h in health]
    proc = subprocess.Popen(entry, env=env, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            check = subprocess.run(health, env=env, capture_output=True, timeout=10, check=False)
            if check.returncode == 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, check.stderr.decode()
            time.sleep(0.2)
        assert check.stdout == b"pong"  # the server's ping answer, not the app's
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.stderr:
                proc.stderr.close()
