"""Full validation of a study: schema, then engine, builder, data source, metric and storage checks;
reading study files and applying overrides. Every problem is one line naming the field and the fix."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from study_dicts import MINIMAL, one_line_error, with_

from hpsearch.errors import ConfigError
from hpsearch.spec.config import StudyConfig
from hpsearch.study.validate import apply_overrides, load_study_config, parse_study_config


def parse(d: dict, **kw) -> StudyConfig:
    return parse_study_config(d, where="s.yaml", **kw)


def err(d, **kw) -> str:
    return one_line_error(parse, d, **kw)


def test_a_valid_study_passes_every_check():
    cfg = parse(MINIMAL)
    assert cfg.search.n_trials == 3 and cfg.search_space().names == ["n_neurons"]


def test_validation_leaves_the_budget_as_given():
    """No engine default is written into the config (it is frozen once validated)."""
    cfg = parse(with_(MINIMAL, search={"engine": "random", "n_trials": None}))
    assert cfg.search.n_trials is None
    assert parse(with_(MINIMAL, search={"engine": "optuna", "n_trials": None, "timeout": 60})).search.timeout == 60


@pytest.mark.parametrize("data,fragment", [
    # the schema comes first
    (with_(MINIMAL, search={"sampler": "bayes"}), "search.sampler: unknown value 'bayes'; use one of"),
    (with_(MINIMAL, extra=1), "extra: unknown key; remove it"),
    # the space
    (with_(MINIMAL, space={"n_neurons": {"int": [9, 1]}}), "space.n_neurons: low 9 > high 1"),
    (with_(MINIMAL, space={"lr": {"float": [0, 1], "log": True}}), "space.lr: a log range needs low > 0"),
    (with_(MINIMAL, space={"act": {"choice": []}}), "space.act: the choice list is empty"),
    (with_(MINIMAL, space={"n_neurons": {"int": [1.5, 3]}}), "space.n_neurons: int range needs int numbers"),
    (with_(MINIMAL, model={"fixed": {"n_neurons": 2}}), "space.n_neurons: is both searched and fixed"),
    # the engine (Engine.check)
    (with_(MINIMAL, search={"n_trials": None}), "search: give n_trials or timeout"),
    (with_(MINIMAL, search={"engine": "grid"}, space={"learning_rate": {"float": [0.1, 1.0]}}),
     "space.learning_rate: a grid search needs"),
    (with_(MINIMAL, search={"sampler": "grid", "n_trials": None}, space={"learning_rate": {"float": [0.1, 1.0]}}),
     "space.learning_rate: a grid search needs"),
    (with_(MINIMAL, search={"sampler": "cmaes"}, space={"activation": {"choice": ["relu", "elu"]}}),
     "search.sampler: cmaes needs numeric ranges"),
    # the data source
    (with_(MINIMAL, data={"source": "sklearn:mnist"}), "data.source: unknown dataset 'mnist'"),
    (with_(MINIMAL, data={"source": "d.txt"}), "data.source: 'd.txt' is not .csv"),
    (with_(MINIMAL, data={"source": "d.csv"}), "data.target: required for .csv files"),
    # the metric against a declared task
    (with_(MINIMAL, data={"source": "sklearn:iris", "task": "regression"}, search={"metric": "accuracy"}),
     "search.metric: accuracy needs a classification target"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "task": "classification"}, search={"metric": "rmse"}),
     "search.metric: rmse needs a regression target"),
    # the builder
    (with_(MINIMAL, space={"wings": {"int": [1, 3]}}), "space.wings: unknown parameter for builder mlp"),
    (with_(MINIMAL, model={"fixed": {"wings": 2}}), "model.fixed.wings: unknown parameter"),
    (with_(MINIMAL, model={"builder": "rnn"}), "model.builder: 'rnn'"),
    (with_(MINIMAL, model={"builder": "no_such_module_q:build"}), "model.builder: cannot import"),
    # storage and artifacts are well-formed
    (with_(MINIMAL, storage="hpsearch.db"), "storage 'hpsearch.db' is not a URL"),
    (with_(MINIMAL, storage="mysql://u:secret@h/db"), "unsupported scheme"),
    (with_(MINIMAL, artifacts="ftp://u:secret@h/x"), "artifacts: 'ftp://u:***@h/x' has an unsupported scheme"),
])
def test_errors_name_the_field(data, fragment):
    msg = err(data)
    assert fragment in msg, msg
    assert "secret" not in msg


def test_user_builder_parameters_are_checked(tmp_path, monkeypatch):
    (tmp_path / "hps_cfg_builders.py").write_text(textwrap.dedent("""
        def build(width=4, depth=1, meta=None):
            return None

        def build_any(**kwargs):
            return None
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ok = parse(with_(MINIMAL, model={"builder": "hps_cfg_builders:build"}, space={"width": {"int": [1, 8]}}))
    assert ok.model.builder == "hps_cfg_builders:build"
    assert "space.n_neurons: unknown parameter for builder hps_cfg_builders:build" in err(
        with_(MINIMAL, model={"builder": "hps_cfg_builders:build"}))
    # a builder taking **kwargs accepts anything
    parse(with_(MINIMAL, model={"builder": "hps_cfg_builders:build_any", "fixed": {"anything": 1}}))
    assert "model.builder: module 'hps_cfg_builders' has no function 'nope'" in err(
        with_(MINIMAL, model={"builder": "hps_cfg_builders:nope"}))
    sys.modules.pop("hps_cfg_builders", None)


