"""Property-based tests of the study-file validator (Hypothesis).

Generated study files (random keys, types, values and nesting; mostly-right studies with one thing
wrong; raw YAML with aliases, tags and deep nesting) go through ``hpsearch validate`` in process,
the entry the command line uses. Each either validates or is refused with exit code 2 and one line
on stderr; no other exception, nothing written, no example past its deadline. A few generated
studies that validate then run one trial end to end (``hpsearch run``, one epoch).

Each test prints a summary line (``pytest -s`` shows it): how many generated studies were tried,
how many were refused, and the time.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from contextlib import redirect_stderr
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpsearch import cli
from hpsearch.models.builders import COMPILE_SPECS
from hpsearch.models.mlp import MLP_SPECS

#: every parameter the built-in builder takes, and a few it does not
PARAM_NAMES = sorted({*MLP_SPECS, *COMPILE_SPECS, "wings", "lr"})
NAMES = ["relu", "tanh", "adam", "sgd", "cosine", "mse", "huber", "accuracy", "auto", "he_normal", "bogus"]

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
_ints = st.one_of(st.integers(-3, 40), st.integers(-(10**13), 10**13), st.sampled_from([2**63, 10**30]))
_floats = st.one_of(st.floats(-2.0, 2.0), st.floats(allow_nan=True, allow_infinity=True))
SCALARS = st.one_of(st.none(), st.booleans(), _ints, _floats, st.sampled_from(NAMES), _text)
#: any YAML value: scalars, lists and mappings, nested
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(NAMES), _text), inner, max_size=3),
), max_leaves=10)


def _range(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    ends = _ints if kind == "int" else st.one_of(_floats, _ints)
    extra = {"int": ("step", "log"), "float": ("log", "grid")}[kind]
    return st.fixed_dictionaries(
        {kind: st.one_of(st.lists(ends, min_size=2, max_size=2), VALUES)},
        optional={k: st.one_of(st.booleans(), _ints, SCALARS) for k in extra},
    )


PARAM_SPECS = st.one_of(
    _range("int"), _range("float"),
    st.fixed_dictionaries({"choice": st.one_of(st.lists(SCALARS, min_size=1, max_size=4), VALUES)}),
    VALUES,  # anything else in place of a parameter
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``, sometimes any value at all in its place."""
    return st.one_of(strategy, strategy, strategy, VALUES)


SECTIONS = {
    "name": _maybe(st.sampled_from(["s", "study-1", "bad name!", ""])),
    "data": _maybe(st.fixed_dictionaries(
        {"source": _maybe(st.sampled_from(["sklearn:iris", "sklearn:wine", "sklearn:nope", "missing.csv"]))},
        optional={"task": _maybe(st.sampled_from(["auto", "classification", "regression"])),
                  "split": _maybe(st.fixed_dictionaries({}, optional={
                      "valid": _floats, "test": _floats, "seed": _ints})),
                  "max_rows": _ints, "scale": _maybe(st.sampled_from(["standard", "none"]))},
    )),
    "model": _maybe(st.fixed_dictionaries({}, optional={
        "builder": _maybe(st.sampled_from(["mlp", "cnn", "no_such_module:f"])),
        "fixed": _maybe(st.dictionaries(st.sampled_from(PARAM_NAMES), SCALARS, max_size=3)),
    })),
    "space": _maybe(st.dictionaries(st.sampled_from(PARAM_NAMES), PARAM_SPECS, max_size=3)),
    "train": _maybe(st.fixed_dictionaries({}, optional={
        k: _maybe(_ints) for k in ("epochs", "batch_size", "steps_per_execution", "verbose")})),
    "search": _maybe(st.fixed_dictionaries({}, optional={
        "engine": _maybe(st.sampled_from(["optuna", "random", "grid", "halving", "bayes"])),
        "n_trials": _ints, "seed": _ints, "cv": _ints, "timeout": _floats,
        "sampler": _maybe(st.sampled_from(["tpe", "random", "grid", "cmaes", "gp", "nope"])),
        "pruner": _maybe(st.sampled_from(["hyperband", "median", "none", "nope"])),
        "metric": _maybe(st.sampled_from(["accuracy", "val_rmse", "f1"])),
    })),
    "storage": st.sampled_from(["sqlite:///x.db", "mysql://u:p@h/db", "hpsearch.db"]),
    "artifacts": st.sampled_from(["art", "ftp://h/x", "s3://"]),
    "extra": VALUES,
}


