"""The soak run (``benchmarks/soak.py``): its verdict rules, its parsing, the hostile peers'
records, and a short end-to-end run that checks the shape of what it writes (never a timing or a
verdict).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import soak  # noqa: E402 - benchmarks/ is not a package
from harness import hostile  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

# --- parsing ------------------------------------------------------------------------------------


def test_cpu_ticks_counts_fields_after_the_last_parenthesis() -> None:
    # A command name with spaces and a ")" must not shift the fields: utime=700, stime=42.
    rest = " ".join(["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "700", "42", "0"])
    assert soak.cpu_ticks(f"1234 (evil) name) {rest}") == 742


@pytest.mark.parametrize("text", ["", "1234 (x) S 1 2", "1234 (x) S 1 2 3 4 5 6 7 8 9 10 a b"])
def test_cpu_ticks_malformed_is_none(text: str) -> None:
    assert soak.cpu_ticks(text) is None


def test_cpu_totals_busy_excludes_idle_and_iowait() -> None:
    text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    assert soak.cpu_totals(text) == (160, 1000)
    assert soak.cpu_totals("intr 1 2 3\n") is None


def test_slope_per_min() -> None:
    assert soak.slope_per_min([(0.0, 10.0), (30.0, 11.0), (60.0, 12.0)]) == pytest.approx(2.0)
    assert soak.slope_per_min([(5.0, 1.0), (5.0, 2.0)]) is None


def test_log_shapes_masks_numbers_and_counts() -> None:
    text = "refused request 7 from peer 1\nrefused request 9 from peer 2\nclosed after 30 s\n"
    assert soak.log_shapes(text) == [
        ("refused request N from peer N", 2),
        ("closed after N s", 1),
    ]


# --- verdict rules ------------------------------------------------------------------------------


def _sample(t: float, rss_mib: dict[str, float], busy: float = 50.0) -> dict[str, Any]:
    roles = {"1": "supervisor", "2": "worker", "3": "worker", "4": "worker", "9": "hostile"}
    return {
        "t": t,
        "procs": {
            pid: {"role": roles[pid], "rss_kib": int(mib * 1024), "cpu_pct": 10.0}
            for pid, mib in rss_mib.items()
        },
        "machine_busy_pct": busy,
    }


def _results(
    worker_growth_mib: float = 0.0,
    soak_rps: float = 900.0,
    soak_errors: dict[str, int] | None = None,
    canary_fail_at: float | None = None,
    respawn: bool = False,
) -> dict[str, Any]:
    """A soak of 100 s (baseline 0-100, soak 100-200): worker 2 grows linearly after t=100."""
    samples = []
    for t in range(0, 201):
        grow = max(0.0, (t - 100) / 100) * worker_growth_mib
        procs = {"1": 20.0, "2": 30.0 + grow, "3": 30.0, "9": 500.0 + t}
        if respawn and t >= 150:
            procs.pop("3")
            procs["4"] = 25.0
        samples.append(_sample(float(t), procs))
    canary = [{"t": float(t), "ok": True, "ms": 1.0, "error": None} for t in range(201)]
    if canary_fail_at is not None:
        canary[int(canary_fail_at)] = {
            "t": canary_fail_at,
            "ok": False,
            "ms": 5000.0,
            "error": "timeout",
        }
    chunks = [
        {"phase": "baseline", "start_t": 0.0, "end_t": 100.0, "duration_s": 100.0, "ok": 100000},
        {
            "phase": "soak",
            "start_t": 100.0,
            "end_t": 200.0,
            "duration_s": 100.0,
            "ok": int(soak_rps * 100),
            "errors": soak_errors or {},
        },
    ]
    return {
        "phases": [
            {"name": "baseline", "start_t": 0.0, "end_t": 100.0},
            {"name": "soak", "start_t": 100.0, "end_t": 200.0},
        ],
        "chunks": chunks,
        "samples": samples,
        "canary": canary,
        "stopped_early": None,
    }


def test_a_good_soak_passes_every_verdict() -> None:
    v = soak.verdicts(_results())
    assert v["rss_flat"]
    assert v["no_errors"]
    assert v["throughput"]
    assert v["passed"]
    assert v["throughput_ratio"] == pytest.approx(0.9)
    assert v["baseline"]["rps"] == pytest.approx(1000.0)
    assert v["soak"]["machine_busy_pct"] == pytest.approx(50.0)


def test_rss_rule_is_growth_after_the_warmup_mark() -> None:
    # Worker 2 grows 20 MiB over the soak: 16 MiB of it after the 20% mark (t=120).
    v = soak.verdicts(_results(worker_growth_mib=20.0))
    assert v["rss"]["mark_t"] == pytest.approx(120.0)
    assert v["rss"]["per_process"]["2"]["growth_mib"] == pytest.approx(16.0, abs=0.1)
    assert v["rss"]["max_growth_mib"] == pytest.approx(16.0, abs=0.1)
    assert v["rss"]["per_process"]["2"]["trend_mib_per_min"] == pytest.approx(12.0, abs=0.1)
    assert v["rss"]["per_process"]["3"]["trend_mib_per_min"] == pytest.approx(0.0)
    # Exactly at the limit passes; above it fails; the hostile process never counts.
    assert soak.verdicts(_results(worker_growth_mib=20.0), rss_limit_mib=16.0)["rss_flat"]
    failed = soak.verdicts(_results(worker_growth_mib=20.0), rss_limit_mib=15.0)
    assert not failed["rss_flat"]
    assert not failed["passed"]
    assert "9" not in failed["rss"]["per_process"]


def test_growth_during_warmup_alone_is_flat() -> None:
    results = _results()
    for s in results["samples"]:
        if 100 <= s["t"] < 120:
            s["procs"]["2"]["rss_kib"] = int((30 + (s["t"] - 100)) * 1024)  # +20 MiB by t=119
        elif s["t"] >= 120:
            s["procs"]["2"]["rss_kib"] = 50 * 1024
    assert soak.verdicts(results)["rss_flat"]


def test_a_replaced_worker_is_not_flat() -> None:
    v = soak.verdicts(_results(respawn=True))
    assert v["rss"]["replaced"] == ["3", "4"]
    assert not v["rss_flat"]


def test_a_stopped_soak_is_not_flat() -> None:
    results = _results()
    results["stopped_early"] = "the server exited with status -9"
    assert not soak.verdicts(results)["rss_flat"]


@pytest.mark.parametrize(
    ("kwargs", "total"),
    [
        ({"soak_errors": {"timeout": 2, "status": 1}}, 3),
        ({"canary_fail_at": 150.0}, 1),
    ],
)
def test_any_wellbehaved_error_in_the_soak_fails(kwargs: dict[str, Any], total: int) -> None:
    v = soak.verdicts(_results(**kwargs))
    assert v["soak"]["error_total"] == total
    assert not v["no_errors"]
    assert not v["passed"]


def test_canary_errors_outside_the_soak_do_not_count_for_it() -> None:
    v = soak.verdicts(_results(canary_fail_at=50.0))
    assert v["no_errors"]
    assert v["baseline"]["canary_errors"] == {"timeout": 1}


def test_throughput_rule_is_a_ratio_of_ok_requests_per_second() -> None:
    assert soak.verdicts(_results(soak_rps=800.0))["throughput"]
    low = soak.verdicts(_results(soak_rps=799.0))
    assert low["throughput_ratio"] == pytest.approx(0.799)
    assert not low["throughput"]


def test_no_soak_phase_fails_everything() -> None:
    results = _results()
    results["phases"] = results["phases"][:1]
    v = soak.verdicts(results)
    assert not v["rss_flat"]
    assert not v["no_errors"]
    assert not v["throughput"]
    assert not v["passed"]


def test_failed_wrk_runs_count_as_errors() -> None:
    results = _results()
    failed = {"phase": "soak", "start_t": 200.0, "end_t": 201.0, "duration_s": 0.0, "ok": 0}
    results["chunks"].append({**failed, "failed": "wrk exited 1"})
    assert soak.phase_load(results["chunks"], "soak")["errors"] == {"wrk_failed": 1}
    assert not soak.verdicts(results)["no_errors"]


# --- README -------------------------------------------------------------------------------------


def test_readme_placeholder_says_not_measured_and_splices() -> None:
    section = soak.readme_section(None, "benchmarks/results/soak.png")
    assert section.startswith(soak.README_BEGIN)
    assert section.endswith(soak.README_END)
    assert "Not yet measured" in section
    readme = (ROOT / "README.md").read_text()
    assert soak.README_BEGIN in readme
    assert (
        readme.index("## Limits") < readme.index("## Reliability") < readme.index(soak.README_BEGIN)
    )


def test_readme_section_from_results_carries_the_figures() -> None:
    results = _results(worker_growth_mib=20.0)
    results["meta"] = {
        "command": "python benchmarks/soak.py --duration 120",
        "date_start": "2026-12-03T20:00:00+00:00",
        "host": {"cpu_count": 2, "cpu_model": "CPU", "mem_total_mib": 1024, "kernel": "6.1"},
        "git": {"commit": "0123456789abcdef", "dirty": False},
        "loadavg_start": [0.1, 0.2, 0.3],
        "loadavg_end": [2.5, 1.2, 0.6],
    }
    results["settings"] = {
        "interface": "asgi",
        "workers": 2,
        "connections": 32,
        "baseline_s": 100,
        "duration_s": 100,
    }
    results["hostile"] = {
        "kinds": {
            "slowloris": {
                "connections": 12,
                "requests": 0,
                "closed_by_server": 3,
                "end_requests": {},
                "events": {},
                "lifetimes_s": [30.1, 30.0, 31.0],
            },
            "abort": {
                "connections": 1,
                "requests": 4,
                "end_requests": {"complete": 4},
                "aborted_stream_kib": {"at_once": [0.0, 0.0], "mid_answer": [64.0, 320.0, 128.0]},
            },
        }
    }
    results["server_log"] = {
        "lines": {"baseline": 0, "soak": 1500},
        "top_soak": [["refused request N: OVERLOADED", 1440]],
    }
    results["verdicts"] = soak.verdicts(results)
    section = soak.readme_section(results, "benchmarks/results/soak.png")
    assert "`python benchmarks/soak.py --duration 120`" in section
    assert "`0123456789`" in section
    assert "load average 0.1 at start" in section
    assert "| well-behaved req/s | 1000.0 | 900.0 |" in section
    assert "16.0 MiB" in section
    assert "closed after a median 30.1 s" in section
    assert "`abort`: 1 connection; 4 requests" in section
    assert "aborted mid answer still sent a median 128 KiB (max 320)" in section
    assert "logged 1500 lines during the soak (0 during the baseline)" in section
    assert "1440 times: `refused request N: OVERLOADED`" in section
    assert "Not yet measured" not in section
    lines = soak.summary_lines(results)
    assert any(line.startswith("[PASS] RSS flat") for line in lines)
    assert lines[-1] == "overall: PASS"


# --- hostile peers' records -----------------------------------------------------------------------


def test_hostile_records_and_pairs_are_fastcgi() -> None:
    rec = hostile.record(hostile.STDIN, 7, b"abc")
    assert rec == bytes([1, 5, 0, 7, 0, 3, 0, 0]) + b"abc"
    # Names and values of 128 bytes and more take a 4-byte length with the top bit set.
    encoded = hostile.pairs({"A": "x" * 200})
    assert encoded[:1] == b"\x01"
    assert struct.unpack(">I", encoded[1:5])[0] == 0x80000000 | 200
    assert encoded[5:] == b"A" + b"x" * 200
    # A stream longer than one chunk is split, without the empty end record.
    data = b"p" * 70000
    out = hostile.stream(hostile.PARAMS, 1, data)
    assert len(out) == 70000 + 8 * 3
    with pytest.raises(ValueError, match="record content"):
        hostile.record(hostile.STDIN, 1, b"x" * 65536)


def test_hostile_targets_are_loopback_or_unix_only() -> None:
    assert hostile.parse_target("unix:/tmp/x.sock") == ("unix", "/tmp/x.sock")
    assert hostile.parse_target("127.0.0.1:9000") == ("127.0.0.1", 9000)
    assert hostile.parse_target("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="loopback"):
        hostile.parse_target("10.0.0.1:9000")


def test_hostile_kinds_are_chosen_by_name() -> None:
    assert hostile.parse_kinds("all") == hostile.KINDS
    assert hostile.parse_kinds("abort, nonreader") == ("abort", "nonreader")
    with pytest.raises(ValueError, match="unknown hostile kinds"):
        hostile.parse_kinds("nonreader,bogus")
    with pytest.raises(ValueError, match="unknown hostile kinds"):
        hostile.parse_kinds(",")


async def test_hostile_tasks_are_one_per_slot_of_the_chosen_kinds() -> None:
    peers = hostile.Peers(("unix", "/nonexistent"), None, hostile.Settings())
    tasks = peers.tasks(("slowloris", "flood_begin"))
    try:
        assert len(tasks) == hostile.Settings().slowloris_conns + 1
    finally:
        for task in tasks:  # never started: closed, so that no "never awaited" warning fails
            assert inspect.iscoroutine(task)
            task.close()


async def test_a_nonreader_closed_by_the_server_counts_once(tmp_path: Path) -> None:
    # The server reads a little and closes: the non-reader's next write fails, and the close is
    # counted once (not once by the failed send and again by the non-reader itself).
    async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    path = tmp_path / "s.sock"
    server = await asyncio.start_unix_server(read_then_close, str(path))
    try:
        settings = hostile.Settings(nonreader_bursts_per_s=20.0, rate_bytes=10_000_000)
        peers = hostile.Peers(("unix", str(path)), None, settings)
        await asyncio.wait_for(peers.nonreader(), 30)
    finally:
        server.close()
        await server.wait_closed()
    st = peers.stats["nonreader"]
    assert st.connections == 1
    assert st.closed_by_server == 1
    assert len(st.lifetimes_s) == 1


def test_hostile_scaled_keeps_one_connection_per_kind() -> None:
    small = hostile.Settings().scaled(0.01)
    assert small.nonreader_conns == 1
    assert small.slowloris_conns == 1
    assert small.abort_conns == 1
    assert small.abort_per_s >= 1
    assert small.flood_params_hold_bytes == hostile.Settings().flood_params_hold_bytes


# --- end to end ---------------------------------------------------------------------------------


@pytest.mark.nginx
@pytest.mark.slow
@pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed")
@pytest.mark.skipif(not os.access(WRK, os.X_OK), reason="wrk is not installed")
def test_soak_tiny_run_writes_the_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--warmup",
            "1",
            "--baseline",
            "3",
            "--duration",
            "8",
            "--recovery",
            "0",
            "--chunk",
            "2",
            "--connections",
            "4",
            "--hostile-scale",
            "0.3",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "overall: " in proc.stdout
    results = json.loads((tmp_path / "soak.json").read_text())
    assert [p["name"] for p in results["phases"]] == ["warmup", "baseline", "soak"]
    for key in ("date_start", "date_end", "command", "host", "versions", "git", "server_argv"):
        assert key in results["meta"]
    assert results["meta"]["command"].startswith("python benchmarks/soak.py --warmup 1")
    assert (tmp_path / "soak.png").exists() or "chart" in results["meta"]
    roles = {p["role"] for s in results["samples"] for p in s["procs"].values()}
    assert {"supervisor", "worker", "hostile"} <= roles
    for phase in ("baseline", "soak"):
        assert soak.phase_load(results["chunks"], phase)["ok_requests"] > 0
    assert results["canary"]
    v = results["verdicts"]
    for key in ("rss_flat", "no_errors", "throughput", "passed", "throughput_ratio", "rss"):
        assert key in v
    kinds = results["hostile"]["kinds"]
    assert set(kinds) == set(hostile.KINDS)
    for kind, st in kinds.items():
        assert st["connections"] + st["connect_errors"] > 0, kind
    # The hand-built records are understood: the BEGIN flood is refused with OVERLOADED
    # (130 BEGINs on one connection, the server takes 100).
    assert kinds["flood_begin"]["end_requests"].get("overloaded", 0) > 0, kinds["flood_begin"]
    assert results["server_log"]["lines"]["soak"] > 0
