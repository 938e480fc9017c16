"""Soak run: well-behaved traffic through nginx while hostile FastCGI peers attack the server.

    .venv/bin/python benchmarks/soak.py                      # 90 s baseline + 600 s soak
    .venv/bin/python benchmarks/soak.py --quick              # 20 s + 30 s: a smoke check
    .venv/bin/python benchmarks/soak.py --readme README.md   # also rewrite the Reliability figures
    .venv/bin/python benchmarks/soak.py --render benchmarks/results/soak.json --readme README.md

fcgi-async (the raw ASGI or WSGI bench app, ``--workers`` processes) runs on a unix socket in a
temporary directory behind its own nginx on 127.0.0.1 (``harness/stacks.py``). wrk drives
``GET /hello`` through nginx with a fixed number of connections, in back-to-back chunks so that
throughput comes out over time. Phases: a warm-up, the *baseline* (wrk alone), the *soak* (the
same load while ``harness/hostile.py`` runs hostile peers straight against the server's socket, in
another process), and a short *recovery* (wrk alone again). Once a second the RSS and CPU of the
supervisor, of each worker and of the hostile process are sampled, and a canary client sends one
request on a new connection (wrk cannot see a request that is never answered).

It writes ``soak.json`` and ``soak.png`` (``--out``, default ``benchmarks/results/``) and prints
the verdicts (see :func:`verdicts` for the rules). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from apps import raw_asgi
from harness import hostile
from harness import meta as meta_mod
from harness.load import SCENARIOS_BY_NAME, WRK, lua_script, run_wrk, verify
from harness.procs import Proc, ProcessSet, StartError, children, raise_nofile_limit, rss_kib
from harness.report import splice_readme
from harness.stacks import Instance, Stack, start_instance

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
HOSTILE = HERE / "harness" / "hostile.py"

#: Phase lengths in seconds (full run, and ``--quick``).
DEFAULT_WARMUP_S, DEFAULT_BASELINE_S, DEFAULT_DURATION_S, DEFAULT_RECOVERY_S = 10, 90, 600, 15
QUICK_WARMUP_S, QUICK_BASELINE_S, QUICK_DURATION_S, QUICK_RECOVERY_S = 3, 20, 30, 5
#: Well-behaved wrk connections (the bench's hello-32) and server workers.
DEFAULT_CONNECTIONS = 32
DEFAULT_WORKERS = 2
#: Seconds of one wrk run; shorter runs give a finer req/s curve but restart wrk more often.
DEFAULT_CHUNK_S = 10
QUICK_CHUNK_S = 5
#: Seconds between two samples of RSS/CPU and between two canary requests.
SAMPLE_INTERVAL_S = 1.0
#: A canary request not answered within this is an error of the well-behaved clients.
CANARY_TIMEOUT_S = 5.0
#: Verdict "RSS flat": the first ``WARMUP_FRACTION`` of the soak phase is warm-up (buffers, pools
#: and connection tables fill); afterwards no server process may grow more than
#: ``RSS_GROWTH_LIMIT_MIB`` above its value at that mark, and no worker may be replaced.
WARMUP_FRACTION = 0.2
RSS_GROWTH_LIMIT_MIB = 16.0
#: Verdict "throughput": soak req/s / baseline req/s of the well-behaved clients, at least this.
THROUGHPUT_RATIO_MIN = 0.80
#: Safety stop: the hostile phase ends early once the server's processes hold this much in total,
#: so that a server that does not hold up cannot take the machine down with it.
RSS_ABORT_MIB = 2048
#: Seconds the hostile process gets to stop (and write its stats) after SIGTERM.
HOSTILE_STOP_S = 20.0

README_BEGIN = "<!-- soak results: written by benchmarks/soak.py --readme; do not edit -->"
README_END = "<!-- end of soak results -->"

SCENARIO = SCENARIOS_BY_NAME["hello-32"]
#: What ``GET /stream`` answers in full (checked before the run: the vanishing clients need it).
STREAM_BYTES = len(raw_asgi.STREAM_CHUNK) * raw_asgi.STREAM_CHUNKS


# --- pure parts (unit-tested) ------------------------------------------------------------------


def cpu_ticks(stat_text: str) -> int | None:
    """utime + stime (clock ticks) from the text of ``/proc/PID/stat``, or None if malformed.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after the
    last ``)``: utime and stime are fields 14 and 15, the 12th and 13th after it.
    """
    _, paren, rest = stat_text.rpartition(")")
    parts = rest.split()
    if not paren or len(parts) < 13:
        return None
    try:
        return int(parts[11]) + int(parts[12])
    except ValueError:
        return None


def cpu_totals(proc_stat_text: str) -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs from the text of ``/proc/stat``, or None.

    Idle and iowait are the idle part; the samples keep the machine's busy share next to the
    server's, so that a throughput dip can be told from other work on the machine.
    """
    first = proc_stat_text.split("\n", 1)[0].split()
    if len(first) < 6 or first[0] != "cpu":
        return None
    try:
        ticks = [int(x) for x in first[1:]]
    except ValueError:
        return None
    total = sum(ticks[:8])  # guest times are already counted in user and nice
    return total - ticks[3] - ticks[4], total


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per minute (None for < 2 times)."""
    if len({t for t, _ in points}) < 2:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    num = sum((t - mt) * (v - mv) for t, v in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return num / den * 60


def phase_window(phases: list[dict[str, Any]], name: str) -> tuple[float, float] | None:
    """(start, end) seconds of the phase called ``name``, or None if it did not run."""
    for phase in phases:
        if phase["name"] == name:
            return float(phase["start_t"]), float(phase["end_t"])
    return None


def rss_growth(
    samples: list[dict[str, Any]],
    window: tuple[float, float],
    warmup_fraction: float = WARMUP_FRACTION,
) -> dict[str, Any]:
    """How much each server process grew after the warm-up part of ``window``.

    For every server process (role supervisor, worker or server) alive at the mark
    ``start + warmup_fraction * (end - start)``: its growth is the max RSS over the samples from
    the mark to the end, minus its RSS at the first sample at or after the mark. Workers that
    appear or disappear after the mark are listed as ``replaced`` (a respawn hides growth and is
    itself a failure to hold up).
    """
    start, end = window
    mark = start + warmup_fraction * (end - start)
    after = [s for s in samples if mark <= s["t"] <= end]
    if not after:
        return {"mark_t": mark, "per_process": {}, "replaced": [], "max_growth_mib": None}
    at_mark = {
        pid: p["rss_kib"]
        for pid, p in after[0]["procs"].items()
        if p["role"] != "hostile" and p["rss_kib"] is not None
    }
    per_process: dict[str, dict[str, Any]] = {}
    for pid, base in at_mark.items():
        peak = max(
            (s["procs"][pid]["rss_kib"] or 0) for s in after if pid in s["procs"]
        )  # a pid gone mid-way keeps its peak until then
        trend = slope_per_min(
            [
                (s["t"], s["procs"][pid]["rss_kib"] / 1024)
                for s in after
                if pid in s["procs"] and s["procs"][pid]["rss_kib"] is not None
            ]
        )
        per_process[pid] = {
            "role": after[0]["procs"][pid]["role"],
            "at_mark_mib": round(base / 1024, 1),
            "max_after_mib": round(peak / 1024, 1),
            "growth_mib": round((peak - base) / 1024, 1),
            # Not judged: tells what a short run would have grown to in a long one.
            "trend_mib_per_min": None if trend is None else round(trend, 2),
        }
    seen = {pid for s in after for pid, p in s["procs"].items() if p["role"] != "hostile"}
    last = {pid for pid, p in after[-1]["procs"].items() if p["role"] != "hostile"}
    replaced = sorted((seen - set(at_mark)) | (set(at_mark) - last))
    growths = [p["growth_mib"] for p in per_process.values()]
    return {
        "mark_t": round(mark, 1),
        "per_process": per_process,
        "replaced": replaced,
        "max_growth_mib": max(growths) if growths else None,
    }


def phase_load(chunks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The well-behaved load of phase ``name``: ok req/s over all its wrk chunks, errors by kind."""
    mine = [c for c in chunks if c["phase"] == name]
    seconds = sum(c["duration_s"] for c in mine if c.get("duration_s"))
    ok = sum(c["ok"] for c in mine if c.get("ok") is not None)
    errors: collections.Counter[str] = collections.Counter()
    for c in mine:
        errors.update(c.get("errors") or {})
        if c.get("failed"):
            errors["wrk_failed"] += 1
    return {
        "chunks": len(mine),
        "seconds": round(seconds, 1),
        "ok_requests": ok,
        "rps": round(ok / seconds, 1) if seconds > 0 else None,
        "errors": {k: v for k, v in sorted(errors.items()) if v},
    }