def _subset(values: list[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=3, unique=True).map(lambda c: {"choice": c})


def _pair(strategy: st.SearchStrategy[Any], kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(strategy, strategy).map(lambda t: {kind: sorted(t)})


#: valid studies for the end-to-end sample: the built-in builder's parameters within their ranges,
#: 60 rows of iris, one epoch, one trial
RUNNABLE = st.fixed_dictionaries({
    "name": st.just("prop-run"),
    "data": st.just({"source": "sklearn:iris", "max_rows": 60}),
    "space": st.fixed_dictionaries({}, optional={
        "n_hidden": st.one_of(_pair(st.integers(0, 2), "int"), _subset([0, 1, 2])),
        "n_neurons": _pair(st.integers(1, 16), "int"),
        "dropout": _pair(st.floats(0.0, 0.9), "float"),
        "activation": _subset(["relu", "tanh", "selu", "gelu"]),
        "optimizer": _subset(["adam", "sgd", "rmsprop", "nesterov"]),
    }).filter(bool),
    "train": st.just({"epochs": 1, "batch_size": 16, "early_stopping": None}),
    "search": st.fixed_dictionaries({"engine": st.sampled_from(["optuna", "random"]), "n_trials": st.just(1)},
                                    optional={"cv": st.just(2)}),
})


@st.composite
def study_dicts(draw: st.DrawFn) -> Any:
    """A valid study with 0 to 3 things changed at random (a section, a parameter, a fixed value,
    a key removed or added), or now and then any value at all."""
    if draw(st.integers(0, 19)) == 0:
        return draw(VALUES)
    study = draw(RUNNABLE)
    study["search"]["engine"] = draw(st.sampled_from(["optuna", "random", "grid", "halving"]))
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["section", "param", "fixed", "drop", "key"]))
        if what == "section":
            name = draw(st.sampled_from(sorted(SECTIONS)))
            study[name] = draw(SECTIONS[name])
        elif what in ("param", "fixed") and isinstance(study.get("space"), dict):
            name = draw(st.sampled_from(PARAM_NAMES))
            if what == "param":
                study["space"][name] = draw(PARAM_SPECS)
            elif isinstance(study.setdefault("model", {}), dict) and isinstance(
                    study["model"].setdefault("fixed", {}), dict):
                study["model"]["fixed"][name] = draw(SCALARS)
                study["space"].pop(name, None)
        elif what == "drop":
            study.pop(draw(st.sampled_from(sorted(study))), None)
        else:
            study[draw(st.one_of(st.sampled_from(NAMES), _text))] = draw(VALUES)
    return study


#: raw YAML: the file-level hazards (aliases, recursion, depth, tags, huge numbers, bad bytes)
RAW_YAML = st.one_of(
    st.integers(1, 12).map(lambda n: "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefghijklm", "bcdefghijklmn"[:n])
    ) + "name: s\ndata: {source: 'sklearn:iris'}\nspace: {n_hidden: {choice: *a}}\n"),
    st.integers(1, 30_000).map(lambda n: "name: s\nspace: " + "[" * n + "]" * n + "\n"),
    st.integers(1, 200).map(lambda n: "name: s\nspace:\n" + "".join(" " * i + "a:\n" for i in range(1, n))),
    st.sampled_from([
        "a: &a [*a]\n", "name: !!python/object/apply:os.system [echo]\n", "n: 1" + "0" * 5000 + "\n",
        "when: 2001-13-45\n", "{[1]: 2}\n", "name: s\nname: t\n", "\x00\x01", "- a\n- b\n", "",
        "name: s\ndata: {source: 'sklearn:iris'}\nspace: {n_neurons: {int: [1, 1000000000000]}}\n",
    ]),
    st.text(st.sampled_from("{}[]:,-&*!?|>'\" \nab1"), max_size=60),
)


