"""benchmarks/bench_packing.py's classic-recipe column (issue 25: the recipe the 37 s target is a
tenth of, side by side on the same rows) at a tiny size, so the comparison the README quotes cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_packing.py"


def test_the_classic_recipe_column_runs_ten_candidates_and_scores_the_refit_on_test(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_packing", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_packing", bench)
    spec.loader.exec_module(bench)
    row = bench._child("classic", 2, 0, None, 5.0)  # the time-to-quality loop's call: no time limit for it
    assert "error" not in row, row
    assert row["pack"] == "classic" and row["trials"] == 10 and row["complete"] == 10, row
    assert 0 < row["test"] <= 1 and 0 < row["best_val"] <= 1, row