def mean_busy(samples: list[dict[str, Any]], window: tuple[float, float]) -> float | None:
    """Mean whole-machine CPU busy % over ``window`` (None without samples)."""
    start, end = window
    busy = [
        s["machine_busy_pct"]
        for s in samples
        if start <= s["t"] <= end and s.get("machine_busy_pct") is not None
    ]
    return round(sum(busy) / len(busy), 1) if busy else None


def canary_errors(canary: list[dict[str, Any]], window: tuple[float, float]) -> dict[str, int]:
    """Canary failures by reason within ``window``."""
    start, end = window
    return dict(
        collections.Counter(c["error"] for c in canary if start <= c["t"] <= end and not c["ok"])
    )


def verdicts(
    results: dict[str, Any],
    rss_limit_mib: float = RSS_GROWTH_LIMIT_MIB,
    ratio_min: float = THROUGHPUT_RATIO_MIN,
    warmup_fraction: float = WARMUP_FRACTION,
) -> dict[str, Any]:
    """The three verdicts of the soak, from the raw samples, wrk chunks and canary requests.

    - ``rss_flat``: every server process grew at most ``rss_limit_mib`` after the first
      ``warmup_fraction`` of the soak phase (see :func:`rss_growth`), no worker was replaced,
      and the run was not stopped early.
    - ``no_errors``: the well-behaved clients saw no error during the soak: no wrk connect, read,
      write or timeout error, no non-2xx/3xx answer, no failed wrk run, no failed canary request.
    - ``throughput``: soak req/s / baseline req/s >= ``ratio_min``.
    """
    phases = results["phases"]
    soak = phase_window(phases, "soak")
    base_load = phase_load(results["chunks"], "baseline")
    soak_load = phase_load(results["chunks"], "soak")
    base_window = phase_window(phases, "baseline") or (0.0, -1.0)
    out: dict[str, Any] = {
        "rules": {
            "rss_growth_limit_mib": rss_limit_mib,
            "warmup_fraction": warmup_fraction,
            "throughput_ratio_min": ratio_min,
        },
        "baseline": {
            **base_load,
            "canary_errors": canary_errors(results["canary"], base_window),
            "machine_busy_pct": mean_busy(results["samples"], base_window),
        },
        "soak": {
            **soak_load,
            "machine_busy_pct": mean_busy(results["samples"], soak or (0.0, -1.0)),
        },
    }
    stopped_early = results.get("stopped_early")
    if soak is None:
        out["rss_flat"] = out["no_errors"] = out["throughput"] = False
        out["passed"] = False
        return out
    growth = rss_growth(results["samples"], soak, warmup_fraction)
    out["rss"] = growth
    out["rss_flat"] = bool(
        growth["max_growth_mib"] is not None
        and growth["max_growth_mib"] <= rss_limit_mib
        and not growth["replaced"]
        and not stopped_early
    )
    canary = canary_errors(results["canary"], soak)
    out["soak"]["canary_errors"] = canary
    out["soak"]["error_total"] = sum(soak_load["errors"].values()) + sum(canary.values())
    out["no_errors"] = out["soak"]["error_total"] == 0 and soak_load["chunks"] > 0
    ratio = None
    if base_load["rps"] and soak_load["rps"] is not None:
        ratio = round(soak_load["rps"] / base_load["rps"], 3)
    out["throughput_ratio"] = ratio
    out["throughput"] = ratio is not None and ratio >= ratio_min
    out["passed"] = out["rss_flat"] and out["no_errors"] and out["throughput"]
    return out


