"""Turn raw runs into medians, ratios against fcgi-async from the same run, Markdown and a chart."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .stacks import STACKS_BY_NAME

#: The stacks ratios are computed against, in column order.
REFERENCES = ("fcgi-async-asgi-1w", "fcgi-async-wsgi-1w")
#: Memory budget the issue sets for a worker holding 1,000 idle connections.
IDLE_CONNS_RSS_TARGET_MIB = 60.0


def _errors(run: dict[str, Any]) -> int:
    return int(sum(run["errors"].values()))


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per scenario and stack: median/min/max req/s, median p50/p99, errors, paired ratios.

    A ratio is computed per run index (the stack's req/s in run *i* divided by the reference's
    req/s in run *i*, both measured in the same A B A B cycle) and the median of those is kept.
    """
    by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for run in results["runs"]:
        by_key.setdefault((run["scenario"], run["stack"]), {})[run["run"]] = run
    summary: dict[str, Any] = {}
    for scenario in results["scenarios"]:
        rows: dict[str, Any] = {}
        for stack in results["stacks"]:
            runs = by_key.get((scenario, stack))
            failure = results["failures"].get(scenario, {}).get(stack)
            if not runs:
                if failure is not None or stack in results["scenario_stacks"].get(scenario, []):
                    rows[stack] = {
                        "available": False,
                        "reason": failure or results["stacks"][stack].get("reason"),
                    }
                continue
            rps = [r["rps"] for r in runs.values()]
            rows[stack] = {
                "available": True,
                "runs": len(rps),
                "rps_median": statistics.median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "p50_ms": statistics.median(r["latency_us"]["p50"] / 1000 for r in runs.values()),
                "p99_ms": statistics.median(r["latency_us"]["p99"] / 1000 for r in runs.values()),
                "errors": sum(_errors(r) for r in runs.values()),
                "requests": sum(r["requests"] for r in runs.values()),
                "ratio_vs": {},
            }
            notes: list[str] = []
            if failure is not None:
                notes.append(failure)
            logged = [
                r["nginx_error_log_tail"] for r in runs.values() if r.get("nginx_error_log_tail")
            ]
            if logged:
                line = logged[0].strip().splitlines()[-1]
                # Keep the message, drop nginx's timestamp/pid prefix and the request details.
                line = line.split("] ", 1)[-1].split(", client:", 1)[0]
                notes.append(f"errors; nginx logged: {line}")
            fair = results.get("fairness", {}).get(scenario, {}).get(stack)
            if fair is not None and fair["answered"] < fair["connections"]:
                rows[stack]["starved"] = fair["connections"] - fair["answered"]
                notes.append(
                    f"{fair['connections'] - fair['answered']} of {fair['connections']} concurrent "
                    f"clients got no answer within {fair['timeout_s']:.0f} s (starved); req/s "
                    "counts only the clients served"
                )
            if notes:
                rows[stack]["note"] = "; ".join(notes)
        for ref in REFERENCES:
            ref_runs = by_key.get((scenario, ref))
            if not ref_runs:
                continue
            for stack, row in rows.items():
                if not row.get("available"):
                    continue
                pairs = [
                    run["rps"] / ref_runs[i]["rps"]
                    for i, run in by_key[(scenario, stack)].items()
                    if i in ref_runs and ref_runs[i]["rps"] > 0
                ]
                if pairs:
                    row["ratio_vs"][ref] = statistics.median(pairs)
        if rows:
            summary[scenario] = rows
    return summary


def _paired(
    results: dict[str, Any], scenario: str, a: str, b: str, key: str = "rps"
) -> float | None:
    """Median over runs of a[key] / b[key] for runs measured in the same cycle."""
    ra = {r["run"]: r for r in results["runs"] if r["scenario"] == scenario and r["stack"] == a}
    rb = {r["run"]: r for r in results["runs"] if r["scenario"] == scenario and r["stack"] == b}

    def value(r: dict[str, Any]) -> float:
        return float(r["latency_us"]["p99"] if key == "p99" else r[key])

    pairs = [value(ra[i]) / value(rb[i]) for i in ra if i in rb and value(rb[i]) > 0]
    return statistics.median(pairs) if pairs else None


def _best(summary: dict[str, Any], scenario: str, server: str) -> str | None:
    rows = summary.get(scenario, {})
    # A configuration that drops or starves requests (errors, timeouts) is not a "best" one.
    cands = [
        (row["rps_median"], name)
        for name, row in rows.items()
        if row.get("available")
        and not row["errors"]
        and not row.get("starved")
        and STACKS_BY_NAME[name].server == server
    ]
    return max(cands)[1] if cands else None


