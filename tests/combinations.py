"""The combination table of issue 20 (engine x pack x pruner x objectives x storage), covered pairwise.

``CELLS`` is computed here by :func:`pairwise`, a small deterministic greedy generator (set cover
over the 128 cells of the full table); ``tests/study/test_combinations.py`` checks that the cells
cover every pair of values of every two factors.

A pair is covered where it is run as given: a scikit-learn engine's cell with two objectives runs
unpacked, so it covers neither (random, auto) nor (auto, 2); other cells must. The Optuna engine
packs and prunes two objectives (its Pareto rung rule, one line asserted). Pairs no engine runs as
given (a pruner with a scikit-learn engine; packing with two objectives there) are in the table
too, none skipped: their cells run and assert the one-line note that says so. :func:`run_cell`
runs one cell's tiny study (iris, 3 epochs, 4-8 trials, one small hidden layer) and asserts the
exact budget, the trial states, the per-epoch curves, the stored models of the best trial(s) (ids
present, models loadable) and that ``load_best`` predicts.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

FACTORS: dict[str, list[Any]] = {
    "engine": ["optuna", "random", "grid", "halving"],
    "pack": [1, "auto"],
    "pruner": ["hyperband", "sha", "median", "none"],
    "objectives": [1, 2],
    "storage": ["sqlite", "postgresql"],
}
EPOCHS = 3
TRIALS = {"optuna": 8, "random": 4, "halving": 4}  # optuna: auto packs a budget of 8+ only, CV 4+ candidates
GRID = {"n_neurons": [4, 16], "learning_rate": [0.01, 0.05]}  # 4 grid points
SKLEARN = ("random", "grid", "halving")

Cell = dict[str, Any]
Pair = tuple[tuple[str, Any], tuple[str, Any]]


def effective(cell: Cell) -> Cell:
    """What a cell runs as: the scikit-learn engines have no pruner and do not pack several
    objectives (each said in one line, :func:`expected_notes`); the Optuna engine runs every cell as given."""
    out = dict(cell)
    if out.get("engine") in SKLEARN and "pruner" in out:
        out["pruner"] = "none"
    if out.get("engine") in SKLEARN and out.get("objectives", 1) > 1 and "pack" in out:
        out["pack"] = 1
    return out


def pairs_of(cell: Cell) -> set[Pair]:
    return {((a, cell[a]), (b, cell[b])) for a, b in itertools.combinations(cell, 2)}


def every_cell(factors: dict[str, list[Any]]) -> list[Cell]:
    return [dict(zip(factors, values)) for values in itertools.product(*factors.values())]


def targets(factors: dict[str, list[Any]]) -> tuple[set[Pair], set[Pair]]:
    """(valid pairs: those some cell runs as given; refused pairs: those no cell runs as given, such
    as a pruner with the random engine, which a cell asserts the one-line note of)."""
    cells = every_cell(factors)
    valid = set().union(*(pairs_of(c) for c in cells if effective(c) == c))
    return valid, set().union(*(pairs_of(c) for c in cells)) - valid


def covered_by(cell: Cell, valid: set[Pair], refused: set[Pair]) -> set[Pair]:
    """A cell covers the valid pairs it runs (after :func:`effective`) and the refused pairs it is
    given (its note is asserted)."""
    return (pairs_of(effective(cell)) & valid) | (pairs_of(cell) & refused)


def pairwise(factors: dict[str, list[Any]]) -> list[Cell]:
    """A small set of cells covering every valid pair as run and every refused pair as given: greedy
    set cover over the full table (each step the cell covering the most uncovered pairs; ties to a
    cell that runs packed, the cheaper, then to one with more refused values, so notes are asserted
    where they say most, then to the earlier cell of ``itertools.product``), deterministic."""
    valid, refused = targets(factors)
    todo, cells, table = valid | refused, [], every_cell(factors)

    def score(c: Cell) -> tuple[int, int, bool]:
        return (len(covered_by(c, valid, refused) & todo), effective(c).get("pack") == "auto",
                sum(v != c[k] for k, v in effective(c).items()))

    while todo:
        best = max(table, key=score)
        cells.append(best)
        todo -= covered_by(best, valid, refused)
    return cells


CELLS = pairwise(FACTORS)


def cell_id(cell: dict[str, Any]) -> str:
    return f"{cell['engine']}-pack{cell['pack']}-{cell['pruner']}-obj{cell['objectives']}-{cell['storage']}"


def cells_of(*engines: str) -> list[Any]:
    """The pytest params of the cells of these engines (ids from :func:`cell_id`)."""
    import pytest

    return [pytest.param(c, id=cell_id(c)) for c in CELLS if c["engine"] in engines]


def budget(cell: Cell) -> int:
    """The trials (candidates) a cell asks for; an unpacked Optuna cell 6 (auto packs 8+ only)."""
    if cell["engine"] == "grid":
        return math.prod(len(v) for v in GRID.values())
    return 6 if cell["engine"] == "optuna" and effective(cell)["pack"] == 1 else TRIALS[cell["engine"]]


def cell_url(cell: Cell, request: Any) -> str:
    """The cell's storage: tests/conftest.py's ``sqlite_url`` or ``postgres_url`` (a fresh database)."""
    return str(request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "postgres_url"}[cell["storage"]]))


def study_dict(cell: dict[str, Any], name: str) -> dict[str, Any]:
    """The cell's tiny study: iris, one hidden layer of 4-16 units, Adam, 3 epochs, 4-8 trials."""
    engine = cell["engine"]
    space: dict[str, Any] = {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [0.005, 0.05], "log": True}}
    if engine == "grid":
        space = {k: {"choice": v} for k, v in GRID.items()}
    search: dict[str, Any] = {"engine": engine, "seed": 0, "pruner": cell["pruner"],
                              "metric": "accuracy" if cell["objectives"] == 1 else ["accuracy", "n_params"]}
    if engine in TRIALS:
        search["n_trials"] = budget(cell)
    if engine in SKLEARN:
        search["cv"] = 2
    return {"name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
            "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
            "space": space, "train": {"epochs": EPOCHS, "batch_size": 16, "pack": cell["pack"]}, "search": search}


