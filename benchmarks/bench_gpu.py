"""Packing on one device (GPU, or CPU with ``--tiny``): trials/min and samples/s of ``train.pack``
1 / 64 / 256 on the current Keras backend, side by side with a plain one-model-at-a-time Keras loop
on the same device, and the time to the recipe's quality, in one command (about 7 minutes on a GPU).

Every configuration runs the anchors' space on digits (SGD, n_hidden 0-3, n_neurons 1-99,
learning_rate reciprocal(3e-4, 3e-2), batch 32, EarlyStopping(10), 100 epochs; ``anchor_study`` of
``bench_packing.py``), random sampling seeded by ``--seed``, no pruner, in this one process:

* ``pack K``: a study of K trials at ``train.pack: K`` (pack 1: a few trials, one model at a time
  through hpsearch), each capped by ``search.timeout`` (packs end within seconds of it; members it
  stopped are counted in samples/s, not in trials/min);
* ``plain``: the same number of models as pack 1, built by the same builder from the same space,
  each trained alone by ``model.fit`` with ``EarlyStopping(10, restore_best_weights=True)``: no
  storage, no hpsearch (a split of the same sizes, not the same rows);
* ``quality``: ``train.pack: auto``, TPE, ``search.target: 0.969`` (validation; the classic
  recipe's test accuracy) under ``search.timeout``: when a trial first reached it (seconds from
  the first trial's start), the best validation and the chosen model's test accuracy.

``trials_per_min``: trials that ended on their own (complete, early-stopped or failed) per minute of
wall time (run_study: data, compile, training, storage, test score); ``samples_per_s``: training
rows x epochs trained by every trial, per second of that wall time. One JSON line per
configuration, then a table. Usage (see /work/shared/gpu/README.md for the GPU machine):

    KERAS_BACKEND=jax python3 benchmarks/bench_gpu.py           # the GPU run (< 8 minutes)
    python3 benchmarks/bench_gpu.py --tiny                      # CPU, seconds (the CI test runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: size -> epochs, pack sizes, trials of pack 1 and of the plain loop, seconds cap of each run, the
#: quality run's pack; "full" fits 8 minutes on one GPU with the start-up, "tiny" is never capped
SIZES: dict[str, dict[str, Any]] = {
    "full": {"epochs": 100, "packs": (1, 64, 256), "single": 4, "cap": {1: 45, 64: 75, 256: 100},
             "plain_cap": 45, "quality_pack": "auto", "quality_cap": 110},
    "tiny": {"epochs": 2, "packs": (1, 4), "single": 1, "cap": {1: 300, 4: 300}, "plain_cap": 300,
             "quality_pack": 4, "quality_cap": 300},
}
TARGET = 0.969  # the classic recipe's test accuracy (RandomizedSearchCV, 10 x 3 folds, 370 s on 2 CPU cores)


def _study(name: str, pack: int | str, epochs: int, seed: int, n_trials: int | None, timeout: float,
           sampler: str = "random", target: float | None = None) -> dict:
    from bench_packing import anchor_study

    return {**anchor_study(name, str(pack), epochs),
            "search": {"engine": "optuna", "sampler": sampler, "pruner": "none", "n_trials": n_trials,
                       "timeout": timeout, "target": target, "metric": "accuracy", "seed": seed}}


def _run(study: dict) -> tuple[Any, list[Any], float, dict]:
    """One study on a fresh SQLite file: (result, its trials, wall seconds, the data summary)."""
    import optuna

    from hpsearch.records import STUDY
    from hpsearch.study.run import run_study
    from hpsearch.study.validate import parse_study_config
    from hpsearch.trials.context import NullObserver

    tmp = tempfile.mkdtemp(prefix="bench-gpu-")
    url = f"sqlite:///{tmp}/b.db"
    cfg = parse_study_config(study)
    t0 = time.perf_counter()
    res = run_study(cfg, storage=url, artifacts=f"{tmp}/art", observer=NullObserver())
    wall = time.perf_counter() - t0
    st = optuna.load_study(study_name=cfg.name, storage=url)
    return res, st.get_trials(), wall, dict(st.user_attrs.get(STUDY.DATA_SUMMARY) or {})


def _rates(trials: list[Any], wall: float, train_rows: int) -> dict:
    from hpsearch.records import TRIAL

    done = [t for t in trials if t.state.is_finished()]
    cut = [t for t in done if TRIAL.DEADLINE_STOP in t.user_attrs]
    epochs = sum(int(t.user_attrs.get(TRIAL.EPOCHS, 0)) for t in done)
    return {"trials": len(done) - len(cut), "cut_by_timeout": len(cut), "epochs": epochs,
            "trials_per_min": round(60 * (len(done) - len(cut)) / wall, 1),
            "samples_per_s": round(epochs * train_rows / wall)}


def pack_row(k: int, size: dict, seed: int) -> dict:
    n = size["single"] if k == 1 else k
    res, trials, wall, summary = _run(_study(f"gpu-pack-{k}", k, size["epochs"], seed, n, size["cap"][k]))
    sizes = sorted({t.user_attrs.get("pack_size", 1) for t in trials if t.state.is_finished()})
    return {"run": f"pack {k}", "pack_sizes": sizes, "wall_s": round(wall, 1),
            **_rates(trials, wall, int(summary.get("train_rows", 0))),
            "test": round(res.test_score, 4) if res.test_score is not None else None}


def plain_row(size: dict, seed: int) -> dict:
    """The same builder and space, one model at a time by ``model.fit``: what a hand-written loop does."""
    import keras
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    from hpsearch.models.mlp import build_mlp

    X, y = load_digits(return_X_y=True)
    X_rest, _, y_rest, _ = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    Xt, Xv, yt, yv = train_test_split(X_rest, y_rest, test_size=0.25, random_state=42, stratify=y_rest)
    scaler = StandardScaler().fit(Xt)
    Xt, Xv = scaler.transform(Xt).astype("float32"), scaler.transform(Xv).astype("float32")
    meta = {"n_features_in_": X.shape[1], "target_type_": "multiclass", "n_classes_": 10, "n_outputs_": 1}
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    n = epochs = 0
    best = 0.0
    while n < size["single"] and time.perf_counter() - t0 < size["plain_cap"]:
        keras.utils.set_random_seed(seed + n)
        p = {"n_hidden": int(rng.integers(0, 4)), "n_neurons": int(rng.integers(1, 100)), "optimizer": "sgd",
             "learning_rate": float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-2))))}
        model = build_mlp(**p, meta=meta)
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=10, restore_best_weights=True)
        hist = model.fit(Xt, yt, batch_size=32, epochs=size["epochs"], validation_data=(Xv, yv), callbacks=[stop],
                         verbose=0)
        n, epochs = n + 1, epochs + len(hist.history["val_accuracy"])
        best = max(best, *hist.history["val_accuracy"])
    wall = time.perf_counter() - t0
    return {"run": "plain loop", "pack_sizes": [1], "wall_s": round(wall, 1), "trials": n, "cut_by_timeout": 0,
            "epochs": epochs, "trials_per_min": round(60 * n / wall, 1),
            "samples_per_s": round(epochs * len(Xt) / wall), "best_val": round(best, 4)}


def quality_row(size: dict, seed: int) -> dict:
    k = size["quality_pack"]
    res, trials, wall, _ = _run(_study("gpu-quality", k, size["epochs"], seed, None if k == "auto" else k,
                                       size["quality_cap"], sampler="tpe", target=TARGET))
    done = [t for t in trials if t.value is not None and t.datetime_complete is not None]
    t0 = min((t.datetime_start for t in trials if t.datetime_start is not None), default=None)
    hits = [(t.datetime_complete - t0).total_seconds() for t in done if t0 is not None and t.value >= TARGET]
    return {"run": f"quality (pack {k}, TPE)", "wall_s": round(wall, 1), "trials": len(done),
            "t_target_s": round(min(hits), 1) if hits else None,
            "best_val": round(res.best_value, 4) if res.best_value is not None else None,
            "test": round(res.test_score, 4) if res.test_score is not None else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a size that runs on CPU in seconds (CI)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    import keras

    size = SIZES["tiny" if a.tiny else "full"]
    info = {"backend": keras.backend.backend(), "size": "tiny" if a.tiny else "full", "epochs": size["epochs"],
            "seed": a.seed, "devices": _devices()}
    print(json.dumps(info), flush=True)
    rows = [plain_row(size, a.seed)]
    print(json.dumps(rows[-1]), flush=True)
    for k in size["packs"]:
        rows.append(pack_row(k, size, a.seed))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["trials_per_min"] or None
    for r in rows:
        r["x_plain"] = round(r["trials_per_min"] / base, 1) if base else None
    q = quality_row(size, a.seed)
    print(json.dumps(q), flush=True)
    print(f"\n{info['backend']} on {info['devices']}, {size['epochs']} epochs, seed {a.seed}")
    cols = ["run", "pack_sizes", "wall_s", "trials", "cut_by_timeout", "trials_per_min", "x_plain", "samples_per_s"]
    print(" | ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r.get(c, '')!s:>14}" for c in cols))
    print(f"time to validation >= {TARGET}: {q['t_target_s']} s (test {q['test']}, {q['trials']} trials,"
          f" wall {q['wall_s']} s)")
    return 0


def _devices() -> str:
    """The accelerator the backend computes on (JAX / torch / TensorFlow), as one word list."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return ",".join(sorted({d.platform for d in jax.devices()}))
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


if __name__ == "__main__":
    sys.exit(main())
