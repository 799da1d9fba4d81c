"""The study-file schema: pydantic models with ``extra=forbid``, frozen once validated.

This module only knows the shape of a study file. Checks that need builders, data sources, engines
or storage live in :mod:`hpsearch.study.validate`, which is also where files are read
(``load_study_config``). Names of engines, samplers and pruners are checked against
:mod:`hpsearch.registry`, so adding one never touches this file.

:func:`schema_from_mapping` turns every schema problem into one
:class:`~hpsearch.errors.ConfigError` line ``WHERE: field.path: what is wrong; what to do``.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from hpsearch.errors import ConfigError
from hpsearch.metrics import MEASURED, METRICS
from hpsearch.registry import ENGINES, PRUNERS, SAMPLERS, Registry
from hpsearch.spec.space import SearchSpace

__all__ = [
    "ConstraintsConfig",
    "DataConfig",
    "EarlyStoppingConfig",
    "InitFromConfig",
    "ModelConfig",
    "SearchConfig",
    "SplitConfig",
    "StudyConfig",
    "TrackingConfig",
    "TrainConfig",
    "WarmStartConfig",
    "one_line",
    "schema_from_mapping",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
#: every character ``str.splitlines`` breaks at (a form feed in a key is a line break on a terminal too)
_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+\s*")
#: the largest seed numpy's and Optuna's generators take
_MAX_SEED = 2**32 - 1


def one_line(text: object) -> str:
    """Error messages are one line on stderr: fold any line break a library (or a key) put in them."""
    return _BREAKS.sub(" ", str(text)).strip()


def _registered(registry: Registry, value: str) -> str:
    """A name of ``registry`` or a ValueError in the one-line style of the other schema errors."""
    if value not in registry:
        raise ValueError(f"unknown value {value!r}; use one of {', '.join(registry.names())}")
    return value


def _leaves(annotation: Any) -> list[Any]:
    """A field type's alternatives: unions, Optional and Annotated flattened; a Literal's values."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return list(args)
    if origin is typing.Annotated:
        return _leaves(args[0])
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return [leaf for a in args for leaf in _leaves(a)]
    return [annotation]


def _admits_bool(annotation: Any) -> bool:
    """Does a field of this type take ``true`` / ``false`` as a value of its own (bool, Any, a union
    with bool), rather than as pydantic's lax 1 / 0 for a number?"""
    leaves = _leaves(annotation)
    numbers = any(leaf in (int, float) for leaf in leaves)
    return not numbers or any(leaf is bool or leaf is Any or isinstance(leaf, bool) for leaf in leaves)


