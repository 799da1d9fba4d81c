"""Packed trials on digits, side by side in one run: ``train.pack`` 1 vs auto vs fixed K.

The anchors' search space (SGD, n_hidden 0-3, n_neurons 1-99, learning_rate reciprocal(3e-4, 3e-2),
100 epochs, EarlyStopping(10), batch 32), the Optuna engine (TPE, no pruner), one process. Each
configuration runs in its own child process (its own peak memory, a clean TensorFlow):

1. throughput: ``--trials`` trials per configuration (or until ``--cap`` seconds): trials per
   minute, fit time, peak RSS, the packs trained, how many of them reused an earlier pack's
   compiled model, their trace and compile seconds (``compile_s``: each pack's first epoch less
   its next one) and that time's share of the run's wall time (``compile_share``);
2. time to quality: ``--quality-seconds`` of search (the issue: 37 s, a tenth of the classic
   recipe's time) per seed and ``--quality-packs`` value: when a trial first reached validation
   0.969 (seconds from the search's first trial), the best validation of the trials done by 37 s,
   the final best validation and its test accuracy. With refilling, the trials started before
   the timeout train out after it (as unpacked, the trial running then finishes).

3. with ``--quality-packs ...,classic``: the classic recipe the 37 s is a tenth of, on the same rows
   (random, 10 candidates x 3 folds, refit of the best on every training row; packed, which chooses
   what unpacked chooses ~10x sooner: benchmarks/bench_packing_sklearn.py), no time limit, its
   test accuracy side by side.

Measured (2026-12-07, main at f1e14d7, quiet 2-core machine, one run, ``--seeds 0,1,2,3,4,5
--ensemble 5 --quality-packs auto,by-hand,classic``), test accuracy of the chosen model:

    seed   hpsearch (wall s, trials)   best 5 averaged   by hand (wall s, trials)   classic (wall s)
    0      0.9472  (37.5, 192)         0.9778            0.9583  (37.5, 13)         0.9639  (26.9)
    1      0.9583  (37.9, 146)         0.9778            0.9528  (37.2,  4)         0.9500  (26.1)
    2      0.9417  (38.3, 175)         0.9750            0.9417  (38.3,  4)         0.9361  (24.4)
    3      0.9528  (38.1, 148)         0.9778            0.9583  (41.5, 10)         0.9444  (26.6)
    4      0.9417  (36.7, 150)         0.9667            0.9611  (38.5, 10)         0.9639  (28.9)
    5      0.9639  (36.1, 155)         0.9722            0.9361  (37.2,  8)         0.9528  (25.5)
    median 0.9528                      0.9778            0.9583                     0.9528  (the 4th of six)

The same command without ``classic`` earlier that day: hpsearch 0.9556 / 0.9583 / 0.9528 / 0.9611 /
0.9611 / 0.9639 (wall 35.4-38.8 s), best 5 averaged 0.9639-0.9806, by hand 0.9583 / 0.9528 / 0.9417 /
0.9583 / 0.9722 / 0.9361. Over both runs (12 seeds each) the chosen model's median test is 0.957
(hpsearch) and 0.956 (by hand); the classic recipe's is 0.951 and it reaches 0.96 in 2 seeds of 6;
the best 5 averaged reach 0.96 in all 12 (0.9639-0.9806).

Usage (the real run, on a quiet machine):
    python benchmarks/bench_packing.py --trials 64 --packs 1,auto,8,16,32 --seeds 0,1,2
A quick check that it works:
    python benchmarks/bench_packing.py --trials 8 --epochs 5 --packs 1,4 --seeds 0 --quality-seconds 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def anchor_study(name: str, pack: str, epochs: int) -> dict:
    """The anchors' space on digits (SGD, n_hidden 0-3, n_neurons 1-99, reciprocal learning rate,
    EarlyStopping(10), batch 32) at ``train.pack: pack``; the caller adds ``search``. Shared with
    bench_packing_sklearn.py, so both compare on the same space."""
    return {
        "name": name,
        "data": {"source": "sklearn:digits", "split": {"valid": 0.2, "test": 0.2, "seed": 42}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "sgd"}},
        "space": {"n_hidden": {"int": [0, 3]}, "n_neurons": {"int": [1, 99]},
                  "learning_rate": {"float": [3e-4, 3e-2], "log": True}},
        "train": {"epochs": epochs, "batch_size": 32, "early_stopping": {"patience": 10},
                  "pack": pack if pack == "auto" else int(pack)},
    }


def _study(pack: str, epochs: int, seed: int, n_trials: int | None, timeout: float | None,
           pruner: str = "none", ensemble: int | None = None) -> dict:
    return {**anchor_study(f"bench-pack-{pack}-{seed}", pack, epochs),
            "search": {"engine": "optuna", "sampler": "tpe", "pruner": pruner, "n_trials": n_trials,
                       "timeout": timeout, "metric": "accuracy", "seed": seed, "ensemble": ensemble}}


def run_timed(study: dict, prefix: str, ensemble: int | None = None) -> tuple[Any, list[Any], float, list[str]]:
    """Run one study dict in this process on a fresh SQLite file: (result, its trials, wall seconds,
    the notes hpsearch gave). Shared with bench_packing_sklearn.py. ``ensemble``: K, the result's
    ``ensemble_test`` is the test score of the top K's stored models averaged
    (:func:`hpsearch.results.ensemble.ensemble_scores`, what ``hpsearch best --ensemble K`` prints)."""
    import optuna
    import tensorflow as tf  # noqa: F401  (import cost paid before timing)

    from hpsearch.study.run import run_study
    from hpsearch.study.validate import parse_study_config
    from hpsearch.trials.context import NullObserver

    class Notes(NullObserver):
        def __init__(self) -> None:
            self.notes: list[str] = []

        def message(self, text: str) -> None:
            self.notes.append(text)

    tmp = tempfile.mkdtemp(prefix=prefix)
    url = f"sqlite:///{tmp}/b.db"
    cfg = parse_study_config(study)
    obs = Notes()
    t0 = time.perf_counter()
    res = run_study(cfg, storage=url, artifacts=f"{tmp}/art", observer=obs)
    wall = time.perf_counter() - t0
    loaded = optuna.load_study(study_name=cfg.name, storage=url)
    if ensemble:
        from optuna.artifacts import FileSystemArtifactStore

        from hpsearch.results.ensemble import ensemble_scores

        res.ensemble_test = ensemble_scores(loaded, FileSystemArtifactStore(f"{tmp}/art"), ensemble)["test"]
    return res, loaded.get_trials(), wall, obs.notes


def _watch_packs() -> tuple[list[float], list[bool], list[float]]:
    """Each pack's trace and compile seconds as the runner times them (its first epoch, compile
    included, less its next epoch: :class:`hpsearch.packing.train.Pace`), appended as packs end,
    whether each trained in a compiled model an earlier pack trained in (reused), and each pack's
    tail: seconds from the epoch where the shrink rule first holds (:mod:`hpsearch.packing.shrink`,
    judged as if shrinking were on, so a run with it off has the same tail to compare) to its end."""
    from hpsearch.packing import pack, shrink

    compiles: list[float] = []
    reused: list[bool] = []
    tails: list[float] = []
    tail_from: list[float] = []
    real, real_due = pack.train_pack, pack.Pack.due

    def timed(*args: Any, **kwargs: Any) -> Any:
        reused.append(hasattr(args[0], "bench_trained"))
        args[0].bench_trained = True
        tail_from.clear()
        out = real(*args, **kwargs)
        if tail_from:
            tails.append(time.monotonic() - tail_from[0])
        pace = kwargs.get("pace")
        if pace is not None and pace.first_s is not None and pace.epoch_s is not None:
            compiles.append(max(0.0, pace.first_s - pace.epoch_s))
        return out

    def due(self: Any, pm: Any, res: Any) -> bool:
        on, shrink.SHRINK = shrink.SHRINK, True
        try:
            would = real_due(self, pm, res)
        finally:
            shrink.SHRINK = on
        if would and not tail_from:
            tail_from.append(time.monotonic())
        return would and on

    pack.train_pack, pack.Pack.due = timed, due
    return compiles, reused, tails


def by_hand(epochs: int, seed: int, timeout: float) -> dict:
    """The baseline of time to quality: what a user writes with Optuna alone (TPE + Hyperband, a
    Keras callback that reports each epoch's validation accuracy and stops a pruned trial, one
    plain Keras model at a time, ``study.optimize(timeout=...)``) on the same rows as hpsearch (the
    anchors' split and scaling, read through ``prepare_data``), the same space and training (SGD,
    batch 32, EarlyStopping(10) keeping the best weights, ``epochs``). The chosen model is the best
    trial's, kept in memory; its test accuracy is on the same test rows."""
    import keras
    import numpy as np
    import optuna

    from hpsearch.data.prepare import prepare_data
    from hpsearch.study.validate import parse_study_config

    d = prepare_data(parse_study_config(_study("auto", epochs, seed, None, timeout)), 1)
    n_classes = int(d.y_train.max()) + 1
    models: dict[int, Any] = {}

    class Report(keras.callbacks.Callback):
        def __init__(self, trial: optuna.Trial) -> None:
            super().__init__()
            self.trial, self.pruned = trial, False

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.trial.report(float((logs or {})["val_accuracy"]), epoch)
            if self.trial.should_prune():
                self.pruned = self.model.stop_training = True

    def objective(trial: optuna.Trial) -> float:
        n_hidden, n_neurons = trial.suggest_int("n_hidden", 0, 3), trial.suggest_int("n_neurons", 1, 99)
        lr = trial.suggest_float("learning_rate", 3e-4, 3e-2, log=True)
        keras.utils.set_random_seed(seed * 10_000 + trial.number)
        model = keras.Sequential([keras.Input((d.X_train.shape[1],)),
                                  *[keras.layers.Dense(n_neurons, activation="relu") for _ in range(n_hidden)],
                                  keras.layers.Dense(n_classes, activation="softmax")])
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        report = Report(trial)
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=10,
                                             restore_best_weights=True)
        hist = model.fit(d.X_train, d.y_train, validation_data=(d.X_valid, d.y_valid), epochs=epochs,
                         batch_size=32, verbose=0, callbacks=[report, stop])
        if report.pruned:
            raise optuna.TrialPruned()
        models[trial.number] = model
        return max(hist.history["val_accuracy"])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs))
    t0 = time.perf_counter()
    study.optimize(objective, timeout=timeout)
    wall = time.perf_counter() - t0
    trials = [t for t in study.trials if t.state.is_finished()]
    best = study.best_trial
    test = float(np.mean(np.argmax(models[best.number].predict(d.X_test, verbose=0), axis=1) == d.y_test))
    return {"pack": "by-hand", "seed": seed, "wall_s": round(wall, 1), "trials": len(trials), **_quality(trials),
            "complete": sum(t.state.name == "COMPLETE" for t in trials), "best_val": round(best.value, 4),
            "test": round(test, 4)}


