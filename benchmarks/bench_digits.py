"""Digits on this machine: the classic random recipe (scikit-learn engine) vs the Optuna engine.

Both run in this one process, one after the other, on the same data split, storage kind and
machine. The classic recipe runs at its full budget (10 candidates x 3 folds, SGD, up to 100
epochs, EarlyStopping(patience=10)); the Optuna engine (TPE + Hyperband, holdout validation) gets a
wall-clock budget of a fifth of what the classic recipe took (or --optuna-seconds).

Prints one JSON line per engine and a side-by-side table. Usage:
    python benchmarks/bench_digits.py [--optuna-seconds S] [--skip-classic CLASSIC_SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(study_file: Path, storage: str, art: str, **over):
    from hpsearch.study.run import run_study
    from hpsearch.study.validate import load_study_config, parse_study_config

    # the config is frozen once validated: overrides (None included) go through validation again
    cfg = load_study_config(study_file)
    data = cfg.model_dump()
    data["search"].update(over)
    cfg = parse_study_config(data, where=str(study_file), base_dir=cfg.base_dir)
    t0 = time.perf_counter()
    res = run_study(cfg, storage=storage, artifacts=art)
    wall = time.perf_counter() - t0
    return res, wall


def _overhead(storage: str, name: str) -> dict:
    import optuna

    trials = [t for t in optuna.load_study(study_name=name, storage=storage).get_trials() if t.state.is_finished()]
    total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    over = sum(t.user_attrs.get("overhead_time", 0.0) for t in trials)
    return {"trial_seconds": round(total, 2), "overhead_seconds": round(over, 3),
            "overhead_pct": round(100 * over / total, 2) if total else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--optuna-seconds", type=float, help="Optuna budget (default: classic wall time / 5)")
    ap.add_argument("--skip-classic", type=float, metavar="SECONDS",
                    help="do not run the classic recipe; take its wall time as given")
    a = ap.parse_args()
    import tensorflow as tf  # noqa: F401  (import cost paid before timing)

    tmp = tempfile.mkdtemp(prefix="bench-digits-")
    storage = f"sqlite:///{tmp}/bench.db"
    art = f"{tmp}/artifacts"
    rows = []
    if a.skip_classic is None:
        res, wall = _run(ROOT / "studies" / "digits-random.yaml", storage, art)
        row = {"engine": "classic random (sklearn, 10x3-fold, SGD)", "wall_s": round(wall, 1),
               "trials": res.n_complete, "best_cv_accuracy": round(res.best_value, 4),
               "test_accuracy": round(res.test_score, 4), "best_params": res.best_params}
        print(json.dumps(row), flush=True)
        rows.append(row)
        classic = wall
    else:
        classic = a.skip_classic
    budget = a.optuna_seconds or classic / 5
    res, wall = _run(ROOT / "studies" / "digits-optuna.yaml", storage, art, timeout=budget, n_trials=None)
    row = {"engine": f"optuna TPE+Hyperband (timeout {budget:.0f} s)", "wall_s": round(wall, 1),
           "trials": res.n_complete, "pruned": res.n_pruned, "best_val_accuracy": round(res.best_value, 4),
           "test_accuracy": round(res.test_score, 4), "best_params": res.best_params,
           **_overhead(storage, "digits-optuna")}
    print(json.dumps(row), flush=True)
    rows.append(row)
    print()
    print(f"{'engine':48} {'wall s':>8} {'trials':>7} {'best valid':>11} {'test acc':>9}")
    for r in rows:
        best = r.get("best_cv_accuracy", r.get("best_val_accuracy"))
        print(f"{r['engine']:48} {r['wall_s']:8.1f} {r['trials']:7d} {best:11.4f} {r['test_accuracy']:9.4f}")


if __name__ == "__main__":
    main()
