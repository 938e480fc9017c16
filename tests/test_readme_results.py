"""The README's performance section is the harness's rendering of the committed results.

No number may stand in the README that the benchmark harness did not produce: the section
between the marker comments must be exactly what ``benchmarks/run.py --readme`` writes from
``benchmarks/results/results.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness.report import (  # noqa: E402 - benchmarks/ is not a package
    README_BEGIN,
    README_END,
    readme_section,
    splice_readme,
)


def test_readme_section_is_the_committed_run() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "results.json").read_text())
    readme = (ROOT / "README.md").read_text()
    section = readme_section(results, "benchmarks/results/results.png")
    assert splice_readme(readme, section) == readme, (
        "README.md's benchmark section differs from benchmarks/results/results.json: run "
        "`benchmarks/run.py --render benchmarks/results/results.json --readme README.md`"
    )
    for target in results["targets"]:
        assert target["target"] in section
    assert results["meta"]["command"] in section


def test_splice_replaces_only_the_section() -> None:
    text = f"before\n{README_BEGIN}\nold\n{README_END}\nafter\n"
    new = splice_readme(text, f"{README_BEGIN}\nnew\n{README_END}")
    assert new == f"before\n{README_BEGIN}\nnew\n{README_END}\nafter\n"


def test_splice_without_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="benchmark results"):
        splice_readme("no markers here\n", "x")