def one(pack: str, epochs: int, seed: int, n_trials: int | None, timeout: float | None,
        pruner: str = "none", ensemble: int | None = None) -> dict:
    """One configuration in this process: its figures as a dict (``compile_share``: the packs'
    trace and compile seconds over the run's wall time; ``reused``: packs that trained in an
    earlier pack's compiled model)."""
    compiles, reused, tails = _watch_packs()
    res, trials, wall, notes = run_timed(_study(pack, epochs, seed, n_trials, timeout, pruner, ensemble), "bench-pack-",
                                         ensemble)
    trials = [t for t in trials if t.state.is_finished()]
    sizes = sorted({t.user_attrs.get("pack_size", 1) for t in trials})
    return {"pack": pack, "pruner": pruner, "seed": seed, "wall_s": round(wall, 1), "trials": len(trials),
            "complete": sum(t.state.name == "COMPLETE" for t in trials), **_quality(trials),
            "trials_per_min": round(60 * len(trials) / wall, 1), "pack_sizes": sizes, "packs": len(reused),
            "reused": sum(reused),
            "compile_s": round(sum(compiles), 1), "compile_share": round(sum(compiles) / wall, 2),
            "tail_s": round(sum(tails), 1), "shrinks": sum("pack shrink:" in n for n in notes),
            "epochs_mean": round(sum(t.user_attrs.get("epochs_trained", 0) for t in trials) / max(1, len(trials)), 1),
            "best_val": round(res.best_value, 4) if res.best_value is not None else None,
            "test": round(res.test_score, 4) if res.test_score is not None else None,
            **({f"ensemble{ensemble}_test": round(res.ensemble_test, 4)} if ensemble else {}),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "notes": notes}


