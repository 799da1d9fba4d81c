"""The classic recipe packed vs unpacked: ``search.engine: random``, 10 candidates x 3 folds, SGD,
n_hidden 0-3, n_neurons 1-99, learning_rate reciprocal(3e-4, 3e-2), 100 epochs, EarlyStopping(10),
batch 32, digits; ``train.pack: 1`` (unpacked) against ``perfold`` (``auto`` with one pack per fold,
the layout before candidates x folds: ``hpsearch.packing.cv.FOLDS_TOGETHER`` off) and ``auto``
(candidates x folds in one pack of 30), each in its own child process, one after the other.

Printed: wall time of each run (search, refit of the best and test score), the chosen candidate, and
every candidate with its mean CV score and std side by side. The candidates are identical
(scikit-learn's ``ParameterSampler`` with the same seed) and so are the initial weights
(``search.seed``); the batch order is not (a pack draws its members' orders from one generator;
unpacked, each fit shuffles on its own), so the scores are close, not equal; ``--no-shuffle`` matches
the batch order (rows in order in every fit) and the scores are equal to float tolerance.

Measured (2026-12-06, the shared 2-core CPU machine, load average 2-3 from other work, one run each,
in this order; ``--epochs 100``, the recipe as the issue states it):

    pack 1        wall 613.7 s  (fold fits 589.2 s)  chosen candidate 9  best cv 0.9480  test 0.9639
    pack perfold  wall 106.3 s  (fold fits  58.5 s)  chosen candidate 9  best cv 0.9489  test 0.9639
    pack auto     wall  59.3 s  (fold fits  37.5 s)  chosen candidate 9  best cv 0.9452  test 0.9639

auto: 10.35x faster than unpacked in wall time (15.7x in fold fits), the same chosen candidate and
test score; 1.79x faster than one pack per fold (1.56x in fold fits). Mean CV scores of the 10
candidates within 0.005 of unpacked (batch order). The rest of auto's wall time is mostly the refit
of the best candidate (one model, unpacked, as scikit-learn refits). ``--epochs 10``: 173.7 / 22.0 /
16.5 s (7.9x and 10.5x), another chosen candidate packed (0.9053) than unpacked (0.8997): the top
three candidates lie within 0.011 at 10 epochs and batch order decides between them.
``--epochs 10 --no-shuffle``: 105.4 / 14.4 / 13.5 s, every candidate's mean CV score and std equal
in the three runs (4 decimals), the same chosen candidate (6) and test score (0.9389).
Earlier, one pack per fold only (``--epochs 30``, load ~8): unpacked 1731 s, packed 619 s, 2.8x.

Usage:
    python benchmarks/bench_packing_sklearn.py                 # the real run (minutes)
    python benchmarks/bench_packing_sklearn.py --epochs 10     # a quick one
    python benchmarks/bench_packing_sklearn.py --epochs 10 --no-shuffle --packs 1,auto  # scores equal
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


def one(pack: str, epochs: int, seed: int, n: int, cv: int, shuffle: bool = True) -> dict:
    """One run in this process: its figures as a dict. ``pack``: 1 (unpacked), auto (candidates x
    folds in one pack) or perfold (auto with one pack per fold, the layout before it)."""
    from bench_packing import run_timed

    import hpsearch.engines.sklearn as sklearn_engine
    import hpsearch.packing.cv as packed_cv

    packed_cv.FOLDS_TOGETHER = pack != "perfold"
    if not shuffle:  # every fit (and pack) takes its rows in order: the batch order matched, scores equal
        make = sklearn_engine.keras_estimator
        sklearn_engine.keras_estimator = lambda ctx: make(ctx).set_params(shuffle=False)
    res, trials, wall, notes = run_timed(_study("auto" if pack == "perfold" else pack, epochs, seed, n, cv),
                                         "bench-packcv-")
    trials = sorted(trials, key=lambda t: t.user_attrs["candidate"])
    chosen = next((t.user_attrs["candidate"] for t in trials if t.number == res.best_trial), None)
    cands = [{"params": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in t.params.items()},
              "mean": t.value, "std": t.user_attrs.get("std_score"), "epochs": t.user_attrs.get("epochs_per_fold")}
             for t in trials]
    fit_s = sum(t.user_attrs.get("fit_time", 0) for t in trials)
    return {"pack": pack, "wall_s": round(wall, 1), "fit_s": round(fit_s, 1), "chosen": chosen,
            "best": round(res.best_value, 4) if res.best_value is not None else None,
            "test": round(res.test_score, 4) if res.test_score is not None else None,
            "candidates": cands, "notes": notes}


def _child(pack: str, a: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", pack, "--epochs", str(a.epochs), "--seed", str(a.seed),
           "--candidates", str(a.candidates), "--cv", str(a.cv), *(["--no-shuffle"] if a.no_shuffle else [])]
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
    ap.add_argument("--packs", default="1,perfold,auto",
                    help="runs, one after the other, the first the baseline: 1 (unpacked), perfold, auto")
    ap.add_argument("--no-shuffle", action="store_true",
                    help="batches in row order in every run: the batch order matched, packed scores equal unpacked")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.epochs, a.seed, a.candidates, a.cv, not a.no_shuffle)), flush=True)
        return
    rows = [_child(p, a) for p in a.packs.split(",")]
    print(f"\nclassic recipe: random, {a.candidates} candidates x {a.cv} folds, {a.epochs} epochs, seed {a.seed},"
          f" shuffle {'off' if a.no_shuffle else 'on'}")
    for r in rows:
        print(f"  pack {r['pack']:>7}: wall {r['wall_s']:7.1f} s  (fold fits {r['fit_s']:7.1f} s)  best cv {r['best']}"
              f"  chosen candidate {r['chosen']}  test {r['test']}")
        print("           " + " ".join(n for n in r["notes"] if "train.pack" in n))
    base = rows[0]
    for r in rows[1:]:
        print(f"  speed-up of {r['pack']} over {base['pack']}: {base['wall_s'] / r['wall_s']:.2f}x wall,"
              f" {base['fit_s'] / max(r['fit_s'], 1e-9):.2f}x fold fits;"
              f" {'the same' if r['chosen'] == base['chosen'] else 'ANOTHER'} chosen candidate")
    print(f"\n  {'candidate (params)':<60} " + " ".join(f"{'mean ' + r['pack']:>13}" for r in rows)
          + "  std " + "/".join(r["pack"] for r in rows) + "  epochs")
    for cands in zip(*(r["candidates"] for r in rows)):
        same = "" if all(c["params"] == cands[0]["params"] for c in cands) else "  (DIFFERENT CANDIDATE)"
        print(f"  {json.dumps(cands[0]['params'], sort_keys=True):<60} "
              + " ".join(f"{c['mean'] or float('nan'):>13.4f}" for c in cands)
              + "  " + "/".join(f"{c['std'] or 0:.3f}" for c in cands)
              + "  " + " | ".join(str(c["epochs"]) for c in cands) + same)


if __name__ == "__main__":
    main()
