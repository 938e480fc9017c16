"""Benchmark fcgi-async against php-fpm, uvicorn and the other Python FastCGI servers.

    .venv/bin/python benchmarks/run.py                 # full run (about 20 minutes)
    .venv/bin/python benchmarks/run.py --quick         # 1 run x 2 s: a look, not a result
    .venv/bin/python benchmarks/run.py --list          # stacks, scenarios, what is available
    .venv/bin/python benchmarks/run.py --readme README.md   # also rewrite the README's results

Every stack is nginx (one worker process) in front of one server, on 127.0.0.1 and unix sockets
in a temporary directory; wrk drives it through nginx. Stacks are measured in turn (A B C, A B C
…) so that drift hits all of them alike; each figure is the median of the runs, and ratios are
taken against fcgi-async measured in the same cycle. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import meta as meta_mod
from harness.load import (
    PROBE_TIMEOUT_S,
    SCENARIOS,
    SCENARIOS_BY_NAME,
    WRK,
    Scenario,
    applies,
    lua_script,
    probe_fairness,
    run_wrk,
    verify,
)
from harness.procs import ProcessSet, StartError, raise_nofile_limit, rss_kib
from harness.report import chart, markdown, readme_section, splice_readme, summarize, targets
from harness.stacks import (
    STACKS,
    STACKS_BY_NAME,
    Instance,
    Stack,
    availability,
    family_availability,
    fcgi_async_help,
    start_instance,
    stop_instance,
)

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
HOLDER = HERE / "harness" / "holdconns.py"
FAMILY_ORDER = ("raw", "flask", "starlette")
#: The measurements of the memory phase, always present in ``results["memory"][stack]``.
MEMORY_KEYS = ("idle_mib", "load_mib", "load_rps", "conns_1000_mib", "conns_held")
#: Connections the memory phase holds open against one worker.
IDLE_CONNS = 1000


class Progress:
    """One line per step on stderr: count, elapsed, a rough time left, and the result."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done:3d}/{self.total}  {_mmss(elapsed)} elapsed, ~{_mmss(left)} left] {text}",
            file=sys.stderr,
            flush=True,
        )

    @staticmethod
    def note(text: str) -> None:
        print(f"  {text}", file=sys.stderr, flush=True)


def _mmss(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def _csv(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark fcgi-async against php-fpm, uvicorn, fcgisgi and flup, "
        "through nginx, with wrk.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 run of 2 s per stack and scenario, short warm-up (a look, not a result)",
    )
    p.add_argument("--duration", type=float, help="seconds of load per measurement (default 5)")
    p.add_argument(
        "--runs", type=int, help="cycles over all stacks; the median is kept (default 3)"
    )
    p.add_argument("--warmup", type=float, help="seconds of load per stack before measuring (1)")
    p.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (default 1: leaves the other CPU to nginx and the server)",
    )
    p.add_argument(
        "--stacks",
        default=",".join(s.name for s in STACKS),
        help="comma-separated stacks (default: all; see --list)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated scenarios (default: all; see --list)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the RSS measurements")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"directory for results.json, results.md, results.png ({DEFAULT_OUT})",
    )
    p.add_argument(
        "--keep-tmp",
        action="store_true",
        help="keep the temporary directory (configs, logs) and print its path",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        metavar="LOAD",
        help="first wait until the 1-minute load average is below LOAD "
        "(at most --wait-quiet-max seconds, then run anyway)",
    )
    p.add_argument(
        "--wait-quiet-max",
        type=float,
        default=1800.0,
        metavar="S",
        help="longest wait for --wait-quiet (%(default)s s)",
    )
    p.add_argument("--list", action="store_true", help="list stacks and scenarios, then exit")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: rewrite results.md and results.png in --out from a "
        "results.json written earlier",
    )
    p.add_argument(
        "--readme",
        type=Path,
        metavar="FILE",
        help="also rewrite the results section of FILE (the project's README.md) from this run "
        "(or from --render's JSON); the section lies between two marker comments",
    )
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.runs = args.runs or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.stack_names = _csv(args.stacks, STACKS_BY_NAME, "stack")
    args.scenario_names = _csv(args.scenarios, SCENARIOS_BY_NAME, "scenario")
    if args.runs < 1 or args.duration < 1:
        raise SystemExit("--runs and --duration must be at least 1")
    return args