QUALITY_AT = 37.0  # seconds: the time to quality (a tenth of the classic recipe's ~370 s)


def _quality(trials: list[Any], target: float = 0.969) -> dict:
    """When the search first had a trial at validation >= ``target`` (seconds from the first
    trial's start; None: never), and the best validation of the trials done by ``QUALITY_AT`` s."""
    if not trials:
        return {}
    t0 = min(t.datetime_start for t in trials)
    done = [((t.datetime_complete - t0).total_seconds(), t.value) for t in trials
            if t.value is not None and t.datetime_complete is not None]
    hits = [s for s, v in done if v >= target]
    by = [v for s, v in done if s <= QUALITY_AT]
    return {"t_target_s": round(min(hits), 1) if hits else None,
            f"best_val_by_{QUALITY_AT:g}s": round(max(by), 4) if by else None}


def _child(pack: str, epochs: int, seed: int, n_trials: int | None, timeout: float | None,
           pruner: str = "none", ensemble: int = 0) -> dict:
    if pack == "classic":
        return _classic(epochs, seed)
    cmd = [sys.executable, __file__, "--one", pack, "--epochs", str(epochs), "--seeds", str(seed), "--pruner", pruner]
    cmd += ["--ensemble", str(ensemble)] if ensemble and pack != "by-hand" else []
    cmd += ["--trials", str(n_trials or 0), "--cap", str(timeout or 0), "--shrink", SHRINK[0]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        return {"pack": pack, "seed": seed, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    row = json.loads(lines[-1])
    print(json.dumps(row), flush=True)
    return row


SHRINK = ["on"]  # --shrink, passed on to the children


def _classic(epochs: int, seed: int) -> dict:
    """The classic recipe the 37 s target is a tenth of, on the same rows (its test accuracy on the
    same test rows): ``search.engine: random``, 10 candidates x 3 folds, refit of the best on every
    training row (scikit-learn's ``refit=True``), packed (benchmarks/bench_packing_sklearn.py: the
    same chosen candidate and test score as unpacked, ~10x sooner). No time limit."""
    cmd = [sys.executable, str(Path(__file__).with_name("bench_packing_sklearn.py")), "--one", "auto",
           "--epochs", str(epochs), "--seed", str(seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        return {"pack": "classic", "seed": seed, "error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    r = json.loads(lines[-1])
    row = {"pack": "classic", "seed": seed, "wall_s": r["wall_s"], "trials": len(r["candidates"]),
           "complete": len(r["candidates"]), "best_val": r["best"], "test": r["test"]}
    print(json.dumps(row), flush=True)
    return row


def _table(title: str, rows: list[dict], cols: list[str]) -> None:
    print(f"\n{title}")
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r.get(c, '')!s:>14}" for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--packs", default="1,auto,8,16,32", help="train.pack values to compare")
    ap.add_argument("--trials", type=int, default=64, help="trials per throughput run")
    ap.add_argument("--cap", type=float, default=0, help="throughput: also stop after this many seconds")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2", help="time-to-quality seeds")
    ap.add_argument("--quality-seconds", type=float, default=37.0)
    ap.add_argument("--quality-packs", default="auto,by-hand",
                    help="train.pack values of the time-to-quality runs; by-hand: Optuna alone, one model at a time;"
                         " classic: the classic recipe (random, 10 x 3 folds, refit; no time limit)")
    ap.add_argument("--quality-pruner", default="hyperband", help="search.pruner of the time-to-quality runs")
    ap.add_argument("--pruner", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--ensemble", type=int, default=0,
                    help="time to quality: also score hpsearch's top K stored models averaged (search.ensemble: K)")
    ap.add_argument("--shrink", default="on", choices=("on", "off"),
                    help="shrink a pack's tail (hpsearch.packing.shrink.SHRINK): off to compare")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    SHRINK[0] = a.shrink
    if a.shrink == "off":
        from hpsearch.packing import shrink

        shrink.SHRINK = False
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.one == "by-hand":
        print(json.dumps(by_hand(a.epochs, seeds[0], a.cap)), flush=True)
        return
    if a.one:
        print(json.dumps(one(a.one, a.epochs, seeds[0], a.trials or None, a.cap or None, a.pruner, a.ensemble or None)),
              flush=True)
        return
    thr = [_child(p, a.epochs, seeds[0], a.trials, a.cap or None) for p in a.packs.split(",") if p]
    base = next((r["trials_per_min"] for r in thr if r.get("pack") == "1" and "trials_per_min" in r), None)
    for r in thr:
        if base and "trials_per_min" in r:
            r["speedup"] = round(r["trials_per_min"] / base, 1)
    _table(f"throughput: {a.trials} trials, {a.epochs} epochs", thr,
           ["pack", "pack_sizes", "packs", "reused", "compile_s", "compile_share", "shrinks", "tail_s", "wall_s",
            "trials", "trials_per_min", "speedup", "peak_rss_mb", "best_val", "test"])
    if a.quality_seconds > 0:
        q = [_child(p, a.epochs, s, None, a.quality_seconds, a.quality_pruner, a.ensemble)
             for s in seeds for p in a.quality_packs.split(",")]
        for r in q:  # search.timeout starts no trial after it; the trials running then train out
            if r.get("pack") != "classic":  # the recipe's own runs have no time limit: no target
                r["met"] = (r.get("wall_s") or math.inf) <= 40 and (r.get("test") or 0) >= 0.96  # issue 25
        _table(f"time to quality: search.timeout {a.quality_seconds:g} s per run (target, issue 25: wall <= 40 s and "
               f"the chosen model >= 0.96 on test)", q,
               ["pack", "pruner", "seed", "pack_sizes", "wall_s", "trials", "complete", "epochs_mean", "t_target_s",
                f"best_val_by_{QUALITY_AT:g}s", "best_val", "test",
                *([f"ensemble{a.ensemble}_test"] if a.ensemble else []), "met"])
        for p in a.quality_packs.split(","):
            for col in ("test", f"ensemble{a.ensemble}_test"):
                tests = sorted(r[col] for r in q if r.get("pack") == p and r.get(col) is not None)
                if tests:
                    print(f"{p} {col}: median {tests[len(tests) // 2]:.4f}, min {tests[0]:.4f} over {len(tests)} seeds")


if __name__ == "__main__":
    main()
