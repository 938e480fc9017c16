"""Scenarios and the load driver: wrk through nginx, bounded by ``-d`` and a subprocess deadline.

Throughput and errors come from a Lua ``done()`` hook that prints one JSON line; the latency
percentiles come from wrk's own ``--latency`` distribution (the Lua numbers are kept as a
fallback and in the raw output).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import rss_kib

WRK = shutil.which("wrk") or "/usr/bin/wrk"
UPLOAD_BYTES = 10 * 1024 * 1024
ONE_MIB = 1024 * 1024
#: A request not answered after this long counts as a timeout error (and its latency is not
#: recorded). Short enough that a connection the server never serves shows up within a run.
WRK_TIMEOUT_S = 2
#: Extra seconds wrk may take beyond ``-d`` before the harness kills it.
WRK_GRACE_S = 30


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str  # raw | flask | starlette: which app the stacks run
    path: str
    connections: int
    description: str
    method: str = "GET"
    expect: bytes | int = b"Hello, world!"  # the body, or its length

    def check(self, body: bytes) -> str | None:
        if isinstance(self.expect, int):
            if len(body) != self.expect:
                return f"expected {self.expect} bytes, got {len(body)}"
            return None
        if body != self.expect:
            return f"expected body {self.expect!r}, got {body[:60]!r}"
        return None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "hello-32",
        "raw",
        "/hello",
        32,
        "13-byte hello, raw app (ASGI, WSGI, PHP echo, nginx return 200), 32 connections",
    ),
    Scenario("hello-256", "raw", "/hello", 256, "13-byte hello, raw app, 256 connections"),
    Scenario("flask-hello", "flask", "/hello", 32, "13-byte hello from Flask, 32 connections"),
    Scenario(
        "starlette-hello", "starlette", "/hello", 32, "13-byte hello from Starlette, 32 connections"
    ),
    Scenario(
        "1mib", "raw", "/1mib", 32, "1 MiB response body, raw app, 32 connections", expect=ONE_MIB
    ),
    Scenario(
        "upload-10mib",
        "raw",
        "/upload",
        8,
        "10 MiB POST body read in full by the app (answers its length), 8 connections",
        method="POST",
        expect=str(UPLOAD_BYTES).encode(),
    ),
)
SCENARIOS_BY_NAME = {s.name: s for s in SCENARIOS}


def applies(scenario: Scenario, families: tuple[str, ...], server: str) -> bool:
    """Whether a stack serving ``families`` with ``server`` takes part in ``scenario``."""
    if scenario.family not in families:
        return False
    # nginx alone has no app to read an upload: `return` answers before the body is read and
    # nginx then discards it, which measures nothing comparable.
    return not (server == "nginx" and scenario.method == "POST")


_DONE_LUA = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %.0f, "p90": %.0f, "p99": %.0f, "max": %.0f, "mean": %.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def lua_script(scenario: Scenario) -> str:
    head = ""
    if scenario.method == "POST":
        head = (
            'wrk.method = "POST"\n'
            f'wrk.body = string.rep("x", {UPLOAD_BYTES})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
    return head + _DONE_LUA


def fetch(port: int, scenario: Scenario, timeout_s: float = 30.0) -> tuple[int, bytes]:
    """One request through nginx, as wrk will send it; returns (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        body = b"x" * UPLOAD_BYTES if scenario.method == "POST" else None
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(scenario.method, scenario.path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def verify(port: int, scenario: Scenario) -> str | None:
    """None if the stack answers ``scenario`` correctly, else what is wrong."""
    try:
        status, body = fetch(port, scenario)
    except OSError as exc:
        return f"request failed: {exc!r}"
    except http.client.HTTPException as exc:
        return f"bad HTTP response: {exc!r}"
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    return scenario.check(body)


#: How long every one of a scenario's connections may wait for its first answer in the probe.
PROBE_TIMEOUT_S = 5.0


async def _read_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length, chunked = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        await reader.readexactly(length)
        return
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


async def _probe_async(port: int, path: str, connections: int, timeout_s: float) -> int:
    answered = 0
    all_done = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        # Like a wrk connection: send, read the whole answer, keep the connection open.
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        await _read_response(reader)
        answered += 1
        if answered == connections:
            all_done.set()

    tasks = [asyncio.ensure_future(one()) for _ in range(connections)]
    try:
        await asyncio.wait_for(all_done.wait(), timeout_s)
    except asyncio.TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
    return answered


def probe_fairness(port: int, scenario: Scenario, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """How many of ``scenario.connections`` concurrent clients, each sending one request, get an
    answer within ``timeout_s``.

    wrk cannot show this: a connection that is never served records no latency and (in wrk 4.1)
    no timeout, so a stack that serves one client and starves the rest looks *fast*. php-fpm with
    upstream keep-alive does exactly that when clients outnumber children: a child keeps serving
    the connection it holds while nginx's other connections wait in its listen queue.
    """
    return asyncio.run(_probe_async(port, scenario.path, scenario.connections, timeout_s))


_LAT_RE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_latency_distribution(text: str) -> dict[str, float]:
    """The ``--latency`` percentiles wrk printed, in microseconds (``{"p50": ...}``)."""
    return {
        f"p{m.group(1)}": float(m.group(2)) * _UNIT_US[m.group(3)] for m in _LAT_RE.finditer(text)
    }


def run_wrk(
    port: int,
    scenario: Scenario,
    duration_s: float,
    threads: int,
    script: Path,
    pids: Callable[[], list[int]] | None = None,
    connections: int | None = None,
) -> dict[str, Any]:
    """Drive ``scenario`` for ``duration_s``; return the parsed result.

    While wrk runs, the RSS of ``pids()`` is sampled; the peak (max over samples of the largest
    process) is returned as ``peak_rss_kib``.

    Raises:
        RuntimeError: wrk failed or printed no result.
    """
    conns = connections or scenario.connections
    argv = [
        WRK,
        "-t",
        str(max(1, min(threads, conns))),
        "-c",
        str(conns),
        "-d",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{WRK_TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{scenario.path}",
    ]
    peak = 0
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    deadline = started + duration_s + WRK_GRACE_S
    try:
        while proc.poll() is None:
            if pids is not None:
                for pid in pids():
                    peak = max(peak, rss_kib(pid) or 0)
            if time.monotonic() > deadline:
                raise RuntimeError(f"wrk did not finish within {duration_s + WRK_GRACE_S:.0f} s")
            time.sleep(0.1)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited {proc.returncode}: {(err or out).strip()[-500:]}")
    data: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    seconds = data["duration_us"] / 1e6
    # Only 2xx/3xx answers count: a server answering 502 quickly must not look fast.
    ok = data["requests"] - data["errors"]["status"]
    data["rps"] = ok / seconds if seconds > 0 else 0.0
    data["rps_all_answers"] = data["requests"] / seconds if seconds > 0 else 0.0
    dist = parse_latency_distribution(out)
    data["latency_source"] = "wrk --latency" if dist else "lua"
    if dist:
        data["latency_us"].update(dist)
    data["peak_rss_kib"] = peak or None
    data["connections"] = conns
    data["wrk_output"] = "\n".join(ln for ln in out.splitlines() if not ln.startswith("WRKJSON "))
    return data
