"""Several objectives: pruning off vs on, side by side in one run, on ``studies/digits-pareto.yaml``
(accuracy against n_params, max_params 20000; issue 25 item 5's target: the same hypervolume as the
unpruned search with at most 60 % of its epochs).

Both arms run the study as it is (TPE, ``train.pack: auto``: packed), one with ``search.pruner:
none``, one with the study's pruner (Hyperband: hpsearch's Pareto successive halving at its rungs,
:mod:`hpsearch.trials.rungs`), per seed, each in its own child process (a clean TensorFlow).
Printed per arm and seed: the hypervolume of the feasible front (2-D, objectives scaled to
accuracy in [0, 1] and n_params / max_params, fixed reference point accuracy 0 and n_params =
max_params: 1.0 is the unreachable corner), the total epochs trained (summed over trials), the
trials complete / pruned, the front's size and the wall time; then the pruned arm's ratios.

``--pack 1`` runs both arms one trial at a time (the rule then decides asynchronously, each trial
against those that reached its rung before it).

Usage (the issue's size):
    python benchmarks/bench_pareto.py --seeds 0,1,2
A smaller run (fewer trials / epochs; say so when quoting it):
    python benchmarks/bench_pareto.py --seeds 0,1 --n-trials 24 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STUDY = ROOT / "studies" / "digits-pareto.yaml"


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """The 2-D hypervolume of ``points`` (both objectives minimised) bounded by ``ref``: the area
    that the points dominate inside the reference box (points outside it count for nothing)."""
    inside = sorted((a, b) for a, b in points if a < ref[0] and b < ref[1])
    front: list[tuple[float, float]] = []
    for a, b in inside:  # by the first objective: a point is on the front when its second is lower
        if not front or b < front[-1][1]:
            front.append((a, b))
    area = 0.0
    for i, (a, b) in enumerate(front):
        right = front[i + 1][0] if i + 1 < len(front) else ref[0]
        area += (right - a) * (ref[1] - b)
    return area


def study_dict(seed: int, pruner: str | None, n_trials: int | None, epochs: int | None,
               pack: str | None = None) -> dict[str, Any]:
    import yaml

    study = yaml.safe_load(STUDY.read_text())
    study["name"] = f"bench-pareto-{pruner or 'default'}-{seed}"
    study["search"]["seed"] = seed
    if pruner is not None:
        study["search"]["pruner"] = pruner
    if n_trials is not None:
        study["search"]["n_trials"] = n_trials
    if epochs is not None:
        study["train"]["epochs"] = epochs
    if pack is not None:
        study["train"]["pack"] = pack if pack == "auto" else int(pack)
    return study


def one(seed: int, pruner: str | None, n_trials: int | None, epochs: int | None, pack: str | None) -> dict[str, Any]:
    """One arm and seed in this process: its figures."""
    import optuna

    from hpsearch.pareto import is_feasible
    from hpsearch.records import TRIAL
    from hpsearch.study.run import run_study
    from hpsearch.study.validate import parse_study_config

    cfg = parse_study_config(study_dict(seed, pruner, n_trials, epochs, pack))
    tmp = tempfile.mkdtemp(prefix="bench-pareto-")
    url = f"sqlite:///{tmp}/b.db"
    t0 = time.perf_counter()
    run_study(cfg, storage=url, artifacts=f"{tmp}/art")
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=cfg.name, storage=url)
    trials = study.get_trials(deepcopy=False)
    limit = float(cfg.search.constraints.max_params) if cfg.search.constraints and cfg.search.constraints.max_params \
        else max(t.values[1] for t in trials if t.values)
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values and is_feasible(t)]
    points = [(-t.values[0], t.values[1] / limit) for t in done]  # both minimised, n_params scaled
    front = study.best_trials
    return {"arm": "pruned" if (pruner or cfg.search.pruner) != "none" else "unpruned", "seed": seed,
            "pack": cfg.train.pack, "pack_sizes": sorted({int(t.user_attrs.get(TRIAL.PACK_SIZE, 1)) for t in trials}),
            "hypervolume": round(hypervolume(points, (0.0, 1.0)), 4),
            "epochs": sum(int(t.user_attrs.get(TRIAL.EPOCHS, 0)) for t in trials),
            "complete": sum(t.state.name == "COMPLETE" for t in trials),
            "pruned": sum(t.state.name == "PRUNED" and TRIAL.INFEASIBLE not in t.user_attrs for t in trials),
            "infeasible": sum(TRIAL.INFEASIBLE in t.user_attrs for t in trials),
            "front": len(front), "front_complete": all(t.state.name == "COMPLETE" for t in front),
            "best_accuracy": round(max((t.values[0] for t in done), default=0.0), 4),
            "wall_s": round(wall, 1)}


def child(seed: int, pruner: str | None, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", pruner or "default", "--seeds", str(seed)]
    if args.n_trials is not None:
        cmd += ["--n-trials", str(args.n_trials)]
    if args.epochs is not None:
        cmd += ["--epochs", str(args.epochs)]
    if args.pack is not None:
        cmd += ["--pack", args.pack]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"bench_pareto: a child run failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-trials", type=int, default=None, help="override search.n_trials (the study's: 30)")
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs (the study's: 30)")
    ap.add_argument("--pack", default=None, help="override train.pack (the study's: auto; 1: one trial at a time)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.one is not None:
        pruner = None if args.one == "default" else args.one
        print(json.dumps(one(seeds[0], pruner, args.n_trials, args.epochs, args.pack)))
        return
    rows = []
    for seed in seeds:
        for pruner in ("none", None):
            rows.append(child(seed, pruner, args))
            print(json.dumps(rows[-1]), flush=True)
    keys = ["arm", "seed", "pack", "pack_sizes", "hypervolume", "epochs", "complete", "pruned", "infeasible", "front",
            "front_complete", "best_accuracy", "wall_s"]
    print("\n" + " | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    print("\nseed | hypervolume pruned / unpruned | epochs pruned / unpruned")
    for seed in seeds:
        off, on = (next(r for r in rows if r["seed"] == seed and r["arm"] == a) for a in ("unpruned", "pruned"))
        hv = on["hypervolume"] / off["hypervolume"] if off["hypervolume"] else float("nan")
        print(f"{seed} | {hv:.3f} ({on['hypervolume']} / {off['hypervolume']}) | "
              f"{on['epochs'] / max(1, off['epochs']):.2f} ({on['epochs']} / {off['epochs']})")


if __name__ == "__main__":
    main()
