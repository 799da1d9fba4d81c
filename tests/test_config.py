"""The study file schema: defaults, derived values, overrides and one-line errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from hpsearch.config import (
    METRICS,
    StudyConfig,
    apply_overrides,
    load_study_config,
    metric_problem,
    parse_study_config,
)
from hpsearch.errors import ConfigError, UserError

MINIMAL = {"name": "m", "data": {"source": "sklearn:iris"}, "space": {"n_neurons": {"int": [1, 4]}},
           "search": {"n_trials": 3}}


def parse(d: dict, **kw) -> StudyConfig:
    return parse_study_config(d, where="s.yaml", **kw)


def err(d, **kw) -> str:
    with pytest.raises(ConfigError) as ei:
        parse(d, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("s.yaml: ")
    return msg


def with_(base: dict, **sections) -> dict:
    out = yaml.safe_load(yaml.safe_dump(base))
    for k, v in sections.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space":  # space: replaced
            out[k].update(v)
        else:
            out[k] = v
    return out


def test_defaults():
    cfg = parse(MINIMAL)
    assert cfg.model.builder == "mlp" and cfg.model.fixed == {}
    assert cfg.data.split.valid == 0.2 and cfg.data.split.test == 0.2 and cfg.data.split.seed == 0
    assert cfg.data.scale == "standard" and cfg.data.task == "auto"
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 32 and cfg.train.early_stopping.patience == 10
    assert cfg.search.engine == "optuna" and cfg.search.sampler == "tpe" and cfg.search.pruner == "hyperband"
    assert cfg.storage is None and cfg.data_path() is None
    assert cfg.search_space().names == ["n_neurons"]


def test_sklearn_engines_default_budget():
    cfg = parse(with_(MINIMAL, search={"engine": "random", "n_trials": None}))
    assert cfg.search.n_trials == 10
    assert parse(with_(MINIMAL, search={"engine": "optuna", "n_trials": None, "timeout": 60})).search.timeout == 60


def test_metric_prefix_val_is_accepted():
    assert parse(with_(MINIMAL, search={"metric": "val_accuracy"})).search.metric == "accuracy"
    assert set(METRICS) >= {"accuracy", "auc", "loss", "mse", "mae", "rmse", "r2"}


def test_relative_data_path_starts_at_the_study_file(tmp_path):
    cfg = parse(with_(MINIMAL, data={"source": "sub/d.csv", "target": "y"}), base_dir=str(tmp_path))
    assert cfg.data_path() == tmp_path / "sub" / "d.csv"
    cfg = parse(with_(MINIMAL, data={"source": "/abs/d.npz"}), base_dir=str(tmp_path))
    assert cfg.data_path() == Path("/abs/d.npz")


def test_load_keeps_source_text_and_applies_overrides(tmp_path):
    text = yaml.safe_dump(MINIMAL)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    cfg = load_study_config(p, {"search.n_trials": 2, "train.epochs": 3})
    assert cfg.search.n_trials == 2 and cfg.train.epochs == 3
    assert cfg.to_yaml() == text and cfg.base_dir == str(tmp_path)
    # None means "not given"
    assert load_study_config(p, {"search.n_trials": None}).search.n_trials == 3


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


def test_to_yaml_without_source_text_round_trips():
    cfg = parse(with_(MINIMAL, model={"fixed": {"activation": "elu"}}))
    again = parse(yaml.safe_load(cfg.to_yaml()))
    assert again.model_dump() == cfg.model_dump()


@pytest.mark.parametrize("data,fragment", [
    ([1, 2], "must be a YAML mapping"),
    (None, "got an empty file"),
    (with_(MINIMAL, extra=1), "extra: unknown key; remove it"),
    (with_(MINIMAL, train={"epoch": 3}), "train.epoch: unknown key"),
    (with_(MINIMAL, train={"early_stopping": {"patiense": 3}}), "allowed keys in train.early_stopping: patience"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "split": {"vaild": 0.1}}), "data.split.vaild: unknown key"),
    ({"data": {"source": "sklearn:iris"}, "space": {"a": [1]}}, "name: required field is missing; add it"),
    (with_(MINIMAL, name="bad name!"), "name: invalid study name"),
    (with_(MINIMAL, train={"epochs": "ten"}), "train.epochs: Input should be a valid integer"),
    (with_(MINIMAL, train={"epochs": 0}), "train.epochs: Input should be greater than or equal to 1"),
    (with_(MINIMAL, train={"batch_size": 2.5}), "train.batch_size"),
    (with_(MINIMAL, train="fast"), "train: must be a mapping"),
    (with_(MINIMAL, search={"metric": "f1"}), "search.metric: unknown metric 'f1'; use one of"),
    (with_(MINIMAL, search={"sampler": "bayes"}), "search.sampler: unknown value 'bayes'; use one of"),
    (with_(MINIMAL, search={"pruner": "asha"}), "search.pruner: unknown value 'asha'"),
    (with_(MINIMAL, search={"engine": "hyperopt"}), "search.engine: unknown value 'hyperopt'"),
    (with_(MINIMAL, search={"cv": 1}), "search.cv"),
    (with_(MINIMAL, search={"n_trials": None}), "search: give n_trials or timeout"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "task": "ordinal"}), "data.task: unknown value 'ordinal'"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "split": {"valid": 0.6, "test": 0.35}}),
     "data.split: valid + test must leave at least 10%"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "split": {"valid": 0.0}}), "data.split.valid"),
    (with_(MINIMAL, data={"source": "sklearn:mnist"}), "data.source: unknown dataset 'mnist'"),
    (with_(MINIMAL, data={"source": "d.txt"}), "data.source: 'd.txt' is not .csv"),
    (with_(MINIMAL, data={"source": "d.csv"}), "data.target: required for .csv files"),
    (with_(MINIMAL, space={}), "space: is empty; declare"),
    (with_(MINIMAL, space={"n_neurons": {"int": [9, 1]}}), "space.n_neurons: low 9 > high 1"),
    (with_(MINIMAL, space={"lr": {"float": [0, 1], "log": True}}), "space.lr: a log range needs low > 0"),
    (with_(MINIMAL, space={"act": {"choice": []}}), "space.act: the choice list is empty"),
    (with_(MINIMAL, space={"n_neurons": {"int": [1.5, 3]}}), "space.n_neurons: int range needs int numbers"),
    (with_(MINIMAL, space={"wings": {"int": [1, 3]}}), "space.wings: unknown parameter for builder mlp"),
    (with_(MINIMAL, model={"fixed": {"wings": 2}}), "model.fixed.wings: unknown parameter"),
    (with_(MINIMAL, model={"fixed": {"n_neurons": 2}}), "space.n_neurons: is both searched and fixed"),
    (with_(MINIMAL, model={"builder": "cnn"}), "model.builder: 'cnn'"),
    (with_(MINIMAL, model={"builder": "no_such_module_q:build"}), "model.builder: cannot import"),
    (with_(MINIMAL, search={"engine": "grid"}, space={"lr": {"float": [0.1, 1.0]}}), "space.lr: engine grid needs"),
    (with_(MINIMAL, search={"sampler": "grid", "n_trials": None}, space={"lr": {"float": [0.1, 1.0]}}),
     "space.lr: engine grid needs"),
    (with_(MINIMAL, search={"sampler": "cmaes"}, space={"activation": {"choice": ["relu", "elu"]}}),
     "search.sampler: cmaes needs numeric ranges"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "task": "regression"}, search={"metric": "accuracy"}),
     "search.metric: accuracy needs a classification target"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "task": "classification"}, search={"metric": "rmse"}),
     "search.metric: rmse needs a regression target"),
])
def test_errors_name_the_field(data, fragment):
    msg = err(data)
    assert fragment in msg, msg


def test_every_error_is_a_user_error_with_exit_code_2():
    with pytest.raises(UserError) as ei:
        parse(with_(MINIMAL, extra=1))
    assert ei.value.exit_code == 2


def test_metric_problem():
    assert metric_problem("accuracy", "classification", 3) is None
    assert metric_problem("loss", "regression", None) is None
    assert "binary" in metric_problem("auc", "classification", 3)
    assert metric_problem("auc", "classification", 2) is None
    assert metric_problem("auc", "classification", None) is None  # unknown class count: decided later


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


@pytest.mark.parametrize("text,fragment", [
    ("name: [unclosed\n", "YAML syntax error at line"),
    ("\tname: x\n", "YAML syntax error"),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("just a string\n", "must be a YAML mapping"),
    ("", "got an empty file"),
    ("name: !!python/object:os.system x\n", "YAML"),  # safe_load refuses python tags
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


# --- values of the MLP builder and rung sizes are checked before anything runs ----------------

@pytest.mark.parametrize("fixed, space, field", [
    ({"optimizer": "adamm"}, {"n_neurons": {"int": [1, 4]}}, "model.fixed.optimizer"),
    ({}, {"activation": {"choice": ["relu", "rleu"]}}, "space.activation"),
    ({"kernel_initializer": "he_normel"}, {"n_neurons": {"int": [1, 4]}}, "model.fixed.kernel_initializer"),
    ({"loss": "hubber"}, {"n_neurons": {"int": [1, 4]}}, "model.fixed.loss"),
])
def test_mlp_named_values_are_checked(fixed, space, field):
    from hpsearch.config import parse_study_config
    from hpsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=field.replace(".", r"\.") + ": unknown value"):
        parse_study_config({"name": "x", "data": {"source": "sklearn:iris"}, "model": {"fixed": fixed},
                            "space": space, "search": {"engine": "optuna", "n_trials": 1}})


def test_min_resource_above_epochs_is_refused():
    from hpsearch.config import parse_study_config
    from hpsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"search\.min_resource: 9 epochs > train\.epochs 5"):
        parse_study_config({"name": "x", "data": {"source": "sklearn:iris"}, "space": {"n_neurons": {"int": [1, 4]}},
                            "train": {"epochs": 5}, "search": {"engine": "halving", "min_resource": 9}})
