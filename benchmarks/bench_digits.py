"""Digits, like with like: the classic random recipe (scikit-learn engine, 10 candidates x 3 folds)
vs the Optuna engine (TPE + Hyperband, holdout validation) at a tenth of the classic recipe's time.

Both search the same space (the anchors': SGD, n_hidden 0-3, n_neurons 1-99, learning_rate
reciprocal(3e-4, 3e-2)) with the same training (100 epochs, batch 32, EarlyStopping(10), standard
scaling, ``train.pack: auto``), on the same data split (``split.seed: 42``: the same test rows), with
the same ``search.seed`` per seed, one after the other in this process. The number compared is
the test accuracy of each search's chosen model on those same test rows; the selection scores are
printed apart, since they are not the same quantity (the classic recipe's is a 3-fold CV mean on
the training rows, the Optuna engine's the holdout validation accuracy). The Optuna engine gets
``search.timeout`` = the classic recipe's wall time of the same seed / 10 (or --optuna-seconds).

Prints one JSON line per run and a side-by-side table per seed. Usage:
    python benchmarks/bench_digits.py --seeds 0,1,2            # the real run (the classic recipe: minutes)
    python benchmarks/bench_digits.py --seeds 0 --epochs 5     # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _study(engine: str, epochs: int, seed: int, timeout: float | None) -> dict:
    from bench_packing import anchor_study

    search = ({"engine": "random", "n_trials": 10, "cv": 3} if engine == "classic" else
              {"engine": "optuna", "sampler": "tpe", "pruner": "hyperband", "n_trials": None, "timeout": timeout})
    return {**anchor_study(f"bench-digits-{engine}-{seed}", "auto", epochs),
            "search": {**search, "metric": "accuracy", "seed": seed}}


def one(engine: str, epochs: int, seed: int, timeout: float | None) -> dict:
    from bench_packing import run_timed

    res, _, wall, _ = run_timed(_study(engine, epochs, seed, timeout), "bench-digits-")
    return {"engine": engine, "seed": seed, "wall_s": round(wall, 1), "timeout_s": timeout,
            "complete": res.n_complete, "pruned": res.n_pruned,
            "selection": "3-fold CV" if engine == "classic" else "holdout valid",
            "best_selection_score": round(res.best_value, 4) if res.best_value is not None else None,
            "test_accuracy": round(res.test_score, 4) if res.test_score is not None else None,
            "best_params": res.best_params}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--optuna-seconds", type=float, help="the Optuna engine's timeout (default: classic wall / 10)")
    a = ap.parse_args()
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        classic = one("classic", a.epochs, seed, None)
        print(json.dumps(classic), flush=True)
        optuna_row = one("optuna", a.epochs, seed, a.optuna_seconds or round(classic["wall_s"] / 10, 1))
        print(json.dumps(optuna_row), flush=True)
        rows += [classic, optuna_row]
    print(f"\n{'seed':>4} {'engine':>8} {'wall s':>8} {'timeout':>8} {'complete':>9} {'pruned':>7}"
          f" {'selection':>14} {'score':>7} {'test acc':>9}")
    for r in rows:
        print(f"{r['seed']:>4} {r['engine']:>8} {r['wall_s']:>8.1f} {r['timeout_s'] or '':>8} {r['complete']:>9}"
              f" {r['pruned']:>7} {r['selection']:>14} {r['best_selection_score']!s:>7} {r['test_accuracy']!s:>9}")


if __name__ == "__main__":
    main()
