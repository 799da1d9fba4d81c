"""The combination table of issue 20, Optuna engine cells (the scikit-learn engines' cells are in
``test_combinations_sklearn.py``, so xdist runs the two files side by side): engine x pack x pruner x
objectives x storage, covered pairwise by ``tests/combinations.py``'s cells, each a tiny study that
asserts its exact budget, trial states, curves, stored models and ``load_best``."""

from __future__ import annotations

import itertools

import pytest

from tests.combinations import (
    CELLS,
    FACTORS,
    cell_url,
    cells_of,
    effective,
    expected_notes,
    pairs_of,
    pairwise,
    run_cell,
    targets,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_the_cells_cover_every_pair_of_values_and_are_few():
    valid, refused = targets(FACTORS)
    run_as_given = set().union(*(pairs_of(effective(c)) for c in CELLS))
    given = set().union(*(pairs_of(c) for c in CELLS))
    assert valid <= run_as_given  # every pair some cell can run, a cell runs (not only names)
    assert refused <= given  # every pair no cell can run is given to a cell, which asserts its note
    assert (("engine", "optuna"), ("pack", "auto")) in valid and (("engine", "random"), ("pruner", "sha")) in refused
    assert len({tuple(c.values()) for c in CELLS}) == len(CELLS) <= 18  # 4 x 4 at least; 128 in all
    assert len(CELLS) >= max(len(a) * len(b) for a, b in itertools.combinations(FACTORS.values(), 2))
    assert pairwise(FACTORS) == CELLS  # deterministic
    # a toy table: 3 binary factors (8 cells; 4 cover every pair): greedy covers them in fewer than 8
    toy = {"engine": ["random"], "a": [0, 1], "b": [0, 1], "c": [0, 1]}
    assert set().union(*(pairs_of(c) for c in pairwise(toy))) == targets(toy)[0] and 4 <= len(pairwise(toy)) < 8
    # a refused combination says so in one line; a cell with two objectives on Optuna asks for both
    assert all(expected_notes(c) for c in CELLS if effective(c) != c)
    assert any(c["engine"] == "optuna" and c["pack"] == "auto" and c["pruner"] != "none" and c["objectives"] == 2
               for c in CELLS)


@pytest.mark.parametrize("cell", cells_of("optuna"))
def test_optuna_cell(cell, request, tmp_path, monkeypatch):
    run_cell(cell, cell_url(cell, request), tmp_path, monkeypatch)
