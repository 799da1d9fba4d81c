"""What a pack shrink costs and saves (hpsearch.packing.shrink's rule): on digits, members drawn
from the anchors' space (SGD, n_hidden 0-3, n_neurons 1-99, learning rate 3e-4..3e-2, batch 32),
the epoch time of a K-slot pack and, for a pack of L members built for a shrink, its build (Keras
model, weights) and its trace and compile (its first epoch less its next one). A shrink from K to L
pays once ``(epoch_K - epoch_L) * epochs_left > build_L + compile_L``; per slot saved that is
``(build_L + compile_L) / ((epoch_K - epoch_L) / (K - L))`` slot-epochs, the rule's threshold.

    python benchmarks/bench_shrink.py --k 64 --live 4,8,16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    from hpsearch.models.mlp import build_mlp
    from hpsearch.packing.model import PackedModel, member_spec
    from hpsearch.packing.train import Pace, PackSettings, train_pack

    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--live", default="4,8,16")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--small-jit", default="on", choices=("on", "off"), help="XLA for the small packs")
    a = ap.parse_args()
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype("float32")
    Xt, yt, Xv, yv = X[:1150], y[:1150], X[1150:1438], y[1150:1438]
    meta = {"n_features_in_": 64, "target_type_": "multiclass", "n_classes_": 10, "n_outputs_": 1}
    rng = np.random.default_rng(0)
    params = [{"optimizer": "sgd", "n_hidden": int(rng.integers(0, 4)), "n_neurons": int(rng.integers(1, 100)),
               "learning_rate": float(np.exp(rng.uniform(np.log(3e-4), np.log(3e-2))))} for _ in range(a.k)]
    s = PackSettings(epochs=a.epochs, batch_size=32, valid_batch=512, metric="accuracy", direction="maximize",
                     patience=a.epochs)

    def timed(k: int, jit: bool = True) -> tuple[float, float, float]:
        t0 = time.monotonic()
        pm = PackedModel([member_spec(build_mlp, p) for p in params[:k]], meta, seed=0)
        pm.init_weights(list(range(k)))
        pm.model.jit_compile = jit
        build = time.monotonic() - t0
        pace = Pace()
        train_pack(pm, Xt, yt, Xv, yv, s, pace=pace)
        assert pace.first_s is not None and pace.epoch_s is not None
        return build, pace.first_s - pace.epoch_s, pace.epoch_s

    _, _, big = timed(a.k)
    print(f"K={a.k}: epoch {big:.3f} s  (load {os.getloadavg()[0]:.1f})")
    for live in (int(v) for v in a.live.split(",")):
        build, compile_s, epoch = timed(live, a.small_jit == "on")
        per_slot = (big - epoch) / (a.k - live)
        print(f"L={live}: build {build:.2f} s, trace+compile {compile_s:.2f} s, epoch {epoch:.3f} s;"
              f" pays after {(build + compile_s) / max(big - epoch, 1e-9):.1f} epochs left,"
              f" {(build + compile_s) / max(per_slot, 1e-9):.0f} slot-epochs  (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