@pytest.mark.parametrize("fixed, space, field", [
    ({"optimizer": "adamm"}, {"n_neurons": {"int": [1, 4]}}, "model.fixed.optimizer"),
    ({}, {"activation": {"choice": ["relu", "rleu"]}}, "space.activation"),
    ({"kernel_initializer": "he_normel"}, {"n_neurons": {"int": [1, 4]}}, "model.fixed.kernel_initializer"),
    ({"loss": "hubber"}, {"n_neurons": {"int": [1, 4]}}, "model.fixed.loss"),
])
def test_mlp_named_values_are_checked(fixed, space, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.") + ": unknown value"):
        parse_study_config({"name": "x", "data": {"source": "sklearn:iris"}, "model": {"fixed": fixed},
                            "space": space, "search": {"engine": "optuna", "n_trials": 1}})


def test_min_resource_above_epochs_is_refused():
    with pytest.raises(ConfigError, match=r"search\.min_resource: 9 epochs > train\.epochs 5"):
        parse_study_config({"name": "x", "data": {"source": "sklearn:iris"}, "space": {"n_neurons": {"int": [1, 4]}},
                            "train": {"epochs": 5}, "search": {"engine": "halving", "min_resource": 9}})


# --- files and overrides -------------------------------------------------------------------------

def test_load_keeps_source_text_and_applies_overrides(tmp_path):
    text = yaml.safe_dump(MINIMAL)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    cfg = load_study_config(p, {"search.n_trials": 2, "train.epochs": 3})
    assert cfg.search.n_trials == 2 and cfg.train.epochs == 3
    assert cfg.to_yaml() == text and cfg.base_dir == str(tmp_path)
    # an override of None is YAML's null, as in the file (the CLI and run_study leave out options not given)
    assert load_study_config(p, {"train.early_stopping": None}).train.early_stopping is None
    assert load_study_config(p).train.early_stopping is not None


def test_a_set_of_null_or_of_nothing_is_applied_not_dropped(tmp_path):
    """--set KEY=null turns a field off as the same line in the file does, and --set KEY= on a key
    the study has no field for is refused naming it (both were dropped silently: None meant "not given")."""
    from hpsearch.cli import _overrides, build_parser

    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(MINIMAL))
    a = build_parser().parse_args(["run", str(p), "--set", "train.early_stopping=null"])
    assert _overrides(a) == {"train.early_stopping": None}  # --n-trials / --epochs not given: left out
    assert load_study_config(p, _overrides(a)).train.early_stopping is None
    a = build_parser().parse_args(["run", str(p), "--set", "train.bogus=", "--n-trials", "2"])
    assert _overrides(a) == {"search.n_trials": 2, "train.bogus": None}
    with pytest.raises(ConfigError, match=r"train\.bogus"):
        load_study_config(p, _overrides(a))


