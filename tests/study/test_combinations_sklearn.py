"""The combination table of issue 20, scikit-learn engine cells (random, grid, halving; the Optuna
engine's and the check that the cells cover every pair are in ``test_combinations.py``): each a tiny
cross-validated study that asserts its exact budget, trial states, curves, the refit model and
``load_best``; a pruner given to these engines is said to be unused, in one line."""

from __future__ import annotations

import pytest

from tests.combinations import cell_url, cells_of, run_cell


@pytest.mark.parametrize("cell", cells_of("random", "grid", "halving"))
def test_sklearn_cell(cell, request, tmp_path, monkeypatch):
    run_cell(cell, cell_url(cell, request), tmp_path, monkeypatch)
