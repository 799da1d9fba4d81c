"""Bad input through the real CLI, in-process: one line on stderr, exit code 2, nothing written.

Every item of the foundation issue's bad-input list (requirement 7) is driven through
``hpsearch run`` and, where it applies, ``hpsearch validate``. Each case asserts:

* ``rc == 2`` and stderr is exactly one line, naming the field or file and saying what to do;
* no ``Traceback`` anywhere in stdout/stderr;
* nothing written: no new file under the test folder, and the SQLite storage (if it exists at
  all) holds no study; an unreachable PostgreSQL URL's password appears nowhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
from cli_helpers import (
    PG_UNREACHABLE,
    SECRET,
    assert_user_error,
    csv_study,
    csv_text,
    del_,
    run_cli,
    set_,
    snapshot,
    table,
    write_study,
)

from hpsearch.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean current folder (so a default ./hpsearch.db or artifact folder would show up)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("HPSEARCH_ARTIFACTS", raising=False)
    return tmp_path


# --------------------------------------------------------------------------------------------------
# the cases: (id, make(tmp_path) -> study path, substrings the line must hold, commands)
# --------------------------------------------------------------------------------------------------

BOTH = ("run", "validate")


def _npz_without_x(tmp: Path) -> Path:
    np.savez(tmp / "arr.npz", features=np.zeros((10, 2)), y=np.arange(10) % 2)
    return write_study(tmp, lambda c: c.__setitem__("data", {"source": "arr.npz"}))


def _non_utf8(tmp: Path) -> Path:
    p = tmp / "latin.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    return p


CASES: list[tuple[str, Callable[[Path], Path], list[str], tuple[str, ...]]] = [
    # --- the study file itself
    ("unknown-key-top", lambda t: write_study(t, lambda c: set_(c, "colour", "red")), ["study.yaml", "colour"], BOTH),
    ("unknown-key-nested", lambda t: write_study(t, lambda c: set_(c, "train.epoch", 3)), ["train.epoch"], BOTH),
    ("unknown-key-space", lambda t: write_study(t, lambda c: set_(c, "space.n_neurons.lo", 1)),
     ["space.n_neurons", "lo"], BOTH),
    ("unknown-parameter", lambda t: write_study(t, lambda c: set_(c, "space.n_neurns", {"int": [1, 3]})),
     ["space.n_neurns"], BOTH),
    ("unknown-fixed-parameter", lambda t: write_study(t, lambda c: set_(c, "model.fixed.colour", "red")),
     ["model.fixed.colour"], BOTH),
    ("unknown-builder-module", lambda t: write_study(t, lambda c: set_(c, "model.builder", "nosuchpkg_x.mod:build")),
     ["model.builder", "nosuchpkg_x"], BOTH),
    ("unknown-builder-name", lambda t: write_study(t, lambda c: set_(c, "model.builder", "rnn")),
     ["model.builder", "rnn"], BOTH),
    ("unknown-builder-function",
     lambda t: write_study(t, lambda c: set_(c, "model.builder", "hpsearch.models.builders:nope")),
     ["model.builder", "nope"], BOTH),
    ("int-low-gt-high", lambda t: write_study(t, lambda c: set_(c, "space.n_neurons", {"int": [8, 4]})),
     ["space.n_neurons", "low"], BOTH),
    ("float-low-gt-high", lambda t: write_study(t, lambda c: set_(c, "space.dropout", {"float": [0.5, 0.1]})),
     ["space.dropout"], BOTH),
    ("float-log-low-zero", lambda t: write_study(t, lambda c: set_(c, "space.learning_rate",
                                                                   {"float": [0.0, 0.1], "log": True})),
     ["space.learning_rate", "log"], BOTH),
    ("int-log-low-negative", lambda t: write_study(t, lambda c: set_(c, "space.n_neurons",
                                                                     {"int": [-1, 8], "log": True})),
     ["space.n_neurons", "log"], BOTH),
    ("empty-choice", lambda t: write_study(t, lambda c: set_(c, "space.activation", {"choice": []})),
     ["space.activation", "empty"], BOTH),
    ("int-range-floats", lambda t: write_study(t, lambda c: set_(c, "space.n_neurons", {"int": [1.5, 8]})),
     ["space.n_neurons"], BOTH),
    ("wrong-type-epochs", lambda t: write_study(t, lambda c: set_(c, "train.epochs", "ten")),
     ["train.epochs", "ten"], BOTH),
    ("wrong-type-section", lambda t: write_study(t, lambda c: set_(c, "train", "fast")), ["train"], BOTH),
    ("unknown-metric", lambda t: write_study(t, lambda c: set_(c, "search.metric", "f1")),
     ["search.metric", "f1"], BOTH),
    ("unknown-sampler", lambda t: write_study(t, lambda c: set_(c, "search.sampler", "bayes")),
     ["search.sampler", "bayes"], BOTH),
    ("unknown-pruner", lambda t: write_study(t, lambda c: set_(c, "search.pruner", "asha")),
     ["search.pruner", "asha"], BOTH),
    ("unknown-engine", lambda t: write_study(t, lambda c: set_(c, "search.engine", "bayesian")),
     ["search.engine", "bayesian"], BOTH),
    ("unknown-dataset", lambda t: write_study(t, lambda c: set_(c, "data.source", "sklearn:mnist")),
     ["data.source", "mnist"], BOTH),
    ("unknown-extension", lambda t: write_study(t, lambda c: set_(c, "data.source", "data.xlsx")),
     ["data.source", "data.xlsx"], BOTH),
    ("missing-required-data", lambda t: write_study(t, lambda c: del_(c, "data")), ["data"], BOTH),
    ("empty-space", lambda t: write_study(t, lambda c: set_(c, "space", {})), ["space"], BOTH),
    ("bad-name", lambda t: write_study(t, lambda c: set_(c, "name", "my study")), ["name"], BOTH),
    ("split-too-large", lambda t: write_study(t, lambda c: set_(c, "data.split.valid", 0.5) or
                                              set_(c, "data.split.test", 0.45)), ["data.split"], BOTH),
    ("no-budget", lambda t: write_study(t, lambda c: del_(c, "search.n_trials")), ["search", "n_trials"], BOTH),
    ("grid-float-no-points", lambda t: write_study(t, lambda c: set_(c, "search.engine", "grid")),
     ["space.learning_rate", "grid"], BOTH),
    ("regression-metric-on-classification", lambda t: write_study(t, lambda c: set_(c, "search.metric", "mse")),
     ["search.metric", "mse"], BOTH),
    ("classification-metric-on-regression",
     lambda t: write_study(t, lambda c: set_(c, "data.source", "sklearn:diabetes")), ["search.metric", "accuracy"],
     BOTH),
    ("auc-on-multiclass", lambda t: write_study(t, lambda c: set_(c, "search.metric", "auc")),
     ["search.metric", "auc"], BOTH),
    ("declared-regression-metric-accuracy",
     lambda t: write_study(t, lambda c: set_(c, "data.task", "regression")), ["search.metric"], BOTH),
    ("invalid-yaml", lambda t: (t / "broken.yaml").write_text("name: [unclosed\nspace: {\n") and t / "broken.yaml",
     ["broken.yaml", "YAML"], BOTH),
    ("yaml-not-mapping", lambda t: (t / "list.yaml").write_text("- name: x\n- data: y\n") and t / "list.yaml",
     ["list.yaml", "mapping"], BOTH),
    ("yaml-empty-file", lambda t: (t / "empty.yaml").write_text("") or t / "empty.yaml", ["empty.yaml"], BOTH),
    ("study-file-missing", lambda t: t / "nope.yaml", ["nope.yaml", "not found"], BOTH),
    ("study-file-is-dir", lambda t: t, [], BOTH),
    ("study-file-not-utf8", _non_utf8, ["latin.yaml"], BOTH),
    # --- data
    ("missing-data-file", lambda t: write_study(t, lambda c: c.__setitem__(
        "data", {"source": "missing.csv", "target": "y"})), ["missing.csv", "not found"], BOTH),
    ("csv-header-only", lambda t: csv_study(t, "a,b,y\n"), ["data.csv", "no data rows"], BOTH),
    ("npz-empty-arrays", lambda t: np.savez(t / "e.npz", X=np.zeros((0, 3)), y=np.zeros(0)) or write_study(
        t, lambda c: c.__setitem__("data", {"source": "e.npz"})), ["e.npz", "no data"], BOTH),
    ("npz-nan", lambda t: np.savez(t / "n.npz", X=np.where(np.eye(30, 3) > 0, np.nan, 1.0), y=np.arange(30) % 2)
     or write_study(t, lambda c: c.__setitem__("data", {"source": "n.npz"})), ["n.npz", "NaN"], BOTH),
    ("parquet-inf", lambda t: __import__("pandas").DataFrame(
        {"a": [1.0, float("inf")] * 15, "y": [0, 1] * 15}).to_parquet(t / "d.parquet") or write_study(
        t, lambda c: c.__setitem__("data", {"source": "d.parquet", "target": "y"})), ["d.parquet", "inf"], BOTH),
    ("csv-zero-bytes", lambda t: csv_study(t, ""), ["data.csv", "empty"], BOTH),
    ("csv-inf-feature", lambda t: csv_study(t, "a,b,y\n" + "".join(
        f"{'inf' if i == 3 else i},{i % 5},{i % 2}\n" for i in range(30))), ["data.csv", "inf"], BOTH),
    ("csv-nan-target", lambda t: csv_study(t, "a,b,y\n" + "".join(
        f"{i},{i % 5},{'' if i == 4 else i * 0.5}\n" for i in range(30)),
        lambda c: set_(c, "data.task", "regression") or set_(c, "search.metric", "mse")), ["data.csv", "target"], BOTH),
    ("csv-one-class", lambda t: csv_study(t, csv_text(*table(n_classes=1))), ["data.csv", "one class"], BOTH),
    ("csv-one-class-strings", lambda t: csv_study(t, "a,b,y\n" + "".join(f"{i},{i},cat\n" for i in range(20))),
     ["data.csv", "one class"], BOTH),
    ("fewer-rows-than-folds", lambda t: csv_study(t, "a,b,y\n" + "".join(f"{i},{i * i},{i * 1.5}\n" for i in range(5)),
                                                lambda c: set_(c, "search.cv", 3) or set_(c, "search.metric", "mse")),
     ["data.csv", "rows"], BOTH),
    ("class-too-few-for-cv", lambda t: csv_study(
        t, "a,b,y\n" + "".join(f"{i},{i % 7},{'rare' if i < 2 else ('a' if i % 2 else 'b')}\n" for i in range(40)),
        lambda c: set_(c, "search.cv", 3)), ["data.csv", "rare"], BOTH),
    ("class-too-few-in-train-for-cv", lambda t: csv_study(
        t, "a,b,y\n" + "".join(f"{i},{i % 7},{'rare' if i < 5 else ('a' if i % 2 else 'b')}\n" for i in range(60)),
        lambda c: set_(c, "search.cv", 5)), ["data.csv", "rare"], BOTH),
    ("csv-missing-target-column", lambda t: csv_study(t, csv_text(*table()).replace(",y\n", ",label\n", 1)),
     ["data.csv", "'y'"], BOTH),
    ("csv-missing-feature-column", lambda t: csv_study(t, csv_text(*table()),
                                                      lambda c: set_(c, "data.features", ["a", "zz"])),
     ["data.csv", "zz"], BOTH),
    ("csv-no-target-key", lambda t: csv_study(t, csv_text(*table()), lambda c: del_(c, "data.target")),
     ["data.target"], BOTH),
    ("csv-fractional-class-target", lambda t: csv_study(t, "a,b,y\n" + "".join(
        f"{i},{i % 3},{i % 3 + 0.5}\n" for i in range(30)),
                                                       lambda c: set_(c, "data.task", "classification")),
     ["data.csv", "fractional"], BOTH),
    ("npz-without-x", _npz_without_x, ["arr.npz", "'X'"], BOTH),
    ("npz-not-an-npz", lambda t: (t / "bad.npz").write_bytes(b"not a zip") and write_study(
        t, lambda c: c.__setitem__("data", {"source": "bad.npz"})), ["bad.npz"], BOTH),
    ("parquet-corrupt", lambda t: (t / "d.parquet").write_bytes(b"PAR1garbage") and write_study(
        t, lambda c: c.__setitem__("data", {"source": "d.parquet", "target": "y"})), ["d.parquet"], BOTH),
    ("csv-features-include-target", lambda t: csv_study(t, csv_text(*table()),
                                                       lambda c: set_(c, "data.features", ["a", "y"])),
     ["data.csv", "data.features", "'y'"], BOTH),
    ("csv-one-class-default-storage", lambda t: csv_study(t, csv_text(*table(n_classes=1))),
     ["data.csv", "one class"], ("run-nostorage",)),
    ("config-error-default-storage", lambda t: write_study(t, lambda c: set_(c, "train.epochs", "ten")),
     ["train.epochs"], ("run-nostorage",)),
    ("storage-in-file-malformed", lambda t: write_study(t, lambda c: set_(c, "storage", "results.db")),
     ["study.yaml", "storage", "results.db"], ("validate",)),
    ("storage-in-file-bad-scheme", lambda t: write_study(t, lambda c: set_(c, "storage", f"mysql://u:{SECRET}@h/db")),
     ["study.yaml", "storage", "mysql"], ("validate",)),
    ("artifacts-bad-scheme", lambda t: write_study(t, lambda c: set_(c, "artifacts", "ftp://host/models")),
     ["artifacts", "ftp"], BOTH),
    # --- storage (run only: validate does not open the storage)
    ("storage-pg-unreachable", lambda t: write_study(t), ["storage", "127.0.0.1"], ("run-pg",)),
    ("storage-pg-unreachable-in-file", lambda t: write_study(t, lambda c: set_(c, "storage", PG_UNREACHABLE)),
     ["storage", "127.0.0.1"], ("run-nostorage",)),
    ("storage-sqlite-folder-missing", lambda t: write_study(t), ["storage", "no_such_dir"], ("run-sqlite-missing",)),
    ("storage-unsupported-scheme",
     lambda t: write_study(t, lambda c: set_(c, "storage", "mysql://u:" + SECRET + "@h/db")),
     ["storage", "mysql"], ("run-nostorage",)),
    ("storage-not-a-url", lambda t: write_study(t, lambda c: set_(c, "storage", "results.db")),
     ["storage", "results.db"], ("run-nostorage",)),
    # --- flags
    ("n-trials-zero", lambda t: write_study(t), ["n_trials"], ("run-n-trials-0",)),
    ("epochs-zero", lambda t: write_study(t), ["epochs"], ("run-epochs-0",)),
    ("n-trials-override-on-bad-section", lambda t: write_study(t, lambda c: set_(c, "search", "fast")),
     ["search"], ("run-n-trials-2",)),
    ("workers-zero", lambda t: write_study(t), ["--workers"], ("run-workers-0",)),
    # --- a warm start from a study the storage does not hold (created the SQLite file and the study before)
    ("warm-start-missing-source",
     lambda t: write_study(t, lambda c: set_(c, "search.warm_start", {"study": "nosuch"})),
     ["search.warm_start.study", "nosuch"], ("run",)),
]

PARAMS = []
for cid, make, names, kinds in CASES:
    for kind in kinds:
        PARAMS.append(pytest.param(kind, make, names, id=f"{kind}-{cid}"))


@pytest.mark.parametrize("kind,make,names", PARAMS)
def test_bad_input_one_line_exit_2_nothing_written(kind, make, names, workdir, capsys):
    study = make(workdir)
    before = snapshot(workdir)
    db = workdir / "x.db"
    if kind in ("run", "validate"):
        rc, db = run_cli(kind, study, workdir)
    elif kind == "run-pg":
        rc = main(["run", str(study), "--storage", PG_UNREACHABLE, "--no-progress"])
    elif kind == "run-nostorage":
        rc = main(["run", str(study), "--no-progress"])
        db = workdir / "hpsearch.db"
    elif kind == "run-sqlite-missing":
        rc = main(["run", str(study), "--storage", f"sqlite:///{workdir}/no_such_dir/x.db", "--no-progress"])
    elif kind.startswith("run-"):
        flag, value = kind[4:].rsplit("-", 1)
        rc, db = run_cli("run", study, workdir, [f"--{flag}", value])
    else:  # pragma: no cover
        raise AssertionError(kind)
    if not names and kind in BOTH and study == workdir:
        names = [str(workdir)]
    assert_user_error(rc, capsys, names, folder=workdir, before=before, db=db)


def test_a_missing_warm_start_source_adds_no_study_to_an_existing_storage(workdir, capsys):
    study = write_study(workdir, lambda c: set_(c, "search.warm_start", {"study": "nosuch"}))
    url = f"sqlite:///{workdir / 'x.db'}"
    optuna.create_study(study_name="other", storage=url)
    rc = main(["run", str(study), "--storage", url, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "search.warm_start.study: no study 'nosuch'" in err
    assert optuna.get_all_study_names(url) == ["other"]


def test_unreachable_pg_message_redacts_password(workdir, capsys):
    study = write_study(workdir)
    before = snapshot(workdir)
    rc = main(["run", str(study), "--storage", PG_UNREACHABLE, "--no-progress", "--json"])
    line = assert_user_error(rc, capsys, ["storage", "unreachable"], folder=workdir, before=before)
    assert "***" in line and SECRET not in line


def test_storage_env_var_unreachable(workdir, capsys, monkeypatch):
    monkeypatch.setenv("HPSEARCH_STORAGE", PG_UNREACHABLE)
    study = write_study(workdir)
    before = snapshot(workdir)
    rc = main(["run", str(study), "--no-progress"])
    assert_user_error(rc, capsys, ["storage"], folder=workdir, before=before)


def test_validate_many_files_stops_at_the_bad_one(workdir, capsys):
    good = write_study(workdir, name="good.yaml")
    bad = write_study(workdir, lambda c: set_(c, "train.epochs", "ten"), name="bad.yaml")
    rc = main(["validate", str(good), str(bad)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "good.yaml: ok" in out
    assert err.count("\n") == 1 and "bad.yaml" in err and "train.epochs" in err


def test_validate_no_data_skips_the_data(workdir, capsys):
    study = write_study(workdir, lambda c: c.__setitem__("data", {"source": "missing.csv", "target": "y"}))
    assert main(["validate", "--no-data", str(study)]) == 0
    out, err = capsys.readouterr()
    assert "ok" in out and err == ""


def test_sqlite_refuses_several_workers_before_writing(workdir, capsys):
    study = write_study(workdir)
    before = snapshot(workdir)
    rc = main(["run", str(study), "--storage", f"sqlite:///{workdir}/x.db", "--workers", "2", "--no-progress"])
    assert_user_error(rc, capsys, ["SQLite", "PostgreSQL"], folder=workdir, before=before, db=workdir / "x.db")


@pytest.mark.parametrize("argv", [
    ["run", "x.yaml", "--n-trials", "two"],
    ["run", "x.yaml", "--epochs", "3.5"],
    ["run"],
    ["validate"],
    ["run", "x.yaml", "--colour", "red"],
])
def test_bad_flags_are_one_line_too(argv, capsys):
    """A bad flag is a user error like any other: one line naming the flag, exit code 2."""
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and "Traceback" not in out + err
    assert err.count("\n") == 1, f"stderr is not one line: {err!r}"
    assert "error" in err


@pytest.mark.parametrize("argv", [
    ["status", "x", "--top", "-1"],  # was taken, and showed every trial
    ["run", "x.yaml", "--top", "0"],
    ["predict", "x", "in.csv", "--mc", "0"],
])
def test_a_count_below_one_is_refused_naming_its_flag(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in out + err
    assert f"argument {argv[-2]}: expected a whole number of at least 1, got {argv[-1]!r}" in err


def test_argparse_errors_exit_2(capsys):
    assert main(["run"]) == 2
    assert main(["run", "x.yaml", "--n-trials", "two"]) == 2
    assert main(["frobnicate"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err


# --------------------------------------------------------------------------------------------------
# good files in the other formats pass validation (and round trip through the data layer)
# --------------------------------------------------------------------------------------------------


def test_validate_csv_parquet_npz_ok(workdir, capsys):
    import pandas as pd

    X, y = table(n=45, n_classes=3)
    labels = np.array(["cat", "dog", "eel"])[y]
    df = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": labels})
    df.to_csv(workdir / "d.csv", index=False)
    df.to_parquet(workdir / "d.parquet")
    np.savez(workdir / "d.npz", X=X, y=y)
    paths = []
    for src, extra in (("d.csv", {"target": "y"}), ("d.parquet", {"target": "y"}), ("d.npz", {})):
        paths.append(write_study(workdir, lambda c, s=src, e=extra: c.__setitem__("data", {"source": s, **e}),
                                 name=f"s-{src}.yaml"))
    rc = main(["validate", *map(str, paths)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.count(": ok") == 3
    assert out.count("45 rows x 2 features, classification, 3 classes") == 3


def test_python_api_overrides_are_validated_before_writing(workdir):
    """``run_study(cfg_object, n_trials=0)`` must fail like ``--n-trials 0`` does, before any write."""
    from hpsearch.errors import UserError
    from hpsearch.study.run import prepare_context
    from hpsearch.study.validate import load_study_config

    cfg = load_study_config(write_study(workdir))
    before = snapshot(workdir)
    with pytest.raises(UserError, match="n_trials"):
        prepare_context(cfg, storage=f"sqlite:///{workdir}/x.db", n_trials=0)
    db = workdir / "x.db"
    if db.exists():
        assert optuna.get_all_study_summaries(storage=f"sqlite:///{db}") == []
    assert snapshot(workdir) - before <= {"x.db"}


@pytest.mark.parametrize("engine,extra", [("optuna", []), ("random", ["--resume"])])
def test_a_parameter_of_another_kind_than_stored_is_refused_before_any_trial(workdir, capsys, engine, extra):
    """The optuna engine wrote a FAIL trial per ask (Optuna's storage refused the distribution) and
    ended naming no field; the random engine's --resume ended in a traceback. A range changed within
    its kind is still taken, as Optuna takes it."""
    study = write_study(workdir, lambda c: (set_(c, "search.engine", engine), set_(c, "train.epochs", 1),
                                            set_(c, "search.n_trials", 1)))
    url = f"sqlite:///{workdir}/x.db"
    assert main(["run", str(study), "--storage", url, "--no-progress"]) == 0
    capsys.readouterr()
    rc = main(["run", str(study), "--storage", url, "--no-progress", "--n-trials", "2", *extra,
               "--set", "space.n_neurons={choice: [4, 8]}"])
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in out + err, err
    assert "space: parameter 'n_neurons' was stored by study 'bad-input' as IntDistribution" in err
    assert [t.state.name for t in optuna.load_study(study_name="bad-input", storage=url).trials] == ["COMPLETE"]
    assert main(["run", str(study), "--storage", url, "--no-progress", "--n-trials", "2", *extra,
                 "--set", "space.n_neurons={int: [4, 6]}"]) == 0


# --------------------------------------------------------------------------------------------------
# run --set KEY=VALUE: any field of the study file, the rule lr-find's --set uses
# --------------------------------------------------------------------------------------------------


def test_run_set_overrides_any_field(workdir, capsys):
    study = write_study(workdir)
    url = f"sqlite:///{workdir}/x.db"
    rc = main(["run", str(study), "--storage", url, "--no-progress", "--set", "name=overridden",
               "--set", "search.n_trials=1", "--set", "train.epochs=1", "--set", "data.split.test=0.3",
               "--set", "model.fixed={activation: tanh}"])
    assert rc == 0, capsys.readouterr().err
    s = optuna.load_study(study_name="overridden", storage=url)
    assert len(s.trials) == 1
    from hpsearch.records import STUDY, TRIAL

    assert s.user_attrs[STUDY.DATA_SUMMARY]["test_rows"] == 45  # 30% of iris's 150 rows, not the file's 20%
    assert len(s.trials[0].user_attrs[TRIAL.HISTORY]["loss"]) == 1  # one epoch, not the file's 2
    # the stored study file is the one that ran (load_split, report and workers read it back)
    import yaml

    stored = yaml.safe_load(s.user_attrs[STUDY.CONFIG])
    assert stored["data"]["split"]["test"] == 0.3 and stored["model"]["fixed"] == {"activation": "tanh"}


@pytest.mark.parametrize(("item", "names"), [
    ("train.epochz=3", ["train.epochz", "unknown key"]),
    ("train.epochs.x=3", ["train.epochs.x", "not a section"]),
    ("train.epochs=many", ["train.epochs"]),
    ("nokey", ["--set nokey", "NAME=VALUE"]),
])
def test_run_set_bad_key_is_one_line_exit_2(workdir, capsys, item, names):
    study = write_study(workdir)
    before = snapshot(workdir)
    rc = main(["run", str(study), "--storage", f"sqlite:///{workdir}/x.db", "--no-progress", "--set", item])
    assert_user_error(rc, capsys, names, folder=workdir, before=before, db=workdir / "x.db")