_DIGITS = re.compile(r"\d+")


def log_shapes(text: str, top: int = 5) -> list[tuple[str, int]]:
    """The ``top`` most frequent log lines with every number masked (pids, ports, ids, times):
    what the server said most often, without a million near-identical lines."""
    counts = collections.Counter(_DIGITS.sub("N", line)[:200] for line in text.splitlines())
    return counts.most_common(top)


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The human summary: the phases, the three verdicts with their rules and figures."""
    v = results["verdicts"]
    rules = v["rules"]
    s = results["settings"]
    base, soak = v["baseline"], v["soak"]
    lines = [
        f"fcgi-async {s['interface']} x{s['workers']} workers behind nginx, "
        f"wrk -c{s['connections']} on GET /hello; baseline {s['baseline_s']:g} s, "
        f"soak {s['duration_s']:g} s",
        f"baseline: {base['rps']} req/s, errors {base['errors'] or 'none'}, "
        f"canary errors {base['canary_errors'] or 'none'}, "
        f"machine busy {base['machine_busy_pct']}%",
        f"soak:     {soak['rps']} req/s, errors {soak['errors'] or 'none'}, "
        f"canary errors {soak.get('canary_errors') or 'none'}, "
        f"machine busy {soak['machine_busy_pct']}%",
        f"load average at start {results['meta']['loadavg_start']}, at end "
        f"{results['meta'].get('loadavg_end')} (other work on the machine lowers the soak's "
        "throughput too)",
    ]
    log = results.get("server_log") or {}
    if log.get("lines"):
        top = log.get("top_soak") or []
        lines.append(
            f"server log: {log['lines'].get('soak', 0)} lines during the soak"
            + (f", commonest ({top[0][1]}x): {top[0][0]}" if top else "")
        )
    if results.get("stopped_early"):
        lines.append(f"STOPPED EARLY: {results['stopped_early']}")
    rss = v.get("rss") or {}
    per = ", ".join(
        f"{p['role']} {pid}: {p['at_mark_mib']} -> max {p['max_after_mib']} MiB, "
        f"trend {p['trend_mib_per_min']} MiB/min"
        for pid, p in (rss.get("per_process") or {}).items()
    )
    lines += [
        f"[{_pass(v['rss_flat'])}] RSS flat after warm-up (max over the last "
        f"{100 - rules['warmup_fraction'] * 100:.0f}% of the soak minus the value at the "
        f"{rules['warmup_fraction'] * 100:.0f}% mark <= {rules['rss_growth_limit_mib']:g} MiB per "
        f"server process, no worker replaced): max growth {rss.get('max_growth_mib')} MiB"
        + (f"; replaced: {rss['replaced']}" if rss.get("replaced") else "")
        + (f" ({per})" if per else ""),
        f"[{_pass(v['no_errors'])}] 0 errors for the well-behaved clients during the soak: "
        f"{soak.get('error_total')}",
        f"[{_pass(v['throughput'])}] throughput soak/baseline >= "
        f"{rules['throughput_ratio_min']:.2f}: {v.get('throughput_ratio')}",
        f"overall: {_pass(v['passed'])}",
    ]
    return lines


def _hostile_line(kind: str, st: dict[str, Any]) -> str:
    """One line per kind of hostile peer: what it did and how the server answered."""
    n = st["connections"]
    bits = [f"{n} connection{'' if n == 1 else 's'}", f"{st['requests']} requests"]
    if kind == "nonreader" and not st.get("events", {}).get("paused_by_server"):
        bits.append("their sends never blocked (the answers owed fit in the socket buffers)")
    if st.get("closed_by_server"):
        bits.append(f"{st['closed_by_server']} closed by the server")
    if st.get("end_requests"):
        bits.append("END_REQUEST " + ", ".join(f"{k} {n}" for k, n in st["end_requests"].items()))
    if st.get("events"):
        bits.append(", ".join(f"{k} {n}" for k, n in st["events"].items()))
    if st.get("lifetimes_s"):
        bits.append(f"closed after a median {median(st['lifetimes_s']):g} s")
    for how, kib in (st.get("aborted_stream_kib") or {}).items():
        if kib:
            bits.append(
                f"a /stream aborted {how.replace('_', ' ')} still sent a median "
                f"{median(kib):g} KiB (max {max(kib):g})"
            )
    return f"`{kind}`: " + "; ".join(bits)


def median(values: list[float]) -> float:
    """The middle value (the upper one of two); ``values`` must not be empty."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def readme_section(results: dict[str, Any] | None, chart_path: str) -> str:
    """The README's soak figures (between README_BEGIN and README_END).

    Every number comes from ``results`` (a soak.json); without results the block says plainly
    that nothing has been measured yet.
    """
    if results is None:
        return "\n".join(
            [
                README_BEGIN,
                "",
                "**Not yet measured.** The figures of the 10-minute soak go here, written by "
                "`benchmarks/soak.py --readme README.md`.",
                "",
                README_END,
            ]
        )
    meta, s, v = results["meta"], results["settings"], results["verdicts"]
    host = meta["host"]
    base, soak = v["baseline"], v["soak"]
    rss = v.get("rss") or {}
    rules = v["rules"]
    base_errors = sum(base["errors"].values()) + sum(base["canary_errors"].values())
    trends = [
        p["trend_mib_per_min"]
        for p in (rss.get("per_process") or {}).values()
        if p["trend_mib_per_min"] is not None
    ]
    worst_trend = max(trends) if trends else None
    lines = [
        README_BEGIN,
        "",
        f"Measured by `{meta['command']}` on {meta['date_start'][:10]}: {host['cpu_count']} CPUs "
        f"({host['cpu_model']}), {host['mem_total_mib']} MiB, Linux {host['kernel']}, fcgi-async "
        f"commit `{(meta['git']['commit'] or 'unknown')[:10]}`"
        + (" (with uncommitted server changes)" if meta["git"].get("dirty") else "")
        + f"; {s['interface'].upper()} hello app, {s['workers']} workers, wrk "
        f"-c{s['connections']} through nginx, {s['baseline_s']:g} s baseline then "
        f"{s['duration_s']:g} s with the hostile peers; load average {meta['loadavg_start'][0]} "
        "at start.",
        "",
        "| | baseline | soak | expected | verdict |",
        "|---|---:|---:|---|---|",
        f"| well-behaved req/s | {base['rps']} | {soak['rps']} | ratio >= "
        f"{rules['throughput_ratio_min']:.2f} | {v.get('throughput_ratio')}: "
        f"{_pass(v['throughput'])} |",
        f"| well-behaved errors | {base_errors} | {soak.get('error_total')} | 0 | "
        f"{_pass(v['no_errors'])} |",
        f"| RSS growth after warm-up (worst process) | | {rss.get('max_growth_mib')} MiB "
        f"(trend {worst_trend} MiB/min) | <= {rules['rss_growth_limit_mib']:g} MiB | "
        f"{_pass(v['rss_flat'])} |",
        "",
    ]
    if rss.get("replaced"):
        lines += [f"Workers replaced during the soak (pids): {', '.join(rss['replaced'])}.", ""]
    if results.get("stopped_early"):
        lines += [f"The soak phase was stopped early: {results['stopped_early']}.", ""]
    peers = (results.get("hostile") or {}).get("kinds") or {}
    server_log = results.get("server_log") or {}
    if server_log.get("lines"):
        top = server_log.get("top_soak") or [("", 0)]
        lines += [
            f"The server logged {server_log['lines'].get('soak', 0)} lines during the soak "
            f"({server_log['lines'].get('baseline', 0)} during the baseline); the commonest, "
            f"{top[0][1]} times: `{top[0][0]}`.",
            "",
        ]
    if peers:
        lines.append("What the hostile peers did, and how the server answered:")
        lines.append("")
        lines += [
            f"- {_hostile_line(kind, st)}"
            for kind, st in peers.items()
            if st["connections"] or st["connect_errors"]  # kinds left out by --hostile-kinds
        ]
        lines.append("")
    lines += [f"![RSS and throughput during the soak]({chart_path})", "", README_END]
    return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Timeline:
    """Seconds since the run started, shared by every sample, chunk and phase."""

    started: float

    def now(self) -> float:
        return round(time.monotonic() - self.started, 2)