def test_override_on_a_section_that_is_not_a_mapping_is_a_config_error(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(with_(MINIMAL, search="fast")))
    with pytest.raises(ConfigError, match=r"search: must be a mapping"):
        load_study_config(p, {"search.n_trials": 2})
    p.write_text(yaml.safe_dump(with_(MINIMAL, train=[1, 2])))
    with pytest.raises(ConfigError, match=r"train: must be a mapping"):
        load_study_config(p, {"train.epochs": 2})


def test_override_error_says_it_came_from_the_command_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match=r"search.n_trials: .*got 0 from the command line"):
        load_study_config(p, {"search.n_trials": 0})


@pytest.mark.parametrize("text,fragment", [
    ("name: [unclosed\n", "YAML syntax error at line"),
    ("\tname: x\n", "YAML syntax error"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("just a string\n", "must be a YAML mapping"),
    ("", "got an empty file"),
    ("name: !!python/object:os.system x\n", "YAML"),  # safe_load refuses python tags
    # a key written twice: PyYAML keeps the last, dropping the first block's settings silently
    ("name: x\ntrain: {epochs: 3, batch_size: 8}\ntrain: {epochs: 5}\n",
     "line 3: 'train' is given twice (lines 2 and 3); keep one"),
    ("name: x\ntrain:\n  epochs: 3\n  epochs: 4\n", "'epochs' is given twice"),
])
def test_load_file_level_errors(tmp_path, text, fragment):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_study_config(p)
    msg = str(ei.value)
    assert msg.startswith(str(p)) and fragment in msg and "\n" not in msg


def test_load_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="study file not found; check the path"):
        load_study_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_study_config(tmp_path)


def test_apply_overrides_validates_and_keeps_everything_else(tmp_path):
    p = tmp_path / "s.yaml"
    text = yaml.safe_dump(with_(MINIMAL, train={"early_stopping": None}, search={"metric": "val_accuracy"}))
    p.write_text(text)
    cfg = load_study_config(p)
    new = apply_overrides(cfg, {"search.n_trials": 2, "train.epochs": 3, "search.timeout": None})
    assert new.search.n_trials == 2 and new.train.epochs == 3 and new.search.metric == "accuracy"
    assert new.train.early_stopping is None  # disabled stays disabled
    assert new.base_dir == str(tmp_path) and new.to_yaml() == text
    assert cfg.search.n_trials == 3  # the original is untouched
    with pytest.raises(ConfigError, match=r"search.n_trials: .*got 0 from the command line"):
        apply_overrides(cfg, {"search.n_trials": 0})
    with pytest.raises(ConfigError, match=r"train.epochs"):
        apply_overrides(cfg, {"train.epochs": -5})
    with pytest.raises(ConfigError, match=r"^study m: search.min_resource"):
        apply_overrides(apply_overrides(cfg, {"search.min_resource": 3}), {"train.epochs": 2})


