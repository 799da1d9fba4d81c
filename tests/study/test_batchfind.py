"""The batch-size finder: doubling then bisection on out-of-memory (an injected device budget),
the process healthy afterwards, and the CPU cap where samples/s stops rising."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from hpsearch.cli import main
from hpsearch.errors import ConfigError
from hpsearch.models.mlp import build_mlp
from hpsearch.study.batchfind import DeviceOutOfMemory, batch_size_for, search_batch_size

META = {"n_features_in_": 8, "target_type_": "multiclass", "n_classes_": 3}


def _budget(limit: int):
    def check(batch: int) -> None:
        if batch > limit:
            raise DeviceOutOfMemory(f"batch {batch} > {limit}")
    return check


def test_doubles_then_bisects_to_the_largest_size_that_fits():
    fits = _budget(300)

    def probe(b: int) -> float:
        fits(b)
        return float(b)

    res = search_batch_size(probe, start=32, max_batch=10_000, cap_throughput=False, device="gpu")
    assert (res.batch_size, res.reason) == (300, "memory")
    sizes = [t["batch_size"] for t in res.tried]
    assert sizes[:5] == [32, 64, 128, 256, 512] and not res.tried[4]["fits"]
    assert len(sizes) <= 5 + 9  # bisection between 256 and 512
    with pytest.raises(ConfigError, match="^train.batch_size: even a batch of 32 runs out of device memory"):
        search_batch_size(lambda b: _budget(10)(b) or 1.0, max_batch=100, cap_throughput=False)


def test_cpu_stops_where_samples_per_second_stop_rising():
    rates = {32: 100.0, 64: 190.0, 128: 195.0, 256: 400.0}
    res = search_batch_size(rates.__getitem__, start=32, max_batch=256, cap_throughput=True)
    assert (res.batch_size, res.reason) == (64, "throughput")
    res = search_batch_size(lambda b: float(b), start=32, max_batch=100, cap_throughput=True)
    assert (res.batch_size, res.reason) == (100, "data")


def test_real_training_with_an_injected_budget_then_the_process_trains_on():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(600, 8)).astype("float32"), rng.integers(0, 3, 600)

    def build():
        keras.backend.clear_session()
        return build_mlp(n_hidden=1, n_neurons=8, meta=META, jit_compile=False)

    res = batch_size_for(build, X, y, device="gpu", memory_budget=_budget(200))
    assert (res.batch_size, res.reason, res.device) == (200, "memory", "gpu")
    assert all(t["samples_per_s"] > 0 for t in res.tried if t["fits"])
    hist = build().fit(X, y, batch_size=res.batch_size, epochs=1, verbose=0).history
    assert np.isfinite(hist["loss"][0])


def test_cli(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text("name: iris-b\ndata: {source: 'sklearn:iris'}\nspace: {n_neurons: {int: [4, 8]}}\n"
                     "search: {n_trials: 1}\n")
    assert main(["batch-find", str(study), "--max-batch", "64", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"batch_size": ' in out and '"device": "cpu"' in out