class Sampler(threading.Thread):
    """Once a second: RSS and CPU of the server's processes (and of the hostile process), and
    whether the run must stop (server gone, RSS over the safety cap)."""

    def __init__(self, inst: Instance, clock: Timeline, rss_abort_mib: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.inst = inst
        self.clock = clock
        self.rss_abort_kib = rss_abort_mib * 1024
        self.samples: list[dict[str, Any]] = []
        self.hostile_pid: int | None = None
        self.stop_event = threading.Event()
        self.abort_reason: str | None = None
        self._ticks: dict[int, tuple[float, int]] = {}
        self._hz = os.sysconf("SC_CLK_TCK")
        self._machine: tuple[int, int] | None = None

    def _cpu_pct(self, pid: int, now: float) -> float | None:
        try:
            ticks = cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            return None
        if ticks is None:
            return None
        before = self._ticks.get(pid)
        self._ticks[pid] = (now, ticks)
        if before is None or now <= before[0]:
            return None
        return round((ticks - before[1]) / self._hz / (now - before[0]) * 100, 1)

    def _machine_pct(self) -> float | None:
        try:
            now = cpu_totals(Path("/proc/stat").read_text())
        except OSError:
            return None
        before, self._machine = self._machine, now
        if now is None or before is None or now[1] <= before[1]:
            return None
        return round((now[0] - before[0]) / (now[1] - before[1]) * 100, 1)

    def roles(self) -> dict[int, str]:
        backend = self.inst.backend
        assert backend is not None
        workers = children(backend.pid) if self.inst.stack.workers > 1 else []
        out = {backend.pid: "supervisor" if workers else "server"}
        out.update({pid: "worker" for pid in workers})
        if self.hostile_pid is not None:
            out[self.hostile_pid] = "hostile"
        return out

    def sample(self) -> None:
        now = time.monotonic()
        procs: dict[str, dict[str, Any]] = {}
        for pid, role in self.roles().items():
            procs[str(pid)] = {
                "role": role,
                "rss_kib": rss_kib(pid),
                "cpu_pct": self._cpu_pct(pid, now),
            }
        self.samples.append(
            {
                "t": self.clock.now(),
                "procs": procs,
                # All CPUs, everything on the machine: other work shows here, not in procs.
                "machine_busy_pct": self._machine_pct(),
                "loadavg_1m": os.getloadavg()[0],
            }
        )
        backend = self.inst.backend
        assert backend is not None
        if not backend.alive():
            self.abort_reason = f"the server exited with status {backend.popen.returncode}"
        total = sum(p["rss_kib"] or 0 for p in procs.values() if p["role"] != "hostile")
        if total > self.rss_abort_kib:
            self.abort_reason = (
                f"the server's processes held {total / 1024:.0f} MiB, over the safety cap of "
                f"{self.rss_abort_kib / 1024:.0f} MiB (--rss-abort-mib)"
            )

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_INTERVAL_S):
            try:
                self.sample()
            except Exception as exc:  # a sampler crash must not end the run unnoticed
                self.abort_reason = f"sampler failed: {exc!r}"
                return