def _validate(text: str | bytes, folder: Path, tried: Counter[str]) -> int:
    """The property for one study file: exit 0, or exit 2 with one line on stderr; nothing written."""
    study = folder / "study.yaml"
    study.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    before = sorted(os.listdir(folder))
    err_path = folder.parent / "stderr.txt"
    with open(err_path, "w+", encoding="utf-8") as err, redirect_stderr(err):
        rc = cli.main(["validate", str(study)])
        err.seek(0)
        lines = err.read().splitlines()
    assert rc in (0, 2), (rc, lines)
    assert sorted(os.listdir(folder)) == before, "validate wrote a file"
    if rc == 2:
        assert len(lines) == 1 and lines[0].startswith("hpsearch: error: "), lines
        tried["refused"] += 1
    else:
        assert lines == [], lines
        tried["valid"] += 1
    return rc


def _dump(study: Any) -> str:
    return yaml.safe_dump(study, sort_keys=False, allow_unicode=True)


def _report(what: str, tried: Counter[str], start: float) -> None:
    print(f"\nvalidator property ({what}): {tried['valid'] + tried['refused']} generated studies tried,"
          f" {tried['refused']} refused in one line, {tried['valid']} valid, {time.monotonic() - start:.1f} s")


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Import what validation imports once, so that the first example's deadline is not its imports."""
    folder = tmp_path_factory.mktemp("warm")
    for engine in ("optuna", "random"):
        _validate(_dump({"name": "w", "data": {"source": "sklearn:iris"}, "space": {"n_hidden": {"int": [1, 2]}},
                         "search": {"engine": engine, "n_trials": 1}}), folder, Counter())
    return folder


_FAST = settings(max_examples=150, deadline=timedelta(seconds=5), database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def test_generated_studies_validate_or_are_refused_in_one_line(warm, tmp_path):
    tried: Counter[str] = Counter()
    start = time.monotonic()

    @_FAST
    @given(study=study_dicts())
    def check(study: Any) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            _validate(_dump(study), Path(d), tried)

    check()
    _report("study mappings", tried, start)
    assert tried["refused"] > 0 and tried["valid"] > 0  # the generator reaches both sides


def test_generated_yaml_files_validate_or_are_refused_in_one_line(warm, tmp_path):
    tried: Counter[str] = Counter()
    start = time.monotonic()

    @settings(_FAST, max_examples=80)
    @given(text=RAW_YAML)
    def check(text: str) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            _validate(text, Path(d), tried)

    check()
    _report("raw YAML", tried, start)
    assert tried["refused"] > 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # TensorFlow raises the recursion limit
def test_a_sample_of_valid_generated_studies_runs_one_trial(warm, tmp_path):
    tried: Counter[str] = Counter()
    start = time.monotonic()

    @settings(max_examples=2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(study=RUNNABLE)
    def check(study: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as d:
            folder = Path(d)
            assert _validate(_dump(study), folder, tried) == 0
            err_path = folder.parent / "run-stderr.txt"
            with open(err_path, "w+", encoding="utf-8") as err, redirect_stderr(err):
                rc = cli.main(["run", str(folder / "study.yaml"), "--storage", f"sqlite:///{folder}/s.db",
                               "--no-progress", "--json"])
                err.seek(0)
                lines = err.read().splitlines()
            assert rc == 0, (study, lines)
            tried["ran"] += 1

    check()
    _report("valid, one trial each", tried, start)
    assert tried["ran"] >= 1