def _list(help_text: str) -> int:
    print("stacks:")
    for st in STACKS:
        why = availability(st, help_text)
        print(f"  {st.name:20s} {'ok' if why is None else 'NOT AVAILABLE: ' + why}")
        print(f"  {'':20s} {st.description}")
    print("scenarios:")
    for sc in SCENARIOS:
        print(f"  {sc.name:16s} {sc.description}")
    return 0


def _wait_quiet(threshold: float, max_s: float) -> None:
    """Wait until the 1-minute load average drops below ``threshold`` (bounded by ``max_s``)."""
    deadline = time.monotonic() + max_s
    while True:
        load = meta_mod.loadavg()
        if load[0] < threshold:
            print(f"load average {load}: quiet enough (< {threshold})", file=sys.stderr)
            return
        if time.monotonic() > deadline:
            print(
                f"load average {load} still >= {threshold} after {max_s:.0f} s; running anyway",
                file=sys.stderr,
            )
            return
        print(
            f"waiting for a quiet machine: load average {load} (want < {threshold})",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(15)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    help_text = fcgi_async_help()
    if args.list:
        return _list(help_text)
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        # Medians, ratios and targets are derived from the raw runs: derive them anew, so a
        # change to the report applies to results measured before it.
        saved["summary"] = summarize(saved)
        saved["targets"] = targets(saved, saved["summary"])
        _write(saved, args.out, args.readme)
        return 0
    if not Path(WRK).exists():
        print(f"wrk not found ({WRK}); apt-get install wrk", file=sys.stderr)
        return 2
    raise_nofile_limit()
    # Both stop the run cleanly, even when SIGINT was inherited as ignored (a `cmd &` job).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    procs = ProcessSet()
    tmp = Path(tempfile.mkdtemp(prefix="fcgi-bench-"))
    try:
        results = run(args, help_text, procs, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the harness started", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if args.keep_tmp:
            print(f"temporary directory kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    _write(results, args.out, args.readme)
    print(markdown(results))
    return 0


def _write(results: dict[str, Any], out: Path, readme: Path | None = None) -> None:
    """results.json first (a chart failure must not lose the data), then the PNG and the MD.

    With ``readme``, that file's results section is rewritten from the same results.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    why_no_chart = chart(results, out / "results.png")
    if why_no_chart:
        results["meta"]["chart"] = f"not written: {why_no_chart}"
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"no chart: {why_no_chart}", file=sys.stderr)
    (out / "results.md").write_text(markdown(results))
    print(
        f"wrote {out / 'results.json'}, results.md" + ("" if why_no_chart else ", results.png"),
        file=sys.stderr,
    )
    if readme is not None:
        png = os.path.relpath(out.resolve() / "results.png", readme.resolve().parent)
        readme.write_text(splice_readme(readme.read_text(), readme_section(results, png)))
        print(f"rewrote the results section of {readme}", file=sys.stderr)


def run(args: argparse.Namespace, help_text: str, procs: ProcessSet, tmp: Path) -> dict[str, Any]:
    stacks = [STACKS_BY_NAME[n] for n in args.stack_names]
    scenarios = [SCENARIOS_BY_NAME[n] for n in args.scenario_names]
    if args.wait_quiet is not None:
        _wait_quiet(args.wait_quiet, args.wait_quiet_max)
    load_start = meta_mod.loadavg()
    print(
        f"load average {load_start} on {meta_mod.host()['cpu_count']} CPUs"
        + ("  (the machine is busy: numbers will be noisy)" if load_start[0] > 0.5 else ""),
        file=sys.stderr,
    )
    results: dict[str, Any] = {
        "schema": 1,
        "meta": {
            "date_start": meta_mod.now_utc(),
            "command": shlex.join(
                [Path(sys.executable).name, "benchmarks/run.py", *(sys.argv[1:])]
            ),
            "loadavg_start": load_start,
            "host": meta_mod.host(),
            "versions": meta_mod.versions(),
            "git": meta_mod.git_state(),
            "settings": {
                "duration_s": args.duration,
                "runs": args.runs,
                "warmup_s": args.warmup,
                "wrk_threads": args.wrk_threads,
                "idle_conns": IDLE_CONNS,
            },
        },
        "stacks": {},
        "scenarios": {
            sc.name: {
                "description": sc.description,
                "family": sc.family,
                "path": sc.path,
                "method": sc.method,
                "connections": sc.connections,
            }
            for sc in scenarios
        },
        "scenario_stacks": {},
        "failures": {},
        "fairness": {},
        "runs": [],
        "memory": {},
    }
    available: list[Stack] = []
    for st in stacks:
        why = availability(st, help_text)
        results["stacks"][st.name] = {
            "available": why is None,
            "reason": why,
            "description": st.description,
            "server": st.server,
            "interface": st.interface,
            "workers": st.workers,
            "upstream_keepalive": st.upstream_keepalive,
        }
        if why is None:
            available.append(st)
        else:
            print(f"  {st.name}: not available: {why}", file=sys.stderr)
    for sc in scenarios:
        results["scenario_stacks"][sc.name] = [
            s.name for s in stacks if applies(sc, s.families, s.server)
        ]

    families = [f for f in FAMILY_ORDER if any(sc.family == f for sc in scenarios)]
    memory_stacks = _memory_stacks(available) if not args.no_memory else []
    total = sum(
        args.runs * sum(1 for st in available if applies(sc, st.families, st.server))
        for sc in scenarios
    ) + len(memory_stacks)
    progress = Progress(total)
    scripts = tmp / "lua"
    scripts.mkdir()
    for sc in SCENARIOS:  # all of them: the memory phase drives hello-256 whatever is chosen
        (scripts / f"{sc.name}.lua").write_text(lua_script(sc))
    (tmp / "static").mkdir()
    (tmp / "static" / "1mib").write_bytes(b"x" * (1024 * 1024))

    for family in families:
        fam_scenarios = [sc for sc in scenarios if sc.family == family]
        fam_stacks = [st for st in available if family in st.families]
        why_family = family_availability(family)
        if why_family is not None:
            for sc in fam_scenarios:
                for st in fam_stacks:
                    if applies(sc, st.families, st.server):
                        _fail(results, sc, st, why_family, progress, args.runs)
            continue
        _run_family(args, results, progress, procs, tmp, family, fam_scenarios, fam_stacks)

    for st in memory_stacks:
        results["memory"][st.name] = _measure_memory(args, st, procs, tmp, scripts, progress)
    if not args.no_memory:
        for st in stacks:
            why = results["stacks"][st.name]["reason"]
            if why is not None and _wants_memory(st):
                results["memory"][st.name] = {"available": False, "reason": why}

    results["meta"]["date_end"] = meta_mod.now_utc()
    results["meta"]["loadavg_end"] = meta_mod.loadavg()
    results["summary"] = summarize(results)
    results["targets"] = targets(results, results["summary"])
    return results


def _fail(
    results: dict[str, Any],
    sc: Scenario,
    st: Stack,
    reason: str,
    progress: Progress,
    steps: int = 0,
) -> None:
    results["failures"].setdefault(sc.name, {})[st.name] = reason
    first = reason.strip().splitlines()[0] if reason.strip() else reason
    for _ in range(steps):
        progress.step(f"{sc.name:16s} {st.name:20s} skipped: {first}")


def _run_family(
    args: argparse.Namespace,
    results: dict[str, Any],
    progress: Progress,
    procs: ProcessSet,
    tmp: Path,
    family: str,
    scenarios: list[Scenario],
    stacks: list[Stack],
) -> None:
    """Start every stack for ``family``, then cycle: for each run, scenario, stack: measure."""
    instances: dict[str, Instance] = {}
    try:
        for st in stacks:
            try:
                instances[st.name] = start_instance(st, family, tmp, procs)
            except StartError as exc:
                Progress.note(f"{st.name}: did not start: {exc}")
                for sc in scenarios:
                    if applies(sc, st.families, st.server):
                        _fail(results, sc, st, f"did not start: {exc}", progress, args.runs)
        usable: dict[str, list[Instance]] = {}
        for sc in scenarios:
            usable[sc.name] = []
            for name, inst in instances.items():
                if not applies(sc, inst.stack.families, inst.stack.server):
                    continue
                why = verify(inst.port, sc)
                if why is None:
                    usable[sc.name].append(inst)
                else:
                    Progress.note(f"{name}: wrong answer for {sc.name}: {why}")
                    _fail(results, sc, inst.stack, f"wrong answer: {why}", progress, args.runs)
        for sc in scenarios:
            if sc.method != "GET":
                continue
            for inst in usable[sc.name]:
                answered = probe_fairness(inst.port, sc)
                results["fairness"].setdefault(sc.name, {})[inst.stack.name] = {
                    "connections": sc.connections,
                    "answered": answered,
                    "timeout_s": PROBE_TIMEOUT_S,
                }
                if answered < sc.connections:
                    Progress.note(
                        f"{inst.stack.name}: only {answered} of {sc.connections} "
                        f"concurrent clients answered within {PROBE_TIMEOUT_S:.0f} s "
                        f"({sc.name}); it starves the others"
                    )
        if args.warmup > 0:
            for inst in instances.values():
                with contextlib.suppress(RuntimeError):
                    run_wrk(
                        inst.port,
                        scenarios[0],
                        args.warmup,
                        args.wrk_threads,
                        tmp / "lua" / f"{scenarios[0].name}.lua",
                    )
        for i in range(1, args.runs + 1):
            for sc in scenarios:
                for inst in usable[sc.name]:
                    _measure(args, results, progress, tmp, sc, inst, i)
    finally:
        for inst in instances.values():
            stop_instance(inst, procs)


def _measure(
    args: argparse.Namespace,
    results: dict[str, Any],
    progress: Progress,
    tmp: Path,
    sc: Scenario,
    inst: Instance,
    i: int,
) -> None:
    st = inst.stack
    label = f"{sc.name:16s} run {i}/{args.runs}  {st.name:20s}"
    if not inst.nginx.alive() or (inst.backend is not None and not inst.backend.alive()):
        dead = inst.backend if inst.backend is not None and not inst.backend.alive() else inst.nginx
        why = f"{dead.name} died: {dead.log_tail(5)}"
        results["failures"].setdefault(sc.name, {})[st.name] = why
        progress.step(f"{label} FAILED: {why.splitlines()[0]}")
        return
    load = meta_mod.loadavg()
    try:
        data = run_wrk(
            inst.port,
            sc,
            args.duration,
            args.wrk_threads,
            tmp / "lua" / f"{sc.name}.lua",
            pids=inst.worker_pids,
        )
    except RuntimeError as exc:
        results["failures"].setdefault(sc.name, {})[st.name] = f"wrk: {exc}"
        progress.step(f"{label} FAILED: {exc}")
        return
    data.update({"scenario": sc.name, "stack": st.name, "run": i, "loadavg": load})
    if data["errors"]["status"] or data["errors"]["read"]:
        data["nginx_error_log_tail"] = inst.error_log_tail()
    results["runs"].append(data)
    errors = sum(data["errors"].values())
    lat = data["latency_us"]
    progress.step(
        f"{label} {data['rps']:>10,.0f} req/s  p50 {lat['p50'] / 1000:7.2f} ms  "
        f"p99 {lat['p99'] / 1000:7.2f} ms" + (f"  errors {errors}" if errors else "")
    )


def _wants_memory(st: Stack) -> bool:
    return st.server != "nginx"


def _memory_stacks(available: list[Stack]) -> list[Stack]:
    """Every Python stack (one per server/interface/workers) and one php-fpm child."""
    out: list[Stack] = []
    php_done = False
    for st in available:
        if not _wants_memory(st):
            continue
        if st.server == "php-fpm":
            if php_done or st.workers != 1:
                continue
            php_done = True
        out.append(st)
    return out


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def _measure_memory(
    args: argparse.Namespace,
    st: Stack,
    procs: ProcessSet,
    tmp: Path,
    scripts: Path,
    progress: Progress,
) -> dict[str, Any]:
    """RSS of one worker: idle, peak under 256-connection load, holding 1,000 idle connections.

    Every measurement key is present in the result, ``None`` when it could not be taken (wrk
    or the connection holder failed, typically on a busy machine), with ``note`` saying why:
    the report's shape never depends on how the run went.
    """
    out: dict[str, Any] = {"available": True, **dict.fromkeys(MEMORY_KEYS)}
    hello = SCENARIOS_BY_NAME["hello-256"]
    try:
        inst = start_instance(st, "raw", tmp, procs)
    except StartError as exc:
        progress.step(f"memory  {st.name:20s} did not start")
        return {"available": False, "reason": f"did not start: {exc}"}
    holder: subprocess.Popen[str] | None = None
    try:
        for sc in (hello, SCENARIOS_BY_NAME["1mib"]):
            verify(inst.port, sc)
        time.sleep(1.0)
        pids = inst.worker_pids()
        if not pids:
            raise RuntimeError("no worker process found")
        out["worker_pid_count"] = len(pids)
        out["idle_mib"] = _mib(rss_kib(pids[0]))
        data = run_wrk(
            inst.port,
            hello,
            args.duration,
            args.wrk_threads,
            scripts / "hello-256.lua",
            pids=inst.worker_pids,
        )
        out["load_mib"] = _mib(data["peak_rss_kib"])
        out["load_rps"] = data["rps"]
        procs.stop(inst.nginx)  # its upstream connections close; only ours remain
        if inst.holder_protocol is None:
            out["note"] = (
                "a php-fpm child serves one connection at a time; 1,000 idle "
                "connections would wait in the listen queue, not in the child"
            )
        else:
            time.sleep(0.5)
            holder = subprocess.Popen(
                [
                    sys.executable,
                    str(HOLDER),
                    inst.holder_protocol,
                    str(inst.sock),
                    "--count",
                    str(IDLE_CONNS),
                    "--timeout",
                    "30",
                    "--hold",
                    "120",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            line = _readline_deadline(holder, 60.0)
            out["holder"] = line
            if line.startswith("READY"):
                fields = dict(f.split("=", 1) for f in line.split()[1:3])
                out["conns_held"] = int(fields["ok"])
                time.sleep(1.0)
                rss = [rss_kib(p) for p in inst.worker_pids()]
                out["conns_1000_mib"] = _mib(max((r for r in rss if r), default=None))
                if out["conns_held"] != IDLE_CONNS:
                    out["note"] = f"only {out['conns_held']} of {IDLE_CONNS} connections held"
                elif len(pids) > 1:
                    out["note"] = (
                        f"the {IDLE_CONNS} connections are shared by {len(pids)} "
                        "workers; the largest worker is shown"
                    )
            else:
                out["note"] = f"holder failed: {line!r}"
    except (RuntimeError, OSError, ValueError) as exc:
        out["note"] = f"{type(exc).__name__}: {exc}"
    finally:
        if holder is not None:
            with contextlib.suppress(OSError):
                holder.kill()
            holder.wait()
        stop_instance(inst, procs)
    progress.step(
        f"memory  {st.name:20s} idle {out.get('idle_mib')} MiB, under load "
        f"{out.get('load_mib')} MiB, {IDLE_CONNS} idle conns {out.get('conns_1000_mib')} MiB"
        + (f"  ({out['note']})" if out.get("note") else "")
    )
    return out


def _readline_deadline(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The first line ``proc`` prints, or '' if it prints none within ``timeout_s``."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return proc.stdout.readline().strip()


if __name__ == "__main__":
    sys.exit(main())