class Canary(threading.Thread):
    """Once a second, one ``GET /hello`` through nginx on a new connection, with a deadline."""

    def __init__(self, port: int, clock: Timeline) -> None:
        super().__init__(name="soak-canary", daemon=True)
        self.port = port
        self.clock = clock
        self.results: list[dict[str, Any]] = []
        self.stop_event = threading.Event()

    def probe(self) -> dict[str, Any]:
        t = self.clock.now()
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CANARY_TIMEOUT_S)
        error = None
        try:
            conn.request("GET", SCENARIO.path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                error = f"status {resp.status}"
            elif SCENARIO.check(body):
                error = "wrong body"
        except TimeoutError:
            error = "timeout"
        except (OSError, http.client.HTTPException) as exc:
            error = type(exc).__name__
        finally:
            conn.close()
        ms = round((time.monotonic() - started) * 1000, 1)
        return {"t": t, "ok": error is None, "ms": ms, "error": error}

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_INTERVAL_S):
            self.results.append(self.probe())


def run_phase(
    name: str,
    seconds: float,
    args: argparse.Namespace,
    inst: Instance,
    script: Path,
    clock: Timeline,
    chunks: list[dict[str, Any]],
    sampler: Sampler | None = None,
) -> dict[str, Any]:
    """wrk in chunks of ``--chunk`` seconds for ``seconds``; returns the phase's time window.

    Ends early (between chunks) when the sampler has an abort reason.
    """
    phase = {"name": name, "start_t": clock.now()}
    deadline = time.monotonic() + seconds
    print(f"{name}: {seconds:g} s of wrk -c{args.connections}", file=sys.stderr, flush=True)
    while (left := deadline - time.monotonic()) >= 1.0:
        if sampler is not None and sampler.abort_reason:
            break
        length = min(args.chunk, left)
        start_t = clock.now()
        chunk: dict[str, Any] = {"phase": name, "start_t": start_t}
        try:
            res = run_wrk(
                inst.port, SCENARIO, length, args.wrk_threads, script, connections=args.connections
            )
        except RuntimeError as exc:
            chunk.update(failed=str(exc)[-300:], duration_s=0.0, ok=0)
            time.sleep(0.5)  # wrk itself failing: do not restart it in a tight loop
        else:
            chunk.update(
                duration_s=round(res["duration_us"] / 1e6, 3),
                ok=res["requests"] - res["errors"]["status"],
                rps=round(res["rps"], 1),
                errors={k: v for k, v in res["errors"].items() if v},
                latency_us=res["latency_us"],
            )
        chunk["end_t"] = clock.now()
        chunks.append(chunk)
        if chunk.get("failed"):
            print(f"  wrk failed: {chunk['failed']}", file=sys.stderr, flush=True)
        else:
            print(
                f"  t={chunk['end_t']:6.0f}s  {chunk['rps']:9.1f} req/s  "
                f"errors {chunk['errors'] or 'none'}",
                file=sys.stderr,
                flush=True,
            )
    phase["end_t"] = clock.now()
    return phase