def test_importing_the_validation_layers_loads_no_tensorflow():
    code = ("import sys, hpsearch.spec.config, hpsearch.study.validate, hpsearch.data.sources.base,"
            " hpsearch.data.prepare;"
            " print([m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'torch')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- issue 13: bad input that got through or crashed: one line, exit 2, nothing written, fast ------

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean current folder (so a default ./hpsearch.db or artifact folder would show up)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("HPSEARCH_ARTIFACTS", raising=False)
    return tmp_path


def _bomb(levels: int = 9) -> str:
    """A "billion laughs" alias bomb used as a choice list: a few lines, 10**levels values."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefghijkl", "bcdefghijklm"[:levels - 1]):
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 10)}]")
    last = "abcdefghijklm"[levels - 1]
    return "defs:\n" + "".join(f"  {line}\n" for line in lines) + f"space: {{n_hidden: {{choice: *{last}}}}}\n"


_HEAD = "name: bad\ndata: {source: 'sklearn:iris'}\nsearch: {n_trials: 2}\n"
BAD_FILES = {
    "zero-width": (_HEAD + "space: {n_neurons: {int: [0, 0]}}\n",
                   "space.n_neurons: must be an integer in [1, 65536], got 0; change the value to fit"),
    "negative-depth": (_HEAD + "model: {fixed: {n_hidden: -2}}\nspace: {n_neurons: {int: [1, 4]}}\n",
                       "model.fixed.n_hidden: must be an integer in [0, 1000], got -2"),
    "huge-width": (_HEAD + "space: {n_neurons: {int: [1, 1000000000000]}}\n",
                   "space.n_neurons: must be an integer in [1, 65536], got 1000000000000"),
    "dropout-above-1": (_HEAD + "space: {dropout: {float: [0.0, 1.5]}}\n",
                        "space.dropout: must be a number in [0, 1), got 1.5"),
    "mixed-choices": (_HEAD + "space: {n_hidden: {choice: [1, two, 3]}}\n",
                      "space.n_hidden: choices mix numbers and strings; give choices of one type"),
    "widening-funnel": (_HEAD + "model: {fixed: {funnel: 8.0, n_hidden: 9}}\nspace: {n_neurons: {int: [8, 64]}}\n",
                        "model.fixed.funnel: funnel 8 widens 64 units over 9 hidden layers beyond 65536 units"),
    "alias-bomb": (_HEAD + _bomb(), "defs.d[7]: the file stands for more than 10000 values"),
    "recursive-alias": (_HEAD + "space: &s {n_hidden: {choice: [*s]}}\n", "an alias refers to a mapping or list"),
    "nested-30000-deep": (_HEAD + "space: " + "[" * 30_000 + "]" * 30_000 + "\n",
                          "line 4: nested deeper than 64 levels; remove the extra nesting"),
    "block-nested-deep": (_HEAD + "space:\n" + "".join(" " * i + "a:\n" for i in range(1, 100)),
                          "nested deeper than 64 levels"),
    "50-MB": (_HEAD + "space: {n_hidden: {choice: [" + "1, " * (50 * 2**20 // 3) + "1]}}\n",
              "the study file is larger than 65536 bytes; keep only settings in it"),
    "20000-digit-number": (_HEAD + "space: {n_hidden: {int: [1, 1" + "0" * 20_000 + "]}}\n",
                           "a value cannot be read (Exceeds the limit"),
    "control-character": (_HEAD + "description: \"\x07\"\n\x00", "YAML syntax error"),
    "seed-beyond-32-bits": (_HEAD.replace("n_trials: 2", "n_trials: 2, seed: 4294967296")
                            + "space: {n_hidden: {int: [1, 2]}}\n", "search.seed: Input should be less than"),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_study_files_are_one_line_exit_2_nothing_written_in_a_second(case, command, workdir, capsys):
    from cli_helpers import assert_user_error, run_cli, snapshot

    text, fragment = BAD_FILES[case]
    study = workdir / "study.yaml"
    study.write_bytes(text.encode("utf-8"))
    before = snapshot(workdir)
    start = time.process_time()
    rc, db = run_cli(command, study, workdir)
    spent = time.process_time() - start  # CPU seconds: the shared CI cores make wall time noisy
    line = assert_user_error(rc, capsys, [fragment], folder=workdir, before=before, db=db)
    assert line.startswith(f"hpsearch: error: {study}: "), line
    assert spent < 1.0, f"{spent:.2f} CPU s"


def test_the_alias_bomb_is_refused_before_it_is_expanded():
    """Bounded memory: the composer stops at MAX_NODES, long before 10**9 values exist."""
    import tracemalloc

    from hpsearch.spec.studyfile import MAX_NODES, read_study_yaml

    path = Path(tempfile.mkdtemp()) / "bomb.yaml"
    path.write_text(_HEAD + _bomb(), encoding="utf-8")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=f"more than {MAX_NODES} values"):
            read_study_yaml(path, "bomb.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak


def test_every_value_a_range_can_take_is_checked_and_good_ranges_pass():
    ok = with_(MINIMAL, space={"n_neurons": {"int": [1, 65536]}, "dropout": {"float": [0.0, 0.99]},
                               "max_norm": {"choice": [None, 3.0]},
                               "learning_rate": {"float": [1e-4, 1.0], "log": True}},
               model={"fixed": {"batch_norm": True, "metrics": ["accuracy"], "jit_compile": "auto"}})
    assert parse(ok).search_space().names == ["n_neurons", "dropout", "max_norm", "learning_rate"]
    # the top of a stepped range is its last reachable value
    parse(with_(MINIMAL, space={"n_neurons": {"int": [1, 65540], "step": 65535}}))
    for space, fixed, fragment in [
        ({"n_neurons": {"float": [1, 8]}}, {}, "space.n_neurons: must be an integer in [1, 65536], got 1.0"),
        ({"batch_norm": {"int": [0, 1]}}, {}, "space.batch_norm: must be true or false, got 0"),
        ({"activation": {"int": [0, 1]}}, {}, "space.activation: unknown value 0; use one of relu"),
        ({"learning_rate": {"float": [0.0, 0.1]}}, {}, "space.learning_rate: must be a number > 0, got 0.0"),
        ({"momentum": {"choice": [0.5, 1.0]}}, {}, "space.momentum: must be a number in [0, 1), got 1.0"),
        ({"n_neurons": {"int": [1, 4]}}, {"n_hidden": 2.0}, "model.fixed.n_hidden: must be an integer in [0, 1000]"),
        ({"n_neurons": {"int": [1, 4]}}, {"l2": float("nan")}, "model.fixed.l2: must be a number >= 0, got nan"),
        ({"n_neurons": {"int": [1, 4]}}, {"metrics": ["accuracy", "f1"]}, "model.fixed.metrics: unknown value 'f1'"),
        ({"n_neurons": {"int": [1, 4]}}, {"jit_compile": 1},
         "model.fixed.jit_compile: must be one of auto, true, false"),
        ({"n_neurons": {"int": [1, 4]}}, {"loss": 3}, "model.fixed.loss: unknown value 3; use one of mse, mae, huber"),
        ({"n_neurons": {"int": [1, 2**63]}}, {}, "space.n_neurons: low, high and step must fit in 64 bits"),
    ]:
        assert fragment in err(with_(MINIMAL, space=space, model={"fixed": fixed})), fragment


def test_choices_of_one_type_with_null_beside_them_pass():
    parse(with_(MINIMAL, space={"lr_schedule": {"choice": [None, "cosine"]}, "learning_rate": {"choice": [1, 0.5]}}))
    assert "space.batch_norm: choices mix booleans and numbers" in err(
        with_(MINIMAL, space={"batch_norm": {"choice": [True, 0]}}))


def test_a_builder_with_meta_and_catch_all_params_passes_validation(tmp_path, monkeypatch):
    """``def build(meta=None, **params)`` takes any parameter (the run side: test_sklearn_search)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    cfg = parse(with_(MINIMAL, model={"builder": "hps_user_builders:build_meta_params"},
                      space={"width": {"int": [2, 8]}}, search={"engine": "random"}))
    assert cfg.model.builder == "hps_user_builders:build_meta_params"


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_an_artifact_store_that_cannot_be_written_is_refused_before_the_database(where, workdir, capsys):
    from cli_helpers import assert_user_error, run_cli, snapshot

    study = workdir / "study.yaml"
    study.write_text(yaml.safe_dump(with_(MINIMAL, train={"epochs": 1})), encoding="utf-8")
    (workdir / "a-file").write_text("x")
    folder = "/proc/hpsearch-no-such-store" if where == "proc" else str(workdir / "a-file" / "models")
    before = snapshot(workdir)
    rc, db = run_cli("run", study, workdir, ["--artifacts", folder])
    line = assert_user_error(rc, capsys, ["artifact store", folder, "--artifacts"], folder=workdir, before=before,
                             db=db)
    assert not db.exists(), line


@pytest.mark.parametrize("field,value", [("search.n_trials", True), ("train.epochs", True),
                                         ("search.keep_models", True), ("search.timeout", True),
                                         ("data.split.seed", False)])
def test_a_boolean_is_not_read_as_a_number(tmp_path, field, value):
    """``epochs: true`` (or YAML's ``yes``) was read as 1 by pydantic's lax mode: a run of one epoch."""
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: .*expected a number, got {str(value).lower()}"):
        load_study_config(p, {field: value})
    assert load_study_config(p, {"train.early_stopping.restore_best_weights": False}).train.early_stopping


@pytest.mark.parametrize("value", ["big", 0, -2, False])
def test_a_bad_pack_names_the_field_and_every_accepted_form(tmp_path, value):
    """Was ``train.pack.literal['auto']: unknown value 'big'; use one of 'auto'`` (pydantic's union path)."""
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match=rf"train\.pack: must be auto or an integer >= 1, got {value!r}; give auto"):
        load_study_config(p, {"train.pack": value})
