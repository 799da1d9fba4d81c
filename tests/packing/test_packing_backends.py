"""Packing on the other Keras backends: the exactness tests of tests/packing/test_packing.py (members
train as they would alone, with batch norm and dropout, a diverging member fails alone, a refilled
slot's new member trains as alone), a per-member pack of candidates x folds trains each member as its
fold's pack (tests/packing/test_packing_cv_onepack.py) and a study that refills its slots, run again in a child
process under ``KERAS_BACKEND`` (a process keeps the backend it imported Keras with)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_packing_tests_pass_on_backend(backend):
    pytest.importorskip(backend)  # both are in the test extra: CI has them
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-q", "-p", "no:cacheprovider", "tests/packing/test_packing.py",
         "tests/packing/test_packing_cv_onepack.py",
         "-k", "trains_each_member or batch_norm_and_dropout or refill or per_member_pack"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=580)
    tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
    assert out.returncode == 0, tail
    assert "5 passed" in out.stdout, tail  # with the per-member (candidates x folds) pack