def _log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_by_phase(path: Path, marks: list[tuple[str, int, int]]) -> dict[str, Any]:
    """Lines and bytes a log grew by in each phase, and the commonest shapes during the soak."""
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    out: dict[str, Any] = {"lines": {}, "bytes": {}}
    for name, start, end in marks:
        part = data[start:end]
        out["lines"][name] = part.count(b"\n")
        out["bytes"][name] = len(part)
        if name == "soak":
            out["top_soak"] = log_shapes(part.decode(errors="replace"))
    return out


def stop_hostile(procs: ProcessSet, peers_proc: Proc) -> None:
    """SIGTERM the hostile process, wait for it to write its stats (bounded), then make sure."""
    if peers_proc.alive():
        peers_proc.popen.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            peers_proc.popen.wait(HOSTILE_STOP_S)
    procs.stop(peers_proc)


def run(args: argparse.Namespace, procs: ProcessSet, tmp: Path) -> dict[str, Any]:
    """The whole soak; returns the results (without verdicts)."""
    stack = Stack(
        f"soak-{args.interface}",
        "fcgi-async",
        args.interface,
        f"fcgi-async {args.interface.upper()}, {args.workers} workers, upstream keep-alive",
        args.workers,
        server_args=tuple(args.server_args),
    )
    results: dict[str, Any] = {
        "schema": 1,
        "meta": {
            "date_start": meta_mod.now_utc(),
            "command": shlex.join(["python", "benchmarks/soak.py", *(args.argv)]),
            "loadavg_start": meta_mod.loadavg(),
            "host": meta_mod.host(),
            "versions": meta_mod.versions(),
            "git": meta_mod.git_state(),
        },
        "settings": {
            "interface": args.interface,
            "workers": args.workers,
            "connections": args.connections,
            "wrk_threads": args.wrk_threads,
            "warmup_s": args.warmup,
            "baseline_s": args.baseline,
            "duration_s": args.duration,
            "recovery_s": args.recovery,
            "chunk_s": args.chunk,
            "hostile_scale": args.hostile_scale,
            "hostile_kinds": list(args.hostile_kinds),
            "server_args": list(args.server_args),
            "rss_abort_mib": args.rss_abort_mib,
        },
        "phases": [],
        "chunks": [],
        "samples": [],
        "canary": [],
        "hostile": None,
        "stopped_early": None,
    }
    inst = start_instance(stack, "raw", tmp, procs)
    assert inst.backend is not None
    assert inst.sock is not None
    results["meta"]["server_argv"] = inst.backend.argv
    for path, want in ((SCENARIO.path, None), ("/stream", STREAM_BYTES)):
        why = verify(inst.port, SCENARIO) if want is None else _check_stream(inst.port, want)
        if why:
            raise StartError(f"the stack answers {path} wrongly: {why}")
    script = tmp / "soak.lua"
    script.write_text(lua_script(SCENARIO))
    clock = Timeline(time.monotonic())
    sampler = Sampler(inst, clock, args.rss_abort_mib)
    canary = Canary(inst.port, clock)
    sampler.start()
    canary.start()
    server_log = inst.backend.log
    nginx_log = tmp / f"nginx-{stack.name}" / "error.log"
    marks: list[tuple[str, int, int]] = []  # phase, where the server and nginx logs stood
    chunks: list[dict[str, Any]] = results["chunks"]
    try:
        plan = [
            ("warmup", args.warmup),
            ("baseline", args.baseline),
            ("soak", args.duration),
            ("recovery", args.recovery),
        ]
        for name, seconds in plan:
            if seconds <= 0:
                continue
            marks.append((name, _log_offset(server_log), _log_offset(nginx_log)))
            peers_proc = None
            if name == "soak":
                peers_proc = procs.start(
                    "hostile peers",
                    [
                        sys.executable,
                        str(HOSTILE),
                        "--fcgi",
                        f"unix:{inst.sock}",
                        "--http",
                        f"127.0.0.1:{inst.port}",
                        "--duration",
                        str(seconds + HOSTILE_STOP_S),  # stopped by us; this is the backstop
                        "--scale",
                        str(args.hostile_scale),
                        "--out",
                        str(tmp / "hostile.json"),
                        "--kinds",
                        ",".join(args.hostile_kinds),
                    ],
                    tmp / "logs" / "hostile.log",
                )
                sampler.hostile_pid = peers_proc.pid
            try:
                phase = run_phase(name, seconds, args, inst, script, clock, chunks, sampler)
            finally:
                if peers_proc is not None:
                    stop_hostile(procs, peers_proc)
                    sampler.hostile_pid = None
            results["phases"].append(phase)
            if sampler.abort_reason:
                results["stopped_early"] = f"{sampler.abort_reason} (at t={clock.now():.0f} s)"
                print(f"stopping early: {results['stopped_early']}", file=sys.stderr)
                break
        hostile_json = tmp / "hostile.json"
        if hostile_json.exists():
            results["hostile"] = json.loads(hostile_json.read_text())
        elif any(p["name"] == "soak" for p in results["phases"]):
            hostile_log = tmp / "logs" / "hostile.log"
            tail = hostile_log.read_text(errors="replace")[-1500:] if hostile_log.exists() else ""
            results["hostile"] = {"error": "the hostile process wrote no stats", "log_tail": tail}
    finally:
        sampler.stop_event.set()
        canary.stop_event.set()
        sampler.join(CANARY_TIMEOUT_S + 5)
        canary.join(CANARY_TIMEOUT_S + 5)
    results["samples"] = sampler.samples
    results["canary"] = canary.results
    ends = [(m, nxt) for m, nxt in zip(marks, [*marks[1:], None], strict=True)]
    results["server_log"] = _log_by_phase(
        server_log, [(m[0], m[1], n[1] if n else _log_offset(server_log)) for m, n in ends]
    )
    results["nginx_error_log"] = _log_by_phase(
        nginx_log, [(m[0], m[2], n[2] if n else _log_offset(nginx_log)) for m, n in ends]
    )
    results["meta"]["date_end"] = meta_mod.now_utc()
    results["meta"]["loadavg_end"] = meta_mod.loadavg()
    return results


