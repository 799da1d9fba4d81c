"""Workers that join a study by name (``hpsearch worker --study NAME --storage URL``): the configuration
comes from the study, the data from the snapshot it records in the artifact store; a worker on other
data refuses in one line. Real PostgreSQL (tests/pg.py) and real worker processes where it matters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_iris

from hpsearch.cli import main
from hpsearch.errors import ConfigError
from hpsearch.records import STUDY, TRIAL
from hpsearch.storage import child_env_and_url, open_storage
from hpsearch.study.run import prepare_context
from hpsearch.workers.join import join_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")

REPO = Path(__file__).resolve().parents[2]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _csv(path: Path, bump: float = 0.0) -> None:
    X, y = load_iris(return_X_y=True)
    X = X.copy()
    X[0, 0] += bump
    lines = ["a,b,c,d,y"] + [",".join([*(repr(float(v)) for v in row), str(int(t))]) for row, t in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")


def _study(folder: Path, name: str, n_trials: int, builder: str = "mlp") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _csv(folder / "iris.csv")
    path = folder / f"{name}.yaml"
    path.write_text(f"""name: {name}
data:
  source: iris.csv
  target: y
  split: {{valid: 0.2, test: 0.2, seed: 0}}
model:
  builder: "{builder}"
space:
  n_neurons: {{int: [4, 12]}}
train: {{epochs: 1, batch_size: 16, pack: 1}}
search: {{engine: optuna, sampler: random, pruner: none, n_trials: {n_trials}, metric: accuracy, seed: 0}}
""")
    return path


def _worker(url: str, name: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``python -m hpsearch worker --study NAME --storage URL`` in ``cwd``, the password in PGPASSWORD."""
    bare, env_extra = child_env_and_url(url)
    env = {**os.environ, **env_extra, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("HPSEARCH_STORAGE", None)
    env.pop("HPSEARCH_ARTIFACTS", None)
    cmd = [sys.executable, "-m", "hpsearch", "worker", "--study", name, "--storage", bare, "--no-progress", *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_worker_in_an_empty_folder_finishes_a_file_study_from_its_snapshot(tmp_path, postgres_url):
    folder = tmp_path / "start"
    path = _study(folder, "joined", n_trials=3)
    ctx = prepare_context(path, storage=postgres_url, artifacts=str(tmp_path / "art"))  # the study, no trial yet
    ctx.storage.remove_session()
    record = ctx.study.user_attrs[STUDY.DATA_SNAPSHOT]
    assert record["parts"]["source"] == {"kind": "arrays", "rows": 150, "shape": [4], "sha256": record["parts"][
        "source"]["sha256"]} and record["artifacts"] == str(tmp_path / "art")
    line = ctx.study.user_attrs[STUDY.DECISIONS]["data.snapshot"]["line"]
    assert f"sha256 {record['sha256'][:12]}" in line and "hpsearch worker --study joined" in line
    (folder / "iris.csv").unlink()  # neither the data nor the study file is needed any more
    path.unlink()
    empty = tmp_path / "empty"
    empty.mkdir()

    done = _worker(postgres_url, "joined", empty)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "the same as the study's snapshot" in done.stdout + done.stderr
    study = optuna.load_study(study_name="joined", storage=open_storage(postgres_url))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 3, states  # the exact budget, all by the worker
    assert study.user_attrs[STUDY.TEST_SCORE] is not None  # finalised on the snapshot's test split
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing written in its folder


def test_a_worker_joins_a_search_started_from_python(tmp_path, postgres_url):
    import hpsearch

    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    X, y = X[order], y[order]
    space = {"n_neurons": optuna.distributions.IntDistribution(4, 12)}
    search = hpsearch.OptunaSearchCV(hpsearch.KerasClassifier(), space, n_trials=2, pruner="none", random_state=0,
                                     study_name="py-join", storage=postgres_url, artifacts=str(tmp_path / "art"),
                                     pack=1, refit=False)
    search.fit(X[:110], y[:110], epochs=1, validation_data=(X[110:], y[110:]))
    assert any("data snapshot: data.source 110 rows, data.valid 40 rows" in m for m in search.messages_)
    empty = tmp_path / "empty"
    empty.mkdir()

    done = _worker(postgres_url, "py-join", empty, "--n-trials", "4")  # two more trials, by another process

    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="py-join", storage=open_storage(postgres_url))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    ours = {t.user_attrs[TRIAL.WORKER] for t in study.trials[:2]}
    theirs = {t.user_attrs[TRIAL.WORKER] for t in study.trials[2:]}
    assert len(theirs) == 1 and not ours & theirs  # the worker's trials are stored, under its own name
    assert all(t.intermediate_values for t in study.trials[2:])  # trained on the snapshot's validation rows


def test_a_worker_on_other_data_refuses_in_one_line(tmp_path, sqlite_url, capsys):
    path = _study(tmp_path / "s", "moved", n_trials=2)
    art = str(tmp_path / "art")
    prepare_context(path, storage=sqlite_url, artifacts=art).storage.remove_session()
    _csv(tmp_path / "s" / "iris.csv", bump=0.1)  # one value differs
    capsys.readouterr()

    assert main(["worker", str(path), "--storage", sqlite_url, "--artifacts", art, "--no-progress"]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "study 'moved' was started on other data" in err[0] and "data.source" in err[0]
    assert "hpsearch worker --study moved --storage URL" in err[0] and "Traceback" not in err[0]
    study = optuna.load_study(study_name="moved", storage=open_storage(sqlite_url))
    assert study.trials == []  # nothing written


def test_a_missing_study_or_an_unimportable_builder_is_one_line(tmp_path, sqlite_url, capsys):
    optuna.create_study(study_name="other", storage=open_storage(sqlite_url))
    assert main(["worker", "--study", "nope", "--storage", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study 'nope' does not exist" in err[0] and "hpsearch status --storage URL" in err[0]
    assert main(["worker", "--storage", sqlite_url]) == 2  # neither a file nor --study
    assert "--study NAME" in capsys.readouterr().err

    folder = tmp_path / "own"
    path = _study(folder, "own-builder", n_trials=1, builder="snapbuilder:build")
    (folder / "snapbuilder.py").write_text(
        "import keras\n\n\ndef build(n_neurons=8, meta=None):\n"
        "    m = keras.Sequential([keras.Input((meta['n_features_in_'],)), keras.layers.Dense(n_neurons),\n"
        "                          keras.layers.Dense(meta['n_classes_'], activation='softmax')])\n"
        "    m.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])\n"
        "    return m\n")
    prepare_context(path, storage=sqlite_url, artifacts=str(tmp_path / "art")).storage.remove_session()
    sys.modules.pop("snapbuilder", None)  # a fresh machine: the module was never imported ...
    sys.path.remove(str(folder.resolve()))
    folder.rename(tmp_path / "elsewhere")  # ... and the study's folder is not there
    with pytest.raises(ConfigError) as exc:
        join_study("own-builder", sqlite_url)
    message = str(exc.value)
    assert "\n" not in message and "model.builder" in message and "snapbuilder:build" in message
    assert f"started with {folder / 'snapbuilder.py'}" in message and "PYTHONPATH" in message