def expected_notes(cell: dict[str, Any]) -> list[str]:
    """The one-line notes a cell's run must print (a combination not honoured is said, not skipped)."""
    notes = []
    if cell["engine"] in SKLEARN and cell["pruner"] != "none":
        notes.append(f"hpsearch: search.pruner {cell['pruner']} not used: engine {cell['engine']} draws its"
                     " candidates as scikit-learn does and has no sampler or pruner")
    if cell["engine"] in SKLEARN and cell["objectives"] == 2 and cell["pack"] == "auto":
        notes.append("hpsearch: train.pack auto -> 1: search.metric with several objectives is not packed yet"
                     " (one model per fit)")
    if cell["engine"] == "optuna" and cell["objectives"] == 2:  # Optuna's pruners take one value: hpsearch's rule
        notes.append("hpsearch: 2 objectives (accuracy, n_params): " + (
            "no pruning (search.pruner none)" if cell["pruner"] == "none" else
            f"search.pruner {cell['pruner']} -> Pareto successive halving on accuracy after epochs 2: a trial is kept"
            " at a rung when it is on the first 2 non-dominated fronts of (accuracy, n_params) among the trials that"
            f" reached it, or in the best 1/{2 if cell['pruner'] == 'median' else 3} by front then crowding (Optuna's"
            " pruners take one value)") + "; the result is a Pareto front")
    return notes


class Recorder:
    """An observer that keeps the run's lines and finished trials."""

    total: int | None = None
    label = ""
    direction = "maximize"

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.done: list[tuple[int, str]] = []

    def begin(self, done: int, best: float | None) -> None:
        pass

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None:
        self.done.append((number, state))

    def message(self, text: str) -> None:
        self.messages.append(text)

    def end(self) -> None:
        pass


@dataclass
class CellRun:
    cell: dict[str, Any]
    url: str
    artifacts: str
    study: Any
    recorder: Recorder
    packs: list[int] = field(default_factory=list)  # scikit-learn engines: members of each pack (candidates x folds)


def iris_rows() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), y


def run_cell(cell: dict[str, Any], url: str, tmp_path: Path, monkeypatch: Any) -> CellRun:
    """Run the cell's study and assert everything the combination table promises."""
    import hpsearch.packing.cv as packed_cv
    from hpsearch.study.run import run_study
    from hpsearch.study.validate import parse_study_config

    name = cell_id(cell).replace("pack", "p")[:60]
    packs: list[int] = []
    train_pack = packed_cv.train_pack

    def counted(pm: Any, *args: Any, **kwargs: Any) -> Any:  # a spy: the scikit-learn engines store no pack size
        packs.append(len(pm.specs))
        return train_pack(pm, *args, **kwargs)

    monkeypatch.setattr(packed_cv, "train_pack", counted)
    rec = Recorder()
    art = str(tmp_path / "art")
    res = run_study(parse_study_config(study_dict(cell, name)), storage=url, artifacts=art, observer=rec)
    study = optuna.load_study(study_name=name, storage=url)
    run = CellRun(cell, url, art, study, rec, packs)
    for note in expected_notes(cell):
        assert sum(m.startswith(note) for m in rec.messages) == 1, (note, rec.messages)
        assert all("\n" not in m for m in rec.messages)
    if not expected_notes(cell):
        assert not [m for m in rec.messages if "not used" in m or "pruning is off" in m or "-> 1" in m], rec.messages
    check_budget_and_states(run)
    check_packing(run)
    check_curves(run)
    check_models(run)
    assert res.best_trial == study.user_attrs["best_trial_number"]
    return run