def _check_stream(port: int, want: int) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        got = len(resp.read())
    except (OSError, http.client.HTTPException) as exc:
        return repr(exc)
    finally:
        conn.close()
    if resp.status != 200 or got != want:
        return f"status {resp.status}, {got} bytes (want 200 and {want})"
    return None


# --- output ------------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Write the PNG: RSS per process, well-behaved req/s, CPU per process; return why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not installed ({exc}); pip install -e '.[bench]'"
    samples = results["samples"]
    fig, (ax_rss, ax_rps, ax_cpu) = plt.subplots(3, 1, figsize=(13, 9), sharex=True)
    # Legends beside the plots: inside, they hide the curves they name.
    outside: dict[str, Any] = {"fontsize": 7, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
    series: dict[str, tuple[str, list[float], list[float], list[float]]] = {}
    for s in samples:
        for pid, p in s["procs"].items():
            role, ts, rss, cpu = series.setdefault(pid, (p["role"], [], [], []))
            ts.append(s["t"])
            rss.append((p["rss_kib"] or 0) / 1024)
            cpu.append(p["cpu_pct"] if p["cpu_pct"] is not None else float("nan"))
    for pid, (role, ts, rss, cpu) in sorted(series.items(), key=lambda kv: kv[1][0]):
        style = ":" if role == "hostile" else "-"
        ax_rss.plot(ts, rss, style, label=f"{role} {pid}", linewidth=1.2)
        ax_cpu.plot(ts, cpu, style, label=f"{role} {pid}", linewidth=0.8)
    busy = [(s["t"], s.get("machine_busy_pct")) for s in samples]
    busy = [(t, b) for t, b in busy if b is not None]
    if busy:
        cpus = results["meta"]["host"]["cpu_count"] or 1
        ax_cpu.plot(
            [t for t, _ in busy],
            [b * cpus for _, b in busy],
            color="grey",
            linewidth=0.8,
            label="whole machine (all processes)",
        )
    ax_cpu.legend(**outside)
    ax_rss.set_ylabel("RSS (MiB)")
    ax_rss.set_ylim(bottom=0)  # from zero: a flat line must look flat, not zoomed into noise
    ax_rss.legend(**outside)
    ax_cpu.set_ylabel("CPU (% of one core)")
    ax_cpu.set_xlabel("seconds since start")
    ok_chunks = [c for c in results["chunks"] if not c.get("failed")]
    for c in ok_chunks:
        ax_rps.hlines(c["rps"], c["start_t"], c["end_t"], colors="tab:blue", linewidth=2)
    bad = [c for c in results["canary"] if not c["ok"]]
    if bad:
        ax_rps.plot([c["t"] for c in bad], [0] * len(bad), "rx", label="failed canary request")
        ax_rps.legend(**outside)
    ax_rps.set_ylabel("well-behaved req/s (wrk)")
    ax_rps.set_ylim(bottom=0)
    soak = phase_window(results["phases"], "soak")
    v = results.get("verdicts") or {}
    for ax in (ax_rss, ax_rps, ax_cpu):
        for phase in results["phases"]:
            ax.axvline(phase["start_t"], color="grey", linewidth=0.6)
        if soak is not None:
            ax.axvspan(soak[0], soak[1], color="tab:red", alpha=0.06)
            if v.get("rss"):
                ax.axvline(v["rss"]["mark_t"], color="tab:red", linestyle="--", linewidth=0.6)
    for phase in results["phases"]:
        ax_rss.annotate(
            phase["name"],
            ((phase["start_t"] + phase["end_t"]) / 2, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=8,
            ha="center",
            va="bottom",
        )
    verdict = (
        f"RSS flat {_pass(v.get('rss_flat', False))}, errors {_pass(v.get('no_errors', False))}"
        f", throughput {v.get('throughput_ratio')} {_pass(v.get('throughput', False))}"
    )
    fig.suptitle(f"fcgi-async soak with hostile peers (shaded): {verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def write(results: dict[str, Any], out: Path, readme: Path | None) -> None:
    """soak.json first (a chart failure must not lose data), then soak.png, then the README."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(results, indent=1) + "\n")
    why = chart(results, out / "soak.png")
    if why:
        results["meta"]["chart"] = f"not written: {why}"
        (out / "soak.json").write_text(json.dumps(results, indent=1) + "\n")
        print(f"no chart: {why}", file=sys.stderr)
    print(f"wrote {out / 'soak.json'}" + ("" if why else ", soak.png"), file=sys.stderr)
    if readme is not None:
        png = os.path.relpath(out.resolve() / "soak.png", readme.resolve().parent)
        text = readme.read_text()
        readme.write_text(
            splice_readme(text, readme_section(results, png), README_BEGIN, README_END)
        )
        print(f"rewrote the soak figures in {readme}", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Soak fcgi-async behind nginx with hostile FastCGI peers next to wrk "
        "(see benchmarks/README.md).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_BASELINE_S} s baseline + {QUICK_DURATION_S} s soak: a smoke check",
    )
    p.add_argument("--duration", type=float, help=f"soak seconds ({DEFAULT_DURATION_S})")
    p.add_argument("--baseline", type=float, help=f"baseline seconds ({DEFAULT_BASELINE_S})")
    p.add_argument("--warmup", type=float, help=f"warm-up seconds, unmeasured ({DEFAULT_WARMUP_S})")
    p.add_argument(
        "--recovery",
        type=float,
        help=f"seconds of wrk alone after the soak, not judged ({DEFAULT_RECOVERY_S})",
    )
    p.add_argument("--chunk", type=float, help=f"seconds per wrk run ({DEFAULT_CHUNK_S})")
    p.add_argument("--interface", choices=("asgi", "wsgi"), default="asgi")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument(
        "--hostile-scale",
        type=float,
        default=1.0,
        help="multiply the hostile peers' connections and rates (default 1)",
    )
    p.add_argument(
        "--hostile-kinds",
        default="all",
        metavar="LIST",
        help=f"all (default), or some of {','.join(hostile.KINDS)}: which kind of peer does what",
    )
    p.add_argument(
        "--server-arg",
        dest="server_args",
        action="append",
        default=[],
        metavar="ARG",
        help="one more fcgi-async argument (repeat), e.g. --server-arg=--send-timeout=30",
    )
    p.add_argument("--rss-abort-mib", type=float, default=RSS_ABORT_MIB)
    p.add_argument("--rss-limit-mib", type=float, default=RSS_GROWTH_LIMIT_MIB)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--readme", type=Path, metavar="FILE", help="rewrite FILE's soak figures")
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: verdicts, soak.png (and --readme) from a soak.json",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.hostile_kinds = hostile.parse_kinds(args.hostile_kinds)
    except ValueError as exc:
        p.error(str(exc))
    q = args.quick
    args.duration = (
        args.duration
        if args.duration is not None
        else (QUICK_DURATION_S if q else DEFAULT_DURATION_S)
    )
    args.baseline = (
        args.baseline
        if args.baseline is not None
        else (QUICK_BASELINE_S if q else DEFAULT_BASELINE_S)
    )
    args.warmup = (
        args.warmup if args.warmup is not None else (QUICK_WARMUP_S if q else DEFAULT_WARMUP_S)
    )
    args.recovery = (
        args.recovery
        if args.recovery is not None
        else (QUICK_RECOVERY_S if q else DEFAULT_RECOVERY_S)
    )
    args.chunk = args.chunk or (QUICK_CHUNK_S if q else DEFAULT_CHUNK_S)
    if args.duration < 2 or args.baseline < 2 or args.chunk < 1 or args.workers < 1:
        raise SystemExit("--duration and --baseline need 2 s or more, --chunk 1, --workers 1")
    return args


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["verdicts"] = verdicts(results, args.rss_limit_mib)
        write(results, args.out, args.readme)
        print("\n".join(summary_lines(results)))
        return 0
    if not Path(WRK).exists():
        print(f"wrk not found ({WRK}); apt-get install wrk", file=sys.stderr)
        return 2
    raise_nofile_limit()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    procs = ProcessSet()
    tmp = Path(tempfile.mkdtemp(prefix="fcgi-soak-"))
    try:
        results = run(args, procs, tmp)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the soak started", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if args.keep_tmp:
            print(f"temporary directory kept: {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["verdicts"] = verdicts(results, args.rss_limit_mib)
    write(results, args.out, args.readme)
    print("\n".join(summary_lines(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
