"""The FastCGI client against nginx as php-fpm's client: throughput and CPU per request.

    .venv/bin/python benchmarks/client_vs_nginx.py            # 3 runs x 5 s (about 1 minute)
    .venv/bin/python benchmarks/client_vs_nginx.py --quick    # 1 run x 2 s: a look, not a result

The same ``hello.php`` load goes to php-fpm (``pm = static``, ``pm.max_children = 2``, the
harness's ``php-fpm-2`` configuration) three ways, 32 requests in flight each:

- ``client-ka``: ``FastCGIClient`` with its defaults (keep-alive, the pool learns php-fpm's
  limit) in this process, 32 tasks each sending one request after another;
- ``nginx-ka``: wrk -> nginx ``fastcgi_pass`` with upstream keep-alive (``fastcgi_keep_conn on``,
  ``keepalive 2``; the harness's ``php-fpm-2-ka`` stack);
- ``nginx``: wrk -> nginx ``fastcgi_pass``, a new connection per request (``php-fpm-2``).

Besides requests per second, it measures the CPU seconds every process of the path used (from
``/proc``: php-fpm's master and children, nginx's master and worker, wrk; this process for the
client) and reports requests per CPU second of the whole path, and of its FastCGI-client side
alone (everything but php-fpm). The ratios compare the client with each nginx row of the same
cycle; the median over runs is kept. The starvation check: every request of the client is
answered, with the body checked, and none waits longer than 5 s.

Results: ``benchmarks/results/client-vs-nginx.json`` and ``.md`` (``--out DIR`` elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.load import SCENARIOS_BY_NAME, lua_script, run_wrk, verify
from harness.procs import ProcessSet, children, raise_nofile_limit
from harness.stacks import APPS_DIR, STACKS_BY_NAME, Instance, start_instance, stop_instance

from fcgi_async.client import FastCGIClient, build_params

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
#: Requests in flight: the harness's hello-32 scenario.
CONCURRENCY = 32
#: The slowest a client request may be before the run counts as starved (the harness's probe).
STARVED_S = 5.0
ROWS = ("client-ka", "nginx-ka", "nginx")
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (php-fpm, nginx: master + workers)."""
    return cpu_s(pid) + sum(cpu_s(c) for c in children(pid))


async def client_load(sock: Path, duration_s: float) -> dict[str, Any]:
    """32 tasks sending hello.php one after another through one FastCGIClient."""
    params = build_params(
        "GET",
        "/hello",
        script_filename=str(APPS_DIR / "php" / "hello.php"),
        server_name="bench",
        server_port=80,
    )
    done = 0
    errors = 0
    slowest = 0.0
    async with FastCGIClient(f"unix:{sock}") as client:
        deadline = asyncio.get_running_loop().time() + duration_s

        async def worker() -> None:
            nonlocal done, errors, slowest
            loop = asyncio.get_running_loop()
            while loop.time() < deadline:
                started = loop.time()
                try:
                    response = await client.request(params, timeout=STARVED_S * 2)
                    if response.status_code != 200 or response.body != b"Hello, world!":
                        errors += 1
                except Exception:
                    errors += 1
                slowest = max(slowest, loop.time() - started)
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        wall = time.monotonic() - started
        limit = client.connection_limit
    return {
        "requests": done,
        "errors": errors,
        "seconds": wall,
        "slowest_s": slowest,
        "connection_limit": limit,
    }


def measure_client(inst: Instance, duration_s: float) -> dict[str, Any]:
    assert inst.backend is not None
    assert inst.sock is not None
    fpm_before = tree_cpu_s(inst.backend.pid)
    mine_before = time.process_time()
    result = asyncio.run(client_load(inst.sock, duration_s))
    client_cpu = time.process_time() - mine_before
    fpm_cpu = tree_cpu_s(inst.backend.pid) - fpm_before
    ok = result["requests"] - result["errors"]
    return {
        **result,
        "rps": ok / result["seconds"],
        "client_side_cpu_s": client_cpu,
        "php_fpm_cpu_s": fpm_cpu,
        "starved": result["slowest_s"] > STARVED_S,
    }


def measure_nginx(inst: Instance, duration_s: float, script: Path) -> dict[str, Any]:
    assert inst.backend is not None
    scenario = SCENARIOS_BY_NAME["hello-32"]
    fpm_before = tree_cpu_s(inst.backend.pid)
    nginx_before = tree_cpu_s(inst.nginx.pid)
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    data = run_wrk(inst.port, scenario, duration_s, 1, script)
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (wrk_after.ru_utime - wrk_before.ru_utime) + (
        wrk_after.ru_stime - wrk_before.ru_stime
    )
    seconds = data["duration_us"] / 1e6
    ok = data["requests"] - data["errors"]["status"]
    return {
        "requests": data["requests"],
        "errors": sum(data["errors"].values()),
        "seconds": seconds,
        "rps": data["rps"],
        "ok": ok,
        "client_side_cpu_s": tree_cpu_s(inst.nginx.pid) - nginx_before + wrk_cpu,
        "php_fpm_cpu_s": tree_cpu_s(inst.backend.pid) - fpm_before,
        "p99_us": data["latency_us"].get("99"),
    }


