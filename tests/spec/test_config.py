"""The study-file schema alone: defaults, registry names, frozen configs and one-line errors.

Checks that span sections (engine, builder, data source, storage) are in test_validate.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError
from study_dicts import MINIMAL, one_line_error, with_

from hpsearch.errors import UserError
from hpsearch.registry import ENGINES, PRUNERS, SAMPLERS
from hpsearch.spec.config import StudyConfig, schema_from_mapping


def schema(d: dict, **kw) -> StudyConfig:
    return schema_from_mapping(d, where="s.yaml", **kw)


def err(d, **kw) -> str:
    return one_line_error(schema, d, **kw)


def test_defaults():
    cfg = schema(MINIMAL)
    assert cfg.model.builder == "mlp" and cfg.model.fixed == {}
    assert cfg.data.split.valid == 0.2 and cfg.data.split.test == 0.2 and cfg.data.split.seed == 0
    assert cfg.data.scale == "standard" and cfg.data.task == "auto"
    assert cfg.train.epochs == 100 and cfg.train.batch_size == 32 and cfg.train.early_stopping.patience == 10
    assert cfg.search.engine == "optuna" and cfg.search.sampler == "tpe" and cfg.search.pruner == "hyperband"
    assert cfg.storage is None and cfg.base_dir is None and cfg.source_text is None
    assert cfg.search_space().names == ["n_neurons"]


def test_no_budget_is_left_as_given():
    """The schema fills no engine default: engines read theirs through Engine.n_trials(cfg)."""
    assert schema(with_(MINIMAL, search={"engine": "random", "n_trials": None})).search.n_trials is None


def test_a_validated_study_is_frozen():
    cfg = schema(MINIMAL)
    with pytest.raises(ValidationError):
        cfg.search.n_trials = 10  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.name = "other"  # type: ignore[misc]


def test_file_folder_and_text_are_not_keys_of_the_file():
    cfg = schema(MINIMAL, base_dir="/some/where", source_text="name: m\n")
    assert cfg.base_dir == "/some/where" and cfg.source_text == "name: m\n" and cfg.to_yaml() == "name: m\n"
    assert "base_dir" not in cfg.model_dump()
    assert "base_dir: unknown key" in err(with_(MINIMAL, base_dir="/etc"))


def test_metric_prefix_val_is_accepted():
    assert schema(with_(MINIMAL, search={"metric": "val_accuracy"})).search.metric == "accuracy"


@pytest.mark.parametrize("field,registry", [("engine", ENGINES), ("sampler", SAMPLERS), ("pruner", PRUNERS)])
def test_names_come_from_the_registries(field, registry):
    for name in registry.names():
        assert getattr(schema(with_(MINIMAL, search={field: name})).search, field) == name
    msg = err(with_(MINIMAL, search={field: "foo"}))
    assert msg == f"s.yaml: search.{field}: unknown value 'foo'; use one of {', '.join(registry.names())}"


def test_unknown_sampler_is_refused_in_the_documented_words():
    assert err(with_(MINIMAL, search={"sampler": "foo"})) == (
        "s.yaml: search.sampler: unknown value 'foo'; use one of tpe, cmaes, random, grid, qmc, gp, nsga2, nsga3")


def test_a_registered_sampler_is_accepted_without_touching_the_schema(monkeypatch):
    monkeypatch.setattr(SAMPLERS, "_targets", dict(SAMPLERS._targets))  # restored after the test
    SAMPLERS.register("mine", "mypkg:mine")
    assert schema(with_(MINIMAL, search={"sampler": "mine"})).search.sampler == "mine"


def test_to_yaml_without_source_text_round_trips():
    cfg = schema(with_(MINIMAL, model={"fixed": {"activation": "elu"}}))
    again = schema(yaml.safe_load(cfg.to_yaml()))
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
    (with_(MINIMAL, search={"sampler": 3}), "search.sampler: Input should be a valid string"),
    (with_(MINIMAL, search={"cv": 1}), "search.cv"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "task": "ordinal"}), "data.task: unknown value 'ordinal'"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "split": {"valid": 0.6, "test": 0.35}}),
     "data.split: valid + test must leave at least 10%"),
    (with_(MINIMAL, data={"source": "sklearn:iris", "split": {"valid": 0.0}}), "data.split.valid"),
    (with_(MINIMAL, space={}), "space: is empty; declare"),
    (with_(MINIMAL, train={"epochs": 5}, search={"min_resource": 9}),
     "search.min_resource: 9 epochs > train.epochs 5; lower min_resource or raise epochs"),
])
def test_schema_errors_name_the_field(data, fragment):
    msg = err(data)
    assert fragment in msg, msg


def test_override_origin_is_named():
    msg = err(with_(MINIMAL, search={"n_trials": 0}), overridden={"search.n_trials"})
    assert "search.n_trials: " in msg and "got 0 from the command line" in msg


def test_every_error_is_a_user_error_with_exit_code_2():
    with pytest.raises(UserError) as ei:
        schema(with_(MINIMAL, extra=1))
    assert ei.value.exit_code == 2


def test_the_schema_imports_no_builder_data_engine_or_heavy_library():
    code = ("import sys, hpsearch.spec.config; bad = [m for m in sys.modules if m.startswith(("
            "'hpsearch.models.builders', 'hpsearch.data.prepare', 'hpsearch.data.sources.base', 'hpsearch.engines',"
            " 'hpsearch.study.validate',"
            " 'tensorflow', 'keras', 'optuna', 'sklearn', 'pandas'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