class _Strict(BaseModel):
    # frozen: a validated study is never changed in place; apply_overrides builds a new one
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: Any) -> Any:
        """``epochs: true`` (or YAML's ``yes``) is refused, not read as 1 (pydantic's lax mode)."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
            raise ValueError(f"expected a number, got {str(value).lower()} (YAML reads true/false/yes/no as"
                             " booleans); write a number")
        return value


class SplitConfig(_Strict):
    valid: float = Field(0.2, gt=0.0, lt=1.0, description="fraction held out for validation / early stopping")
    test: float = Field(0.2, ge=0.0, lt=1.0, description="fraction held out for the final test score")
    seed: int = Field(0, ge=0, le=_MAX_SEED, description="the shuffle before the split (numpy takes 32 bits)")

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.valid + self.test >= 0.9:
            raise ValueError("valid + test must leave at least 10% for training; lower valid or test")
        return self


class DataConfig(_Strict):
    source: str = Field(description="a data source: scheme:NAME (sklearn:digits) or a data file path;"
                        " see hpsearch.data.sources.base for the sources and file types")
    target: str | None = Field(None, description="target column of a table (array name in an .npz file, default y)")
    features: list[str] | None = Field(None, description="feature columns (default: all but the target)")
    task: Literal["auto", "classification", "regression"] = "auto"
    split: SplitConfig = Field(default_factory=SplitConfig)
    valid: str | None = Field(None, description="a fixed validation set (a file with the same columns, or"
                              " memory:KEY): used instead of data.split.valid")
    test: str | None = Field(None, description="a fixed test set (a file with the same columns, or memory:KEY):"
                             " used instead of data.split.test, scored once on the chosen model")
    scale: Literal["standard", "none"] = "standard"
    max_rows: int | None = Field(None, ge=1, description="use only the first N rows (after shuffling)")
    reshape: list[int] | None = Field(None, min_length=1, description="one sample's shape, e.g. [8, 8, 1]:"
                                      " flat feature rows become images (rows, 8, 8, 1) or sequences")
    rescale: float | None = Field(None, gt=0, description="divide raw values by this first (255 for 8-bit"
                                  " images), before data.scale")
    image_size: list[int] | None = Field(None, min_length=2, max_length=2,
                                         description="image folders: resize every image to [height, width]")
    color: Literal["grayscale", "rgb"] = Field("rgb", description="image folders: channels (1 or 3)")
    skip_bad_files: bool = Field(False, description="image folders: skip unreadable files (counted) instead of"
                                 " stopping at the first")
    in_memory: bool | Literal["auto"] = Field("auto", description="image folders: load all images (true), stream"
                                              " batches from disk (false), or stream above 1 GiB decoded (auto)")
    workers: int = Field(2, ge=1, description="image folders streamed from disk: CPU loader threads")
    max_categories: int = Field(20, ge=1, description="tables: a text/category column with at most this many"
                                " values is one-hot encoded, above it an integer lookup")

    @field_validator("reshape", "image_size")
    @classmethod
    def _positive_dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(d < 1 for d in v):
            raise ValueError(f"every size must be >= 1, got {v}; give positive integers")
        return v


class InitFromConfig(_Strict):
    study: str = Field(description="a study whose best stored model gives the lower layers")
    layers: int = Field(ge=1, description="how many of its weighted layers, from the input up")
    freeze_epochs: int = Field(0, ge=0, description="epochs those layers stay frozen before all train")
    storage: str | None = Field(None, description="that study's storage (default: this study's)")


class ModelConfig(_Strict):
    builder: str = "mlp"
    fixed: dict[str, Any] = Field(default_factory=dict)
    init_from: InitFromConfig | None = None


class EarlyStoppingConfig(_Strict):
    patience: int = Field(10, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best_weights: bool = True
    monitor: Literal["metric", "val_loss"] = Field(
        "metric", description="metric: the study's first metric on validation rows (every engine); "
        "val_loss: the compiled loss on validation rows")


class TrainConfig(_Strict):
    epochs: int = Field(100, ge=1)
    batch_size: int | Literal["auto"] = Field(
        32, description="rows per step, or auto: the largest that fits the device (hpsearch.study.batchfind)")
    early_stopping: EarlyStoppingConfig | None = Field(default_factory=EarlyStoppingConfig)
    steps_per_execution: int = Field(1, ge=1)
    class_weight: Literal["balanced"] | None = None
    verbose: int = Field(0, ge=0, le=2)
    trial_timeout: float | None = Field(None, gt=0, description="seconds one trial may train; over it the trial"
                                        " is stopped and recorded as failed")
    pack: Literal["auto"] | int = Field(
        "auto", description="trials trained together in one compiled model: auto, K (>= 1) or 1 (off)")

    @field_validator("pack", mode="before")
    @classmethod
    def _pack_positive(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be auto or an integer >= 1, got {v!r}; give auto (packs sized for you), K, or 1 (off)")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"must be an integer >= 1 or auto, got {v!r}; give a size or `auto` (the largest that fits)")


class ConstraintsConfig(_Strict):
    max_params: int | None = Field(None, ge=1, description="most weights a model may have")
    max_latency_ms: float | None = Field(None, gt=0, description="most prediction time per row (ms, this machine)")


class WarmStartConfig(_Strict):
    study: str = Field(description="an earlier study in the same storage whose finished trials are copied")


class TrackingConfig(_Strict):
    mlflow: str | None = Field(None, description="an MLflow tracking URI (sqlite:///mlflow.db, http://host:5000):"
                               " one run per trial under one parent run per study")
    tensorboard: str | None = Field(None, description="a folder: each trial's scalars in DIR/<study>/<trial>/"
                                    " with the HParams plugin's summaries")
    log_models: bool = Field(False, description="with mlflow: each trial's stored Keras model (model.keras and"
                             " preprocess.json, the kept models: packed members too) as artifacts of its run")


#: a trial callback (``search.callbacks``) or builder given by reference
_REF_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class SearchConfig(_Strict):
    engine: str = Field("optuna", description="a name of hpsearch.registry.ENGINES")
    n_trials: int | None = Field(None, ge=1, description="candidates or trials (each engine has its default)")
    timeout: float | None = Field(None, gt=0, description="seconds the search may run (every engine)")
    patience: int | None = Field(None, ge=1, description="stop after N finished trials without improvement")
    target: float | None = Field(None, allow_inf_nan=False, description="stop once the best value reaches it")
    cv: int | None = Field(None, ge=2, description="k folds (default: the engine's, holdout or 3)")
    metric: str | list[str] | None = Field(None, description="a metric, or a list of objectives (Pareto front)")
    direction: str | list[str] | None = Field(None, description="maximize | minimize, a list for several metrics")
    seed: int | None = Field(0, ge=0, le=_MAX_SEED)
    sampler: str = Field("tpe", description="a name of hpsearch.registry.SAMPLERS")
    pruner: str = Field("hyperband", description="a name of hpsearch.registry.PRUNERS")
    min_resource: int | None = Field(None, ge=1, description="halving/hyperband: fewest epochs a candidate gets")
    factor: int = Field(3, ge=2, description="halving/hyperband reduction factor")
    max_failures_in_row: int = Field(5, ge=1)
    keep_models: int = Field(3, ge=1, description="trained models kept per study (best K)")
    n_jobs: int = Field(1, ge=1, description="sklearn engines: parallel fits (joblib)")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="parameter sets run"
                                          " first, once per study (sklearn engines: the first candidates)")
    warm_start: WarmStartConfig | None = Field(None, description="optuna: copy an earlier study's finished trials")
    constraints: ConstraintsConfig | None = Field(None, description="optuna: limits checked before training")
    callbacks: list[str] = Field(default_factory=list, description="'package.module:function' each called"
                                 " f(study, frozen_trial) after each finished trial (Optuna's callback signature)")
    ensemble: int | None = Field(None, ge=1, description="models of the best trials kept for load_best(top_k=K);"
                                 " raises keep_models to K (sklearn engines: refits the top K)")

    @model_validator(mode="before")
    @classmethod
    def _keep_for_ensemble(cls, data: Any) -> Any:
        """``search.ensemble: K`` keeps at least K trained models (``keep_models`` is raised to K)."""
        if isinstance(data, dict) and isinstance(data.get("ensemble"), int):
            keep = data.get("keep_models", cls.model_fields["keep_models"].default)
            if isinstance(keep, int) and keep < data["ensemble"]:
                data = {**data, "keep_models": data["ensemble"]}
        return data

    @field_validator("callbacks")
    @classmethod
    def _callbacks(cls, v: list[str]) -> list[str]:
        bad = next((r for r in v if not _REF_RE.match(r.strip())), None)
        if bad is not None:
            raise ValueError(f"{bad!r} is not of the form 'package.module:function'; give each callback so")
        return [r.strip() for r in v]

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        return _registered(ENGINES, v)

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        return _registered(SAMPLERS, v)

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v: str) -> str:
        return _registered(PRUNERS, v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | list[str] | None) -> str | list[str] | None:
        """A metric name, or a list of objectives: trained metrics and the measured ``n_params`` /
        ``latency_ms``; the first is a trained metric (it drives early stopping and the curves)."""
        if v is None:
            return v
        names = [m.removeprefix("val_") for m in ([v] if isinstance(v, str) else v)]
        for m in names:
            if m not in METRICS and m not in MEASURED:
                raise ValueError(f"unknown metric {m!r}; use one of {', '.join([*METRICS, *MEASURED])}"
                                 " (optionally prefixed val_)")
        if not names or names[0] not in METRICS:
            raise ValueError(f"the first objective must be a trained metric ({', '.join(METRICS)}); "
                             f"put {', '.join(MEASURED)} after it, e.g. [accuracy, n_params]")
        if len(set(names)) < len(names):
            raise ValueError(f"{names} names an objective twice; list each once")
        return names[0] if len(names) == 1 else names

    @field_validator("direction")
    @classmethod
    def _direction(cls, v: str | list[str] | None) -> str | list[str] | None:
        for d in [] if v is None else [v] if isinstance(v, str) else v:
            if d not in ("maximize", "minimize"):
                raise ValueError(f"unknown value {d!r}; use maximize or minimize (a list: one per metric)")
        return v

    @property
    def metrics(self) -> list[str] | None:
        """``metric`` as a list of objective names (None: the task's default metric)."""
        return None if self.metric is None else [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def trained_metrics(self) -> list[str]:
        """The objectives a model is trained and scored for (the measured ones left out)."""
        return [m for m in self.metrics or [] if m in METRICS]


class StudyConfig(_Strict):
    name: str
    description: str | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    space: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    storage: str | None = None
    artifacts: str | None = None
    tracking: TrackingConfig | None = None

    # not part of the schema (a study file cannot set them): where the file lives, to resolve
    # relative data paths, and its text as written, stored with the study
    _base_dir: str | None = PrivateAttr(None)
    _source_text: str | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"invalid study name {v!r}; use letters, digits, '-', '_' or '.',"
                             " starting with a letter or digit (max 100)")
        return v

    @model_validator(mode="after")
    def _check_space(self) -> StudyConfig:
        if not self.space:
            raise ValueError("space: is empty; declare at least one parameter to search")
        return self

    @model_validator(mode="after")
    def _check_directions(self) -> StudyConfig:
        """``search.direction`` overrides the metrics' own directions one for one."""
        s = self.search
        d, n = s.direction, len(s.metrics or [None])
        if isinstance(d, list) and len(d) != n:
            raise ValueError(f"search.direction: {len(d)} directions for {n} metrics; give one per metric"
                             " in the order of search.metric, e.g. [maximize, minimize]")
        if isinstance(d, str) and n > 1:
            raise ValueError(f"search.direction: {d} is one direction for {n} metrics; give a list, one per"
                             " metric, e.g. [maximize, minimize] (or leave it out: each metric's own)")
        return self

    @model_validator(mode="after")
    def _check_min_resource(self) -> StudyConfig:
        """The fewest epochs a candidate gets (halving, Hyperband) cannot exceed the most it gets."""
        low = self.search.min_resource
        if low is not None and low > self.train.epochs:
            raise ValueError(f"search.min_resource: {low} epochs > train.epochs {self.train.epochs};"
                             " lower min_resource or raise epochs")
        return self

    @property
    def base_dir(self) -> str | None:
        """The study file's folder (relative data paths start there), None for a study given in Python."""
        return self._base_dir

    @property
    def source_text(self) -> str | None:
        """The study file's text as written, None for a study given in Python."""
        return self._source_text

    def search_space(self) -> SearchSpace:
        """The search space of ``space`` and ``model.fixed`` (a ConfigError naming the parameter)."""
        return SearchSpace.from_dict(self.space, fixed=self.model.fixed)

    def to_yaml(self) -> str:
        """The study file as written (or, for a study given in Python, its schema fields)."""
        if self._source_text is not None:
            return self._source_text
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False)


