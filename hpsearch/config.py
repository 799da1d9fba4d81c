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
            raise ValueError("use letters, digits, '-', '_' or '.', starting with a letter or digit (max 100)")
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


def _translate(err: ValidationError, where: str) -> ConfigError:
    e = err.errors()[0]
    loc = _fmt_loc(tuple(e.get("loc", ())))
    kind = e.get("type", "")
    msg = e.get("msg", "invalid")
    if kind == "extra_forbidden":
        field = loc.rsplit(".", 1)
        parent = field[0] if len(field) == 2 else "the top level"
        return ConfigError(f"{where}: {loc}: unknown key; remove it or check the spelling (allowed keys of {parent}: see README)")
    if kind == "missing":
        return ConfigError(f"{where}: {loc}: required field is missing; add it")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if kind == "literal_error":
        return ConfigError(f"{where}: {loc}: {msg}")
    inp = e.get("input")
    shown = "" if isinstance(inp, (dict, list)) else f" (got {inp!r})"
    return ConfigError(f"{where}: {loc}: {msg}{shown}")


def parse_study_config(data: Any, *, where: str = "<study>", base_dir: str | None = None,
                       source_text: str | None = None) -> StudyConfig:
    """Validate a study given as a mapping; raises :class:`ConfigError` with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a study file must be a YAML mapping (name:, data:, space:, ...)")
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as err:
        raise _translate(err, where) from None
    cfg.base_dir = base_dir
    cfg.source_text = source_text
    _semantic_checks(cfg, where)
    return cfg


def _semantic_checks(cfg: StudyConfig, where: str) -> None:
    """Checks that need more than the schema: space ranges, builder parameters, metric vs task."""
    try:
        space = cfg.search_space()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    s = cfg.search
    if s.engine == "grid" or (s.engine == "optuna" and s.sampler == "grid"):
        try:
            space.to_sklearn_grid()
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    if s.engine in ("random", "halving") and s.n_trials is None:
        s.n_trials = 10
    if s.engine == "optuna" and s.n_trials is None and s.timeout is None and s.sampler != "grid":
        raise ConfigError(f"{where}: search: give n_trials or timeout for engine optuna")
    if s.engine == "optuna" and s.sampler == "cmaes":
        from hpsearch.space import CategoricalParam

        if all(isinstance(p, CategoricalParam) for p in space.params.values()):
            raise ConfigError(f"{where}: search.sampler: cmaes needs numeric ranges in space; use tpe")
    if cfg.data.task == "regression" and s.metric in ("accuracy", "auc"):
        raise ConfigError(f"{where}: search.metric: {s.metric} is for classification; use mse, mae, rmse or r2")
    if cfg.data.task == "classification" and s.metric in ("mse", "mae", "rmse", "r2"):
        raise ConfigError(f"{where}: search.metric: {s.metric} is for regression; use accuracy, auc or loss")
    # builder and its parameters
    from hpsearch.builders import builder_accepts, resolve_builder

    try:
        fn = resolve_builder(cfg.model.builder)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    accepted = builder_accepts(fn)
    if accepted is not None:
        for section, names in (("space", space.params), ("model.fixed", space.fixed)):
            for n in names:
                if n not in accepted:
                    known = ", ".join(sorted(a for a in accepted if a != "meta"))
                    raise ConfigError(
                        f"{where}: {section}.{n}: unknown parameter for builder {cfg.model.builder}; known: {known}"
                    )
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
            raise ConfigError(f"{where}: data.source: {cfg.data.source!r} is not .csv, .parquet or .npz, nor sklearn:NAME")
        if path.suffix.lower() in (".csv", ".parquet", ".pq") and not cfg.data.target:
            raise ConfigError(f"{where}: data.target: required for {path.suffix} files; name the target column")


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
        raise ConfigError(f"{where}: YAML syntax error{line}: {problem}; fix the file") from None
    if isinstance(data, dict) and overrides:
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            keys = dotted.split(".")
            for k in keys[:-1]:
                if not isinstance(node.get(k), dict):
                    node[k] = {} if node.get(k) is None else node[k]
                node = node[k]
            node[keys[-1]] = value
    return parse_study_config(data, where=where, base_dir=str(p.resolve().parent), source_text=text)
