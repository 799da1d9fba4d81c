"""Repair and removal (issue 20 item 2): a study whose best trial has no stored model is flagged by
`status`, refused by `load_best` with the repair command, and repaired by `hpsearch best --refit`
and by `hpsearch run FILE --resume`; `hpsearch delete` removes a study's trials and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

import hpsearch
from hpsearch.cli import main
from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage.artifacts import artifact_store_for
from hpsearch.storage.queries import study_status


def _file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name,
        "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
        "model": {"builder": "mlp", "fixed": {"optimizer": "adam", "n_hidden": 1}},
        "space": {"n_neurons": {"int": [4, 12]}, "learning_rate": {"float": [0.005, 0.05], "log": True}},
        "train": {"epochs": 3, "batch_size": 16, "pack": 4},
        "search": {"engine": "optuna", "n_trials": 4, "seed": 0, "pruner": "none", "keep_models": 1},
    }))
    return path


def _break_best(name: str, url: str, art: str) -> int:
    """What an older release left behind: the best trial's model removed by the keep rule and no
    best model recorded on the study."""
    study = optuna.load_study(study_name=name, storage=url)
    best = study.user_attrs[STUDY.BEST_TRIAL]
    trial = next(t for t in study.trials if t.number == best)
    store = artifact_store_for(url, art)
    ids = [trial.user_attrs[TRIAL.MODEL_ARTIFACT], trial.user_attrs[TRIAL.PREPROCESS_ARTIFACT]]
    refit = [study.user_attrs.get(STUDY.BEST_MODEL_ARTIFACT), study.user_attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT)]
    for aid in {*ids, *refit}:
        if aid and aid not in study.user_attrs.get(STUDY.REMOVED_ARTIFACTS, []):
            store.remove(aid)
    study.set_user_attr(STUDY.REMOVED_ARTIFACTS, sorted({*study.user_attrs.get(STUDY.REMOVED_ARTIFACTS, []), *ids}))
    for key in (STUDY.BEST_MODEL_ARTIFACT, STUDY.BEST_PREPROCESS_ARTIFACT, STUDY.TEST_SCORE, STUDY.BEST_TRIAL):
        study.set_user_attr(key, None)
    return best


def test_a_best_trial_without_model_is_flagged_and_repaired(tmp_path, sqlite_url, capsys):
    art = str(tmp_path / "art")
    path = _file(tmp_path, "repair")
    assert main(["run", str(path), "--storage", sqlite_url, "--artifacts", art, "--no-progress"]) == 0
    best = _break_best("repair", sqlite_url, art)
    assert study_status("repair", sqlite_url)["model_missing"] is True
    capsys.readouterr()
    assert main(["status", "repair", "--storage", sqlite_url]) == 0
    assert f"best trial {best} has no stored model" in capsys.readouterr().out
    with pytest.raises(UserError, match="hpsearch best repair --refit"):
        hpsearch.load_best("repair", storage=sqlite_url, artifacts=art)

    assert main(["best", "repair", "--refit", "--storage", sqlite_url, "--artifacts", art]) == 0
    cap = capsys.readouterr()
    assert "has no stored model: training its configuration once more" in cap.err and "test accuracy" in cap.out
    study = optuna.load_study(study_name="repair", storage=sqlite_url)
    assert study.user_attrs[STUDY.BEST_TRIAL] == best and study.user_attrs[STUDY.TEST_SCORE] is not None
    assert study_status("repair", sqlite_url)["model_missing"] is False
    est = hpsearch.load_best("repair", storage=sqlite_url, artifacts=art)
    assert est.predict(np.zeros((2, 4))).shape == (2,)

    # running the file again repairs it too (the Optuna engine continues to its met budget, then finalizes)
    _break_best("repair", sqlite_url, art)
    assert main(["run", str(path), "--storage", sqlite_url, "--artifacts", art, "--no-progress", "--resume"]) == 0
    assert hpsearch.load_best("repair", storage=sqlite_url, artifacts=art).predict(np.zeros((1, 4))).shape == (1,)


def test_delete_removes_trials_and_files_and_refuses_a_live_study(tmp_path, sqlite_url, capsys):
    art = tmp_path / "art"
    path = _file(tmp_path, "gone")
    assert main(["run", str(path), "--storage", sqlite_url, "--artifacts", str(art), "--no-progress"]) == 0
    stored = [p for p in art.rglob("*") if p.is_file()]
    assert stored
    capsys.readouterr()
    assert main(["delete", "gone", "--storage", sqlite_url, "--artifacts", str(art)]) == 0  # a dry run
    assert "would delete study 'gone': 4 trials" in capsys.readouterr().out
    assert optuna.load_study(study_name="gone", storage=sqlite_url)

    running = optuna.load_study(study_name="gone", storage=sqlite_url).ask()  # a live worker's trial
    assert main(["delete", "gone", "--storage", sqlite_url, "--yes"]) == 2
    err = capsys.readouterr().err
    assert "1 running or waiting trials" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert running.number == 4

    assert main(["delete", "gone", "--storage", sqlite_url, "--artifacts", str(art), "--yes", "--force"]) == 0
    assert "deleted study 'gone'" in capsys.readouterr().out
    with pytest.raises(KeyError):
        optuna.load_study(study_name="gone", storage=sqlite_url)
    assert not [p for p in art.rglob("*") if p.is_file()]