def _overlap(summary: dict[str, Any], scenario: str, a: str, b: str) -> bool | None:
    """Whether the min-max req/s ranges of two stacks overlap (the difference is noise)."""
    rows = summary.get(scenario, {})
    ra, rb = rows.get(a), rows.get(b)
    if not ra or not rb or not ra.get("available") or not rb.get("available"):
        return None
    return bool(ra["rps_min"] <= rb["rps_max"] and rb["rps_min"] <= ra["rps_max"])


def targets(results: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the ratio measured in this run (None when not measured)."""
    out: list[dict[str, Any]] = []

    def add(
        what: str,
        goal: str,
        value: float | None,
        met: bool | None,
        detail: str,
        pair: tuple[str, str, str | None] | None = None,
    ) -> None:
        target = {"target": what, "goal": goal, "measured": value, "met": met, "detail": detail}
        if pair is not None and pair[2] is not None:
            target["within_noise"] = _overlap(summary, *pair)  # type: ignore[arg-type]
        out.append(target)

    asgi, wsgi = REFERENCES
    best_php = _best(summary, "hello-32", "php-fpm")
    r = _paired(results, "hello-32", asgi, "uvicorn")
    add(
        "raw ASGI hello: fcgi-async ÷ uvicorn",
        ">= 1.0",
        r,
        None if r is None else r >= 1.0,
        "hello-32, req/s",
        ("hello-32", asgi, "uvicorn"),
    )
    r = _paired(results, "hello-32", asgi, best_php) if best_php else None
    add(
        "raw ASGI hello: fcgi-async ÷ php-fpm best",
        ">= 2.0",
        r,
        None if r is None else r >= 2.0,
        f"hello-32, best php-fpm = {best_php}",
        ("hello-32", asgi, best_php),
    )
    r = _paired(results, "hello-32", wsgi, best_php) if best_php else None
    add(
        "raw WSGI hello: fcgi-async ÷ php-fpm best",
        ">= 1.0",
        r,
        None if r is None else r >= 1.0,
        f"hello-32, best php-fpm = {best_php}",
        ("hello-32", wsgi, best_php),
    )
    r = _paired(results, "flask-hello", wsgi, "uvicorn-wsgi")
    add(
        "Flask hello: fcgi-async ÷ uvicorn --interface wsgi",
        "ahead (> 1.0)",
        r,
        None if r is None else r > 1.0,
        "flask-hello, req/s",
        ("flask-hello", wsgi, "uvicorn-wsgi"),
    )
    r = _paired(results, "starlette-hello", asgi, "uvicorn")
    add(
        "Starlette hello: fcgi-async ÷ uvicorn",
        "ahead (> 1.0)",
        r,
        None if r is None else r > 1.0,
        "starlette-hello, req/s",
        ("starlette-hello", asgi, "uvicorn"),
    )
    r = _paired(results, "hello-256", asgi, "uvicorn", key="p99")
    add(
        "p99 latency at 256 conns: fcgi-async ÷ uvicorn",
        "<= 1.0",
        r,
        None if r is None else r <= 1.0,
        "hello-256, ASGI, lower is better",
    )
    for ref in REFERENCES:
        mem = results["memory"].get(ref, {})
        v = mem.get("conns_1000_mib")
        ok = v is not None and mem.get("conns_held") == 1000
        add(
            f"RSS holding 1,000 idle connections: {ref}",
            f"< {IDLE_CONNS_RSS_TARGET_MIB:.0f} MiB",
            v,
            None if v is None else (ok and v < IDLE_CONNS_RSS_TARGET_MIB),
            f"held {mem.get('conns_held')} connections" if v is not None else "not measured",
        )
    return out


# --- Markdown ------------------------------------------------------------------------------------


def _cell(text: object) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _fmt_rps(v: float) -> str:
    return f"{v:,.0f}"


def _fmt_ratio(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _run_load_line(results: dict[str, Any]) -> str:
    loads = sorted(r["loadavg"][0] for r in results["runs"] if r.get("loadavg"))
    if not loads:
        return "- 1-minute load average during the runs: not recorded"
    return (
        f"- 1-minute load average when each measurement started: min {loads[0]}, median "
        f"{statistics.median(loads):.2f}, max {loads[-1]} (it includes the benchmark's own "
        "wrk, nginx and server, about 2-3 on 2 CPUs; more means other work on the machine)"
    )


def _target_cells(target: dict[str, Any], no: str, noise: str) -> tuple[str, str]:
    """(measured, met) cells of a target's row; ``no`` and ``noise`` are how to say those."""
    met = "—" if target["met"] is None else ("yes" if target["met"] else no)
    if target.get("within_noise"):
        met += noise
    val = target["measured"]
    if val is None:
        return "not measured", met
    return (f"{val:.1f} MiB" if "RSS" in target["target"] else f"{val:.2f}x"), met


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    host = meta["host"]
    s = meta["settings"]
    v = meta["versions"]
    lines = [
        "# fcgi-async benchmark results",
        "",
        f"- date: {meta['date_start']} → {meta['date_end']} (UTC)",
        f"- command: `{meta['command']}`",
        f"- machine: {host['cpu_count']} CPUs ({host['cpu_model']}), {host['mem_total_mib']} MiB, "
        f"Linux {host['kernel']}",
        f"- load average (1/5/15 min): {meta['loadavg_start']} at start, "
        f"{meta['loadavg_end']} at end",
        _run_load_line(results),
        f"- settings: {s['runs']} run(s) x {s['duration_s']} s per stack and scenario, "
        f"{s['warmup_s']} s warm-up, wrk -t{s['wrk_threads']}, nginx worker_processes 1, "
        "stacks alternated A B A B",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- fcgi-async commit: {meta['git']['commit']}"
        + (
            " plus uncommitted changes to "
            + ", ".join(meta["git"].get("uncommitted_server_files") or ["the server"])
            if meta["git"]["dirty"]
            else ""
        ),
        "",
        "Ratios are req/s of the row ÷ req/s of the fcgi-async reference measured in the same "
        "cycle (median of the per-cycle ratios), so fcgi-async is 1.00x and a row above 1.00x is "
        "faster than fcgi-async. min-max is the spread across runs: when it overlaps between two "
        "rows, the difference is noise.",
        "",
    ]
    for scenario, rows in results["summary"].items():
        sc = results["scenarios"][scenario]
        refs = [r for r in REFERENCES if any(r in row.get("ratio_vs", {}) for row in rows.values())]
        lines += [f"## {scenario}: {sc['description']}", ""]
        head = "| stack | ok req/s (median) | min-max | p50 ms | p99 ms | errors |"
        sep = "|---|---:|---:|---:|---:|---:|"
        for ref in refs:
            head += f" ÷ {ref} |"
            sep += "---:|"
        lines += [head, sep]
        for stack, row in rows.items():
            if not row.get("available"):
                lines.append(
                    f"| {stack} | not available: {_cell(row.get('reason'))} |"
                    + " |" * (4 + len(refs))
                )
                continue
            cells = [
                stack,
                _fmt_rps(row["rps_median"]),
                f"{_fmt_rps(row['rps_min'])}-{_fmt_rps(row['rps_max'])}",
                _fmt(row["p50_ms"], 2),
                _fmt(row["p99_ms"], 2),
                str(row["errors"]) + (f" ({row['starved']} starved)" if row.get("starved") else ""),
            ] + [_fmt_ratio(row["ratio_vs"].get(ref)) for ref in refs]
            lines.append("| " + " | ".join(cells) + " |")
        notes = [(stack, row["note"]) for stack, row in rows.items() if row.get("note")]
        if notes:
            lines.append("")
            lines += [f"- {stack}: {_cell(note)}" for stack, note in notes]
        lines.append("")
    mem = results["memory"]
    if mem:
        lines += [
            "## Memory: RSS of one worker (MiB)",
            "",
            "idle = after start and one request of each kind; under load = peak while wrk drives "
            "hello with 256 connections; 1,000 idle = after the load, nginx stopped, while a "
            "script holds 1,000 used keep-alive connections straight to the worker.",
            "",
            "| stack | idle | under load (256 conns) | 1,000 idle keep-alive conns | note |",
            "|---|---:|---:|---:|---|",
        ]
        for stack, m in mem.items():
            if not m.get("available", True):
                lines.append(f"| {stack} | — | — | — | not available: {_cell(m.get('reason'))} |")
                continue
            lines.append(
                f"| {stack} | {_fmt(m.get('idle_mib'))} | {_fmt(m.get('load_mib'))} | "
                f"{_fmt(m.get('conns_1000_mib'))} | {_cell(m.get('note') or '')} |"
            )
        lines.append("")
    if results.get("targets"):
        lines += [
            "## Targets (issue 5), from this run",
            "",
            "| target | goal | measured | met | detail |",
            "|---|---|---:|---|---|",
        ]
        for t in results["targets"]:
            shown, met = _target_cells(t, "no", " (within noise: the min-max ranges overlap)")
            lines.append(
                f"| {t['target']} | {t['goal']} | {shown} | {met} | {_cell(t['detail'])} |"
            )
        lines.append("")
    unavailable = {n: st["reason"] for n, st in results["stacks"].items() if not st["available"]}
    if unavailable:
        lines += ["## Stacks not available on this machine", ""]
        lines += [f"- {n}: {_cell(why)}" for n, why in unavailable.items()]
        lines.append("")
    lines += ["## Stacks", ""]
    lines += [f"- **{n}**: {st['description']}" for n, st in results["stacks"].items()]
    lines.append("")
    return "\n".join(lines)


# --- chart ---------------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> str | None:
    """Write a PNG (one panel per scenario, plus memory); return why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib not installed ({exc}); pip install matplotlib"
    panels = [
        (sc, rows)
        for sc, rows in results["summary"].items()
        if any(r.get("available") for r in rows.values())
    ]
    mem = {k: m for k, m in results["memory"].items() if m.get("idle_mib") is not None}
    n = len(panels) + (1 if mem else 0)
    if n == 0:
        return "nothing was measured"
    cols = 2 if n > 1 else 1
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(7 * cols, 3.2 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]

    def color(stack: str) -> str:
        server = STACKS_BY_NAME[stack].server
        return {
            "fcgi-async": "#d62728",
            "php-fpm": "#7a5fb0",
            "uvicorn": "#2a9d8f",
            "nginx": "#999999",
        }.get(server, "#e9a23b")

    for ax, (scenario, rows) in zip(flat, panels, strict=False):
        names = [n for n, r in rows.items() if r.get("available")]
        vals = [rows[n]["rps_median"] for n in names]
        lo = [rows[n]["rps_median"] - rows[n]["rps_min"] for n in names]
        hi = [rows[n]["rps_max"] - rows[n]["rps_median"] for n in names]
        ypos = list(range(len(names)))
        bars = ax.barh(ypos, vals, xerr=[lo, hi], color=[color(n) for n in names], capsize=2)
        labels = []
        for bar, n in zip(bars, names, strict=True):
            flaw = "starved" if rows[n].get("starved") else ("errors" if rows[n]["errors"] else "")
            if flaw:  # not a valid result: faded and hatched, and said so in the label
                bar.set_alpha(0.35)
                bar.set_hatch("///")
            labels.append(f"{n} ({flaw})" if flaw else n)
        ax.set_yticks(ypos, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{scenario} — ok req/s (median, min-max)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        for y, val in zip(ypos, vals, strict=True):
            ax.text(val, y, f" {val:,.0f}", va="center", fontsize=7)
    used = len(panels)
    if mem:
        ax = flat[used]
        names = list(mem)
        kinds = [
            ("idle_mib", "idle"),
            ("load_mib", "under load"),
            ("conns_1000_mib", "1,000 idle conns"),
        ]
        width = 0.27
        for k, (key, label) in enumerate(kinds):
            vals = [mem[n].get(key) or 0 for n in names]
            ys = [i + (k - 1) * width for i in range(len(names))]
            ax.barh(ys, vals, height=width, label=label)
            for y, val in zip(ys, vals, strict=True):
                if val:
                    ax.text(val, y, f" {val:.0f}", va="center", fontsize=6)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title("RSS of one worker, MiB", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
        ax.tick_params(axis="x", labelsize=8)
        used += 1
    for ax in flat[used:]:
        ax.axis("off")
    meta = results["meta"]
    loads = [r["loadavg"][0] for r in results["runs"] if r.get("loadavg")]
    during = f", median {statistics.median(loads):.1f} during the runs" if loads else ""
    fig.suptitle(
        f"fcgi-async benchmarks {meta['date_start'][:10]} — {meta['host']['cpu_count']} CPUs, "
        f"1-min load {meta['loadavg_start'][0]} at start{during}, {meta['settings']['runs']}x"
        f"{meta['settings']['duration_s']} s",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


# --- README section ------------------------------------------------------------------------------

#: The README's performance section lies between these lines; ``run.py --readme`` rewrites it.
README_BEGIN = "<!-- benchmark results: written by benchmarks/run.py --readme; do not edit -->"
README_END = "<!-- end of benchmark results -->"
#: The stacks of the README's summary table (the full set is in results.md).
README_STACKS = (
    "fcgi-async-asgi-1w",
    "fcgi-async-wsgi-1w",
    "fcgi-async-asgi-2w",
    "uvicorn",
    "uvicorn-wsgi",
    "php-fpm-1",
    "php-fpm-2",
    "nginx",
)
#: The stacks whose run-to-run spread the noise sentence quotes.
_NOISE_STACKS = ("fcgi-async-asgi-1w", "fcgi-async-wsgi-1w", "uvicorn", "uvicorn-wsgi")


def _spread(summary: dict[str, Any]) -> tuple[float, str, str] | None:
    """The widest (max - min) / median among the noise stacks: (fraction, scenario, stack)."""
    widest: tuple[float, str, str] | None = None
    for scenario, rows in summary.items():
        for stack in _NOISE_STACKS:
            row = rows.get(stack)
            if not row or not row.get("available") or row["runs"] < 2 or not row["rps_median"]:
                continue
            spread = (row["rps_max"] - row["rps_min"]) / row["rps_median"]
            if widest is None or spread > widest[0]:
                widest = (spread, scenario, stack)
    return widest


def readme_section(results: dict[str, Any], chart_path: str) -> str:
    """The README's performance section (between README_BEGIN and README_END), from a run.

    Every number in it comes from ``results``; ``chart_path`` is the PNG's path relative to
    the README.
    """
    meta = results["meta"]
    host = meta["host"]
    s = meta["settings"]
    summary = results["summary"]
    scenarios = [sc for sc in results["scenarios"] if sc in summary]
    stacks = [st for st in README_STACKS if any(st in summary[sc] for sc in scenarios)]
    loads = sorted(r["loadavg"][0] for r in results["runs"] if r.get("loadavg"))
    lines = [
        README_BEGIN,
        "",
        f"Measured by `{meta['command']}` on {meta['date_start'][:10]}: {host['cpu_count']} CPUs "
        f"({host['cpu_model']}), {host['mem_total_mib']} MiB, Linux {host['kernel']}, "
        f"fcgi-async commit `{meta['git']['commit'][:10]}`. Every stack runs behind its own "
        f"nginx (1 worker process) on loopback and is driven by wrk "
        f"(-t{s['wrk_threads']}); the stacks take turns, {s['runs']} runs of "
        f"{s['duration_s']:g} s each, and each figure is the median. Requests per second "
        "(only 2xx/3xx answers count):",
        "",
        "| stack | " + " | ".join(scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    for stack in stacks:
        cells = []
        for sc in scenarios:
            row = summary[sc].get(stack)
            if not row or not row.get("available"):
                cells.append("—")
                continue
            cell = _fmt_rps(row["rps_median"])
            if row.get("starved"):
                cell += " (starved)"
            elif row["errors"]:
                cell += " (errors)"
            cells.append(cell)
        lines.append(f"| {stack} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The performance targets. Each is a ratio of two stacks measured in the same cycle, "
        "the median of the per-cycle ratios: on a noisy run it can differ from the ratio of the "
        "two medians above. *Within noise* means the two stacks' min-max ranges overlap.",
        "",
        "| target | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    for t in results.get("targets", []):
        shown, met = _target_cells(t, "**no**", " (within noise)")
        lines.append(f"| {t['target']} | {t['goal']} | {shown} | {met} |")
    mem = results.get("memory", {})
    php = mem.get("php-fpm-1", {})
    if php.get("idle_mib") is not None:
        lines += [
            "",
            f"A php-fpm child uses {php['idle_mib']:.1f} MiB but serves one connection at a time.",
        ]
    lines += ["", f"![benchmark chart]({chart_path})", ""]
    widest = _spread(summary)
    noise = (
        "Noise: wrk, nginx and the server share the 2 CPUs, and the 1-minute load average "
        f"during the measurements was {loads[0]}-{loads[-1]} (median "
        f"{statistics.median(loads):.2f}, of which about 2-3 is the benchmark itself)."
        if loads
        else "Noise: the load average was not recorded."
    )
    if widest is not None:
        noise += (
            f" Runs of the same stack spread by up to {widest[0]:.0%} ({widest[2]}, "
            f"{widest[1]}): a difference smaller than the min-max spread in "
            "`benchmarks/results/results.md` is not a result."
        )
    lines += [
        noise,
        "",
        "Every run, with wrk's own output, is in `benchmarks/results/results.json`; the full "
        "tables (latency, errors, the other FastCGI servers, memory) are in "
        "`benchmarks/results/results.md`, and `benchmarks/README.md` says how to run it.",
        "",
        README_END,
    ]
    return "\n".join(lines)


def splice_readme(
    text: str, section: str, begin: str = README_BEGIN, end_marker: str = README_END
) -> str:
    """``text`` with the part between ``begin`` and ``end_marker`` (by default the performance
    section's markers) replaced by ``section``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start = text.find(begin)
    end = text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {begin!r} ... {end_marker!r} block")
    return text[:start] + section + text[end + len(end_marker) :]
