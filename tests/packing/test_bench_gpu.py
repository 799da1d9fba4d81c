"""benchmarks/bench_gpu.py at its CPU size, so the GPU run (issue 25 item 6) cannot rot: every
configuration runs and prints its figures as JSON lines."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import keras

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_tiny_prints_every_configuration(capsys):
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--tiny"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    info, rows = lines[0], {r["run"]: r for r in lines[1:]}
    assert info["backend"] == keras.backend.backend() and info["size"] == "tiny"
    assert set(rows) == {"plain loop", "pack 1", "pack 4", "quality (pack 4, TPE)"}
    for name in ("plain loop", "pack 1", "pack 4"):
        r = rows[name]
        assert r["trials"] >= 1 and r["cut_by_timeout"] == 0, r
        assert r["trials_per_min"] > 0 and r["samples_per_s"] > 0 and r["epochs"] >= r["trials"], r
    assert rows["pack 4"]["pack_sizes"] == [4] and rows["pack 4"]["trials"] == 4
    q = rows["quality (pack 4, TPE)"]
    assert q["trials"] == 4 and 0 < q["test"] <= 1