def _by_state(trials: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for t in trials:
        out.setdefault(t.state.name, []).append(t)
    return out


def check_budget_and_states(run: CellRun) -> None:
    from hpsearch.engines.halving import halving_rungs

    cell, trials = run.cell, run.study.get_trials()
    states = _by_state(trials)
    assert set(states) <= {"COMPLETE", "PRUNED"}, {k: len(v) for k, v in states.items()}
    complete, pruned = states.get("COMPLETE", []), states.get("PRUNED", [])
    engine = cell["engine"]
    if engine == "optuna":
        assert len(complete) + len(pruned) == budget(cell)  # the exact budget
        if cell["pruner"] == "none":
            assert not pruned
        assert complete, "a study without a complete trial"
        for t in pruned:
            assert t.user_attrs["epochs_trained"] < EPOCHS and t.user_attrs["pruned_at_epoch"] < EPOCHS
    elif engine == "halving":
        rungs = halving_rungs(budget(cell), 1, EPOCHS, 3)
        assert [(r.n_candidates, r.epochs) for r in rungs] == [(4, 1), (2, 3)]
        assert len(trials) == sum(r.n_candidates for r in rungs)
        assert len(complete) == rungs[-1].n_candidates and len(pruned) == len(trials) - len(complete)
        assert {t.user_attrs["n_resources"] for t in pruned} == {rungs[0].epochs}
        assert {t.user_attrs["n_resources"] for t in complete} == {rungs[-1].epochs}
    else:
        n = budget(cell)
        assert len(complete) == n and not pruned
        assert len({tuple(sorted(t.params.items())) for t in complete}) == n
    assert sorted(n for n, _ in run.recorder.done) == sorted(t.number for t in trials)  # each shown once


def check_packing(run: CellRun) -> None:
    """``pack: auto`` packed (the Optuna engine's trials carry their pack size, with two objectives
    too; the scikit-learn engines' folds went through packs); ``pack: 1`` did not."""
    cell, trials = run.cell, run.study.get_trials()
    packed = effective(cell)["pack"] == "auto"
    if cell["engine"] == "optuna":
        sizes = {t.user_attrs.get("pack_size") for t in trials}
        assert sizes == ({budget(cell)} if packed else {None}), sizes
    else:
        assert bool(run.packs) == packed, run.packs
        assert all(k >= 2 for k in run.packs)


def check_curves(run: CellRun) -> None:
    """Per-epoch validation values: Optuna's intermediate values (one per epoch trained, a study of
    several objectives too: hpsearch writes them, Optuna's ``report`` takes one value); the
    scikit-learn engines' fold-mean curve, one per epoch of the candidate."""
    cell = run.cell
    for t in run.study.get_trials():
        epochs = t.user_attrs["epochs_trained"]
        assert 1 <= epochs <= EPOCHS
        curve = t.intermediate_values
        if cell["engine"] == "optuna":
            assert sorted(curve) == list(range(epochs)), (t.number, curve, epochs)
        else:
            assert 1 <= len(curve) <= EPOCHS and sorted(curve) == list(range(len(curve)))
        assert all(0.0 <= v <= 1.0 for v in curve.values()), curve
        if t.state.name == "COMPLETE" and cell["engine"] == "optuna":
            assert t.values[0] == max(curve.values())  # restore_best_weights: the best epoch's value


def check_models(run: CellRun) -> None:
    """The best trial's model (and each front trial's, with two objectives, Optuna) is stored and
    loads; ``load_best`` predicts iris classes."""
    import hpsearch
    from hpsearch.pareto import pareto_front
    from hpsearch.records import best_ranked
    from hpsearch.storage.artifacts import artifact_store_for, load_model_artifacts

    study, cell = run.study, run.cell
    store = artifact_store_for(run.url, run.artifacts)
    attrs = study.user_attrs
    best_number = attrs["best_trial_number"]
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    if cell["objectives"] == 1:
        assert best_number == best_ranked(complete, "maximize").number
    else:
        front = pareto_front(complete, ["maximize", "minimize"])
        assert best_number in {t.number for t in front}
    ids = [(attrs["best_model_artifact_id"], attrs["best_preprocess_artifact_id"])]
    if cell["engine"] == "optuna":
        best = study.trials[best_number]
        assert (best.user_attrs["model_artifact_id"], best.user_attrs["preprocess_artifact_id"]) == ids[0]
        if cell["objectives"] == 2:  # the front's models are never removed by keep_models
            ids += [(t.user_attrs["model_artifact_id"], t.user_attrs["preprocess_artifact_id"])
                    for t in pareto_front(complete, ["maximize", "minimize"])]
    X, _ = iris_rows()
    for mid, pid in ids:
        assert mid and pid
        model, pre = load_model_artifacts(store, mid, pid)
        assert model.count_params() > 0 and pre.task == "classification"
    est = hpsearch.load_best(study.study_name, storage=run.url, artifacts=run.artifacts)
    pred = est.predict(X)
    assert pred.shape == (len(X),) and set(pred) <= {0, 1, 2}
    model, pre = load_model_artifacts(store, *ids[0])  # load_best is the best model behind its preprocessing
    np.testing.assert_allclose(est.predict_proba(X), model.predict(pre.transform(X), verbose=0), rtol=1e-5, atol=1e-6)