# --------------------------------------------------------------------------------------------------
# pydantic errors -> one line
# --------------------------------------------------------------------------------------------------


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in {"function-after", "function-before"})]
    return ".".join(parts) if parts else "(top level)"


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that owns the mapping at ``loc`` (None if it is not a schema section)."""
    model: type[BaseModel] = StudyConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
        else:
            return None
    return model


def _allowed_keys(loc: tuple[Any, ...]) -> str:
    model = _section_model(loc)
    return "" if model is None else ", ".join(model.model_fields)


def _translate(err: ValidationError, where: str, overridden: frozenset[str]) -> ConfigError:
    """The first pydantic error as one line naming the field and the fix."""
    e = err.errors()[0]
    raw_loc = tuple(e.get("loc", ()))
    loc = _fmt_loc(raw_loc)
    kind = e.get("type", "")
    msg = e.get("msg", "invalid")
    inp = e.get("input")
    if kind == "extra_forbidden":
        parent = raw_loc[:-1]
        allowed = _allowed_keys(parent)
        where_in = _fmt_loc(parent) if parent else "the top level"
        hint = f"; allowed keys in {where_in}: {allowed}" if allowed else ""
        return ConfigError(one_line(f"{where}: {loc}: unknown key; remove it or check the spelling{hint}"))
    if kind == "missing":
        return ConfigError(f"{where}: {loc}: required field is missing; add it")
    msg = msg.removeprefix("Value error, ")
    origin = " from the command line" if loc in overridden else ""
    fix = "; give a valid value" + (" on the command line" if origin else " in the study file")
    if kind == "literal_error":
        expected = msg.removeprefix("Input should be ")
        return ConfigError(one_line(f"{where}: {loc}: unknown value {inp!r}{origin}; use one of {expected}"))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return ConfigError(one_line(
            f"{where}: {loc}: must be a mapping (got {inp!r}); write it as `{raw_loc[-1] if raw_loc else 'key'}:` "
            "followed by indented `key: value` lines or {key: value, ...}"
        ))
    if not raw_loc and ": " in msg:  # a model-level check that already names its field
        return ConfigError(one_line(f"{where}: {msg}"))
    if ";" in msg:  # our own validators already say what to do
        return ConfigError(one_line(f"{where}: {loc}: {msg}"))
    shown = "" if isinstance(inp, (dict, list)) else f" (got {inp!r}{origin})"
    return ConfigError(one_line(f"{where}: {loc}: {msg}{shown}{fix}"))


def schema_from_mapping(data: Any, *, where: str, base_dir: str | None = None, source_text: str | None = None,
                        overridden: frozenset[str] | set[str] = frozenset()) -> StudyConfig:
    """The schema alone: a :class:`StudyConfig` of ``data``, or one :class:`ConfigError` line.

    ``overridden`` names the dotted keys that came from the command line, so that their errors
    say so. Cross-section checks are :func:`hpsearch.study.validate.parse_study_config`'s job.
    """
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a YAML {type(data).__name__}"
        raise ConfigError(
            f"{where}: a study file must be a YAML mapping, got {got}; write top-level keys name:, data:, space:, ..."
        )
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as err:
        raise _translate(err, where, frozenset(overridden)) from None
    cfg._base_dir = base_dir
    cfg._source_text = source_text
    return cfg
