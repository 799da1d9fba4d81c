"""The study file: a YAML document validated before anything runs.

``load_study_config(path)`` returns a :class:`StudyConfig`; every problem becomes one
:class:`~hpsearch.errors.ConfigError` line ``FILE: field.path: what is wrong; what to do``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpsearch.errors import ConfigError

__all__ = [
    "StudyConfig",
    "DataConfig",
    "SplitConfig",
    "ModelConfig",
    "TrainConfig",
    "EarlyStoppingConfig",
    "SearchConfig",
    "load_study_config",
    "parse_study_config",
    "apply_overrides",
    "metric_problem",
    "METRICS",
    "ENGINES",
]

ENGINES = ("random", "grid", "halving", "optuna")
SAMPLERS = ("tpe", "cmaes", "random", "grid", "qmc")
PRUNERS = ("hyperband", "sha", "median", "none")

# metric name -> (direction, task it applies to, sklearn scorer name, sign to turn the scorer into the value)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("maximize", "classification"),
    "auc": ("maximize", "binary"),
    "loss": ("minimize", "any"),
    "mse": ("minimize", "regression"),
    "mae": ("minimize", "regression"),
    "rmse": ("minimize", "regression"),
    "r2": ("maximize", "regression"),
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class SplitConfig(_Strict):
    valid: float = Field(0.2, gt=0.0, lt=1.0, description="fraction held out for validation / early stopping")
    test: float = Field(0.2, ge=0.0, lt=1.0, description="fraction held out for the final test score")
    seed: int = 0

    @model_validator(mode="after")
    def _sum(self) -> "SplitConfig":
        if self.valid + self.test >= 0.9:
            raise ValueError("valid + test must leave at least 10% for training; lower valid or test")
        return self


class DataConfig(_Strict):
    source: str = Field(description="sklearn:digits | sklearn:breast_cancer | sklearn:wine | sklearn:iris | "
                        "sklearn:diabetes | path to a .csv, .parquet or .npz file")
    target: Optional[str] = Field(None, description="target column for CSV/Parquet (NPZ: array name, default y)")
    features: Optional[list[str]] = Field(None, description="feature columns (default: all but the target)")
    task: Literal["auto", "classification", "regression"] = "auto"
    split: SplitConfig = Field(default_factory=SplitConfig)
    scale: Literal["standard", "none"] = "standard"
    max_rows: Optional[int] = Field(None, ge=1, description="use only the first N rows (after shuffling)")


class ModelConfig(_Strict):
    builder: str = "mlp"
    fixed: dict[str, Any] = Field(default_factory=dict)


class EarlyStoppingConfig(_Strict):
    patience: int = Field(10, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best_weights: bool = True


class TrainConfig(_Strict):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    early_stopping: Optional[EarlyStoppingConfig] = Field(default_factory=EarlyStoppingConfig)
    steps_per_execution: int = Field(1, ge=1)
    class_weight: Optional[Literal["balanced"]] = None
    verbose: int = Field(0, ge=0, le=2)


class SearchConfig(_Strict):
    engine: Literal["random", "grid", "halving", "optuna"] = "optuna"
    n_trials: Optional[int] = Field(None, ge=1, description="candidates (random/halving) or trials (optuna)")
    timeout: Optional[float] = Field(None, gt=0, description="seconds (optuna engine)")
    cv: Optional[int] = Field(None, ge=2, description="k folds (sklearn engines default 3; optuna default holdout)")
    metric: Optional[str] = None
    direction: Optional[Literal["maximize", "minimize"]] = None
    seed: Optional[int] = 0
    sampler: Literal["tpe", "cmaes", "random", "grid", "qmc"] = "tpe"
    pruner: Literal["hyperband", "sha", "median", "none"] = "hyperband"
    min_resource: Optional[int] = Field(None, ge=1, description="halving/hyperband: fewest epochs a candidate gets")
    factor: int = Field(3, ge=2, description="halving/hyperband reduction factor")
    max_failures_in_row: int = Field(5, ge=1)
    keep_models: int = Field(3, ge=1, description="trained models kept per study (best K)")
    n_jobs: int = Field(1, ge=1, description="sklearn engines: parallel fits (joblib)")

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        name = v[4:] if v.startswith("val_") else v
        if name not in METRICS:
            raise ValueError(f"unknown metric {v!r}; use one of {', '.join(METRICS)} (optionally prefixed val_)")
        return name


class StudyConfig(_Strict):
    name: str
    description: Optional[str] = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    space: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    storage: Optional[str] = None
    artifacts: Optional[str] = None

    # where the file lives, to resolve relative data paths (not part of the schema)
    base_dir: Optional[str] = Field(None, exclude=True)
    source_text: Optional[str] = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"invalid study name {v!r}; use letters, digits, '-', '_' or '.',"
                             " starting with a letter or digit (max 100)")
        return v

    @model_validator(mode="after")
    def _check_space(self) -> "StudyConfig":
        if not self.space:
            raise ValueError("space: is empty; declare at least one parameter to search")
        return self

    # derived ---------------------------------------------------------------------------
    def search_space(self):
        from hpsearch.space import SearchSpace

        return SearchSpace.from_dict(self.space, fixed=self.model.fixed)

    def data_path(self) -> Optional[Path]:
        src = self.data.source
        if src.startswith("sklearn:"):
            return None
        p = Path(os.path.expanduser(src))
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p

    def to_yaml(self) -> str:
        if self.source_text is not None:
            return self.source_text
        return yaml.safe_dump(self.model_dump(exclude_none=True), sort_keys=False)


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p in {"function-after", "function-before"})]
    return ".".join(parts) if parts else "(top level)"


def _one_line(text: str) -> str:
    """Error messages are one line on stderr: fold any newline a library put in them."""
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


def _section_model(loc: tuple[Any, ...]) -> Optional[type[BaseModel]]:
    """The schema class that owns the mapping at ``loc`` (None if it is not a schema section)."""
    model: Any = StudyConfig
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
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
    if model is None:
        return ""
    return ", ".join(n for n, f in model.model_fields.items() if not f.exclude)


def _translate(err: ValidationError, where: str, overridden: frozenset[str] = frozenset()) -> ConfigError:
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
        return ConfigError(_one_line(f"{where}: {loc}: unknown key; remove it or check the spelling{hint}"))
    if kind == "missing":
        return ConfigError(f"{where}: {loc}: required field is missing; add it")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    origin = " from the command line" if loc in overridden else ""
    fix = "; give a valid value" + (" on the command line" if origin else " in the study file")
    if kind == "literal_error":
        expected = msg[len("Input should be "):] if msg.startswith("Input should be ") else msg
        return ConfigError(_one_line(f"{where}: {loc}: unknown value {inp!r}{origin}; use one of {expected}"))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return ConfigError(_one_line(
            f"{where}: {loc}: must be a mapping (got {inp!r}); write it as `{raw_loc[-1] if raw_loc else 'key'}:` "
            "followed by indented `key: value` lines or {key: value, ...}"
        ))
    if not raw_loc and ": " in msg:  # a model-level check that already names its field
        return ConfigError(_one_line(f"{where}: {msg}"))
    if ";" in msg:  # our own validators already say what to do
        return ConfigError(_one_line(f"{where}: {loc}: {msg}"))
    shown = "" if isinstance(inp, (dict, list)) else f" (got {inp!r}{origin})"
    return ConfigError(_one_line(f"{where}: {loc}: {msg}{shown}{fix}"))


def metric_problem(metric: str, task: str, n_classes: Optional[int], source: str = "the data") -> Optional[str]:
    """Why ``metric`` cannot score ``task`` (one line naming search.metric and the fix), or None."""
    if task == "regression" and metric in ("accuracy", "auc"):
        return (f"search.metric: {metric} needs a classification target, but {source} is regression;"
                " use mse, mae, rmse, r2 or loss")
    if task == "classification" and metric in ("mse", "mae", "rmse", "r2"):
        return (f"search.metric: {metric} needs a regression target, but {source} is classification;"
                " use accuracy, auc or loss (or set data.task: regression)")
    if task == "classification" and metric == "auc" and n_classes is not None and n_classes != 2:
        return f"search.metric: auc needs a binary target, {source} has {n_classes} classes; use accuracy or loss"
    return None


def parse_study_config(data: Any, *, where: str = "<study>", base_dir: str | None = None,
                       source_text: str | None = None, overridden: frozenset[str] | set[str] = frozenset()
                       ) -> StudyConfig:
    """Validate a study given as a mapping; raises :class:`ConfigError` with one line."""
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a YAML {type(data).__name__}"
        raise ConfigError(
            f"{where}: a study file must be a YAML mapping, got {got}; write top-level keys name:, data:, space:, ..."
        )
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as err:
        raise _translate(err, where, frozenset(overridden)) from None
    cfg.base_dir = base_dir
    cfg.source_text = source_text
    _semantic_checks(cfg, where)
    return cfg


def _semantic_checks(cfg: StudyConfig, where: str) -> None:
    """Checks that need more than the schema: space ranges, builder parameters, metric vs task."""
    try:
        space = cfg.search_space()
    except ConfigError as e:
        raise ConfigError(_one_line(f"{where}: {e}")) from None
    s = cfg.search
    if s.engine == "grid" or (s.engine == "optuna" and s.sampler == "grid"):
        try:
            space.to_sklearn_grid()
        except ConfigError as e:
            raise ConfigError(_one_line(f"{where}: {e}")) from None
    if s.engine in ("random", "halving") and s.n_trials is None:
        s.n_trials = 10
    if s.engine == "optuna" and s.n_trials is None and s.timeout is None and s.sampler != "grid":
        raise ConfigError(f"{where}: search: give n_trials or timeout for engine optuna")
    if s.engine == "optuna" and s.sampler == "cmaes":
        from hpsearch.space import CategoricalParam

        if all(isinstance(p, CategoricalParam) for p in space.params.values()):
            raise ConfigError(f"{where}: search.sampler: cmaes needs numeric ranges in space; use tpe")
    if cfg.data.task != "auto" and s.metric is not None:
        problem = metric_problem(s.metric, cfg.data.task, None, cfg.data.source)
        if problem:
            raise ConfigError(f"{where}: {problem}")
    # builder and its parameters
    from hpsearch.builders import builder_accepts, resolve_builder

    try:
        fn = resolve_builder(cfg.model.builder)
    except ConfigError as e:
        text = str(e)
        if ";" not in text:
            text += "; use mlp or 'package.module:function' importable from where hpsearch runs"
        raise ConfigError(_one_line(f"{where}: {text}")) from None
    accepted = builder_accepts(fn)
    if accepted is not None:
        for section, names in (("space", space.params), ("model.fixed", space.fixed)):
            for n in names:
                if n not in accepted:
                    known = ", ".join(sorted(a for a in accepted if a != "meta"))
                    raise ConfigError(
                        f"{where}: {section}.{n}: unknown parameter for builder {cfg.model.builder};"
                        f" remove it or check the spelling (known: {known})"
                    )
    if fn is build_mlp_ref():
        _check_mlp_values(space, where)
    if s.min_resource is not None and s.min_resource > cfg.train.epochs:
        raise ConfigError(
            f"{where}: search.min_resource: {s.min_resource} epochs > train.epochs {cfg.train.epochs};"
            " lower min_resource or raise epochs"
        )
    _check_locations(cfg, where)
    if cfg.data.source.startswith("sklearn:"):
        from hpsearch.data import SKLEARN_DATASETS

        ds = cfg.data.source.split(":", 1)[1]
        if ds not in SKLEARN_DATASETS:
            raise ConfigError(
                f"{where}: data.source: unknown dataset {ds!r}; use one of "
                + ", ".join("sklearn:" + k for k in SKLEARN_DATASETS)
            )
    else:
        path = cfg.data_path()
        assert path is not None
        if path.suffix.lower() not in (".csv", ".parquet", ".pq", ".npz"):
            raise ConfigError(f"{where}: data.source: {cfg.data.source!r} is not .csv, .parquet or .npz, nor sklearn:NAME;"
                              " convert the file or use one of those")
        if path.suffix.lower() in (".csv", ".parquet", ".pq") and not cfg.data.target:
            raise ConfigError(f"{where}: data.target: required for {path.suffix} files; name the target column")


def build_mlp_ref() -> Any:
    from hpsearch.builders import build_mlp

    return build_mlp


def _check_mlp_values(space: Any, where: str) -> None:
    """Named choices of the MLP builder (activation, optimizer, ...) are checked before anything runs:
    a typo would otherwise fail every trial at build time."""
    from hpsearch.builders import (ACTIVATIONS, INITIALIZERS, LR_SCHEDULES, OPTIMIZERS, REGRESSION_LOSSES,
                                   _choice)
    from hpsearch.space import CategoricalParam

    allowed = {"activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "kernel_initializer": INITIALIZERS,
               "lr_schedule": LR_SCHEDULES}
    for name, options in allowed.items():
        values: list[tuple[str, Any]] = []
        if name in space.fixed:
            values.append((f"model.fixed.{name}", space.fixed[name]))
        p = space.params.get(name)
        if isinstance(p, CategoricalParam):
            values += [(f"space.{name}", v) for v in p.choices]
        for field, v in values:
            if v is None and name in ("kernel_initializer", "lr_schedule"):
                continue
            try:
                _choice(field, v, options)
            except ConfigError as e:
                raise ConfigError(_one_line(f"{where}: {e}")) from None
    loss = space.fixed.get("loss")
    if isinstance(loss, str) and loss.lower() not in REGRESSION_LOSSES + ("binary_crossentropy",
                                                                         "sparse_categorical_crossentropy",
                                                                         "categorical_crossentropy"):
        raise ConfigError(f"{where}: model.fixed.loss: unknown value {loss!r}; use one of mse, mae, huber"
                          " (regression) or leave it out for classification")


def _check_locations(cfg: StudyConfig, where: str) -> None:
    """storage: and artifacts: must at least be well-formed (reachability is checked by ``run``)."""
    if cfg.storage is not None and str(cfg.storage).strip():
        from hpsearch.errors import StorageError
        from hpsearch.storage import normalize_storage_url

        try:
            normalize_storage_url(cfg.storage)
        except StorageError as e:  # already redacted, names the fix
            raise ConfigError(_one_line(f"{where}: {e}")) from None
    art = cfg.artifacts
    if art is not None and "://" in art and not art.lower().startswith("s3://"):
        from hpsearch.storage import redact_url

        raise ConfigError(
            f"{where}: artifacts: {redact_url(art)!r} has an unsupported scheme;"
            " give a folder path or s3://bucket/prefix"
        )


def _set_dotted(data: dict[str, Any], overrides: dict[str, Any] | None) -> set[str]:
    """Write ``{"search.n_trials": 2}``-style overrides into ``data``; returns the keys applied.

    ``None`` means "not given". A section that is not a mapping is left alone: validation names it.
    """
    applied: set[str] = set()
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node: Any = data
        keys = dotted.split(".")
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                break
        else:
            node[keys[-1]] = value
            applied.add(dotted)
    return applied


def apply_overrides(cfg: StudyConfig, overrides: dict[str, Any] | None, *, where: str | None = None) -> StudyConfig:
    """A validated copy of ``cfg`` with dotted overrides (``search.n_trials``) applied.

    Use this instead of ``setattr``: assignment skips validation, so ``n_trials=0`` would pass.
    """
    data = cfg.model_dump()
    applied = _set_dotted(data, overrides)
    return parse_study_config(data, where=where or f"study {cfg.name}", base_dir=cfg.base_dir,
                              source_text=cfg.source_text, overridden=applied)


def load_study_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study file. ``overrides`` maps dotted keys (``search.n_trials``) to values."""
    p = Path(path)
    where = str(path)
    if not p.exists():
        raise ConfigError(f"{where}: study file not found; check the path")
    if p.is_dir():
        raise ConfigError(f"{where}: is a directory; give a study .yaml file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read the file ({e.__class__.__name__}); check it is UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(_one_line(f"{where}: YAML syntax error{line}: {problem}; fix the file")) from None
    overridden = _set_dotted(data, overrides) if isinstance(data, dict) else set()
    return parse_study_config(data, where=where, base_dir=str(p.resolve().parent), source_text=text,
                              overridden=overridden)