def per_cpu(row: dict[str, Any]) -> tuple[float, float]:
    """(requests per CPU second of the whole path, of its client side alone)."""
    ok = row["rps"] * row["seconds"]
    total = row["client_side_cpu_s"] + row["php_fpm_cpu_s"]
    return ok / total if total else 0.0, ok / row["client_side_cpu_s"] if row[
        "client_side_cpu_s"
    ] else 0.0


def summarize(runs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ROWS:
        rows = [r[name] for r in runs]
        out[name] = {
            "rps": statistics.median(r["rps"] for r in rows),
            "per_cpu_s": statistics.median(per_cpu(r)[0] for r in rows),
            "client_side_per_cpu_s": statistics.median(per_cpu(r)[1] for r in rows),
            "errors": sum(r["errors"] for r in rows),
        }
    for ref in ("nginx-ka", "nginx"):
        for key in ("rps", "per_cpu_s", "client_side_per_cpu_s"):
            index = 0 if key == "per_cpu_s" else 1
            ratios = []
            for r in runs:
                if key == "rps":
                    a, b = r["client-ka"]["rps"], r[ref]["rps"]
                else:
                    a, b = per_cpu(r["client-ka"])[index], per_cpu(r[ref])[index]
                ratios.append(a / b if b else 0.0)
            out[f"client_vs_{ref}_{key}"] = statistics.median(ratios)
    return out


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    lines = [
        "# FastCGI client vs nginx, same php-fpm (pm=static, 2 children), hello.php",
        "",
        f"{results['runs']} run(s) x {results['duration_s']:g} s, {CONCURRENCY} requests in"
        f" flight; load average at start {results['loadavg_start']}. Medians.",
        "",
        "| path | req/s | req per CPU s (whole path) | req per CPU s (client side) | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ROWS:
        r = s[name]
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['per_cpu_s']:.0f} | {r['client_side_per_cpu_s']:.0f}"
            f" | {r['errors']} |"
        )
    lines += ["", "Client ÷ nginx (median of per-cycle ratios):", ""]
    lines += [
        "| vs | req/s | per CPU s (whole path) | per CPU s (client side) |",
        "|---|---:|---:|---:|",
    ]
    for ref in ("nginx-ka", "nginx"):
        lines.append(
            f"| {ref} | {s[f'client_vs_{ref}_rps']:.2f}x | {s[f'client_vs_{ref}_per_cpu_s']:.2f}x"
            f" | {s[f'client_vs_{ref}_client_side_per_cpu_s']:.2f}x |"
        )
    slowest = max(r["client-ka"]["slowest_s"] for r in results["cycles"])
    limits = sorted({r["client-ka"]["connection_limit"] for r in results["cycles"]})
    lines += [
        "",
        f"Client: slowest request {slowest * 1000:.0f} ms; learned connection limit {limits}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="1 run x 2 s (a look, not a result)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.duration = 1, 2.0
    raise_nofile_limit()
    procs = ProcessSet()
    cycles: list[dict[str, dict[str, Any]]] = []
    loadavg = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="fcgi-client-bench-") as tmpdir:
        tmp = Path(tmpdir)
        try:
            plain = start_instance(STACKS_BY_NAME["php-fpm-2"], "raw", tmp, procs)
            keep = start_instance(STACKS_BY_NAME["php-fpm-2-ka"], "raw", tmp, procs)
            scenario = SCENARIOS_BY_NAME["hello-32"]
            for inst in (plain, keep):
                problem = verify(inst.port, scenario)
                if problem:
                    raise RuntimeError(f"{inst.stack.name}: {problem}")
            script = tmp / "hello.lua"
            script.write_text(lua_script(scenario))
            # Warm-up: opcache and php-fpm's children, for every path.
            measure_client(plain, 1.0)
            measure_nginx(keep, 1.0, script)
            measure_nginx(plain, 1.0, script)
            for run in range(args.runs):
                cycle = {
                    # The client uses the php-fpm of the no-keep-alive nginx (idle meanwhile).
                    "client-ka": measure_client(plain, args.duration),
                    "nginx-ka": measure_nginx(keep, args.duration, script),
                    "nginx": measure_nginx(plain, args.duration, script),
                }
                cycles.append(cycle)
                print(
                    f"run {run + 1}/{args.runs}: "
                    + ", ".join(f"{k} {v['rps']:.0f} req/s" for k, v in cycle.items()),
                    file=sys.stderr,
                )
            stop_instance(keep, procs)
            stop_instance(plain, procs)
        finally:
            procs.stop_all()
    results = {
        "runs": args.runs,
        "duration_s": args.duration,
        "quick": args.quick,
        "loadavg_start": round(loadavg, 2),
        "cpus": os.cpu_count(),
        "cycles": cycles,
        "summary": summarize(cycles),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "client-vs-nginx.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (args.out / "client-vs-nginx.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
