"""The classic recipe packed vs unpacked: ``search.engine: random``, 10 candidates x 3 folds, SGD,
n_hidden 0-3, n_neurons 1-99, learning_rate reciprocal(3e-4, 3e-2), 100 epochs, EarlyStopping(10),
batch 32, digits; ``train.pack: 1`` against ``auto`` (one pack per fold), each in its own child
process, one after the other.

Printed: wall time of each run (search, refit of the best and test score), and every candidate with
its mean CV score and std side by side. The candidates are identical (scikit-learn's
``ParameterSampler`` with the same seed) and so are the initial weights (``search.seed``); the batch
order is not (a pack shuffles once for all its members), so the scores are close, not equal.

Measured (``--epochs 30``, the shared 2-core machine under a load of ~8, so the times are noisy):
unpacked 1731 s (fold fits 1628 s), packed 619 s (fold fits 460 s), 2.8x; the same 10 candidates,
mean CV scores within 0.005 of each other, the same best candidate (0.9461 vs 0.9452, test 0.9611 both).

Usage:
    python benchmarks/bench_packing_sklearn.py                 # the real run (minutes)
    python benchmarks/bench_packing_sklearn.py --epochs 10     # a quick one
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _study(pack: str, epochs: int, seed: int, n: int, cv: int) -> dict:
    from bench_packing import anchor_study

    return {**anchor_study(f"bench-packcv-{pack}", pack, epochs),
            "search": {"engine": "random", "n_trials": n, "cv": cv, "metric": "accuracy", "seed": seed}}


def one(pack: str, epochs: int, seed: int, n: int, cv: int) -> dict:
    """One run in this process: its figures as a dict."""
    from bench_packing import run_timed

    res, trials, wall, notes = run_timed(_study(pack, epochs, seed, n, cv), "bench-packcv-")
    trials = sorted(trials, key=lambda t: t.user_attrs["candidate"])
    cands = [{"params": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.params.items()},
              "mean": t.value, "std": t.user_attrs.get("std_score"), "epochs": t.user_attrs.get("epochs_per_fold")}
             for t in trials]
    fit_s = sum(t.user_attrs.get("fit_time", 0) for t in trials)
    return {"pack": pack, "wall_s": round(wall, 1), "fit_s": round(fit_s, 1),
            "best": round(res.best_value, 4) if res.best_value is not None else None,
            "test": round(res.test_score, 4) if res.test_score is not None else None,
            "candidates": cands, "notes": notes}


def _child(pack: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", pack, "--epochs", str(a.epochs), "--seed", str(a.seed),
           "--candidates", str(a.candidates), "--cv", str(a.cv)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"pack {pack} failed: {(out.stderr or out.stdout).strip()[-2000:]}")
    row = json.loads(lines[-1])
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--cv", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.epochs, a.seed, a.candidates, a.cv)), flush=True)
        return
    alone, packed = _child("1", a), _child("auto", a)
    print(f"\nclassic recipe: random, {a.candidates} candidates x {a.cv} folds, {a.epochs} epochs, seed {a.seed}")
    for r in (alone, packed):
        print(f"  pack {r['pack']:>4}: wall {r['wall_s']:7.1f} s  (fold fits {r['fit_s']:7.1f} s)  best cv {r['best']}"
              f"  test {r['test']}  {' '.join(r['notes'])}")
    print(f"  speed-up: {alone['wall_s'] / packed['wall_s']:.2f}x wall")
    print(f"\n  {'candidate (params)':<60} {'mean unpacked':>14} {'mean packed':>12} {'std u/p':>14}  epochs u | p")
    for u, p in zip(alone["candidates"], packed["candidates"]):
        same = "" if u["params"] == p["params"] else "  (DIFFERENT CANDIDATE)"
        print(f"  {json.dumps(u['params'], sort_keys=True):<60} {u['mean'] or float('nan'):>14.4f}"
              f" {p['mean'] or float('nan'):>12.4f} {u['std'] or 0:>7.3f}/{p['std'] or 0:<6.3f}"
              f"  {u['epochs']} | {p['epochs']}{same}")


if __name__ == "__main__":
    main()
