"""Datasets: scikit-learn built-ins, CSV / Parquet / NPZ files; validation; seeded splits; scaling.

Data is prepared once per process (not once per trial): :func:`prepare_data` returns a
:class:`PreparedData` with float32 arrays already scaled, labels encoded to ``0..K-1``, and the
fitted :class:`Preprocessor` that travels with every stored model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from hpsearch.errors import ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.config import StudyConfig

__all__ = ["SKLEARN_DATASETS", "Preprocessor", "PreparedData", "load_raw", "prepare_data", "validate_arrays"]

SKLEARN_DATASETS: dict[str, tuple[str, str]] = {
    "digits": ("load_digits", "classification"),
    "breast_cancer": ("load_breast_cancer", "classification"),
    "wine": ("load_wine", "classification"),
    "iris": ("load_iris", "classification"),
    "diabetes": ("load_diabetes", "regression"),
}


@dataclass
class Preprocessor:
    """Fitted preprocessing kept with each model: feature scaling and label decoding (JSON-safe)."""

    task: str
    n_features: int
    mean: Optional[list[float]] = None
    scale: Optional[list[float]] = None
    classes: Optional[list[Any]] = None
    feature_names: Optional[list[str]] = None

    def transform(self, X: Any) -> np.ndarray:
        X = _as_feature_array(X, self.feature_names)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise DataError(f"X has {X.shape[-1] if X.ndim else 0} features; the model expects {self.n_features}")
        X = X.astype(np.float32, copy=False)
        if self.mean is not None and self.scale is not None:
            X = (X - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.scale, dtype=np.float32)
        return X.astype(np.float32, copy=False)

    def encode_labels(self, y: Any) -> np.ndarray:
        y = np.asarray(y).ravel()
        if self.classes is None:
            return y.astype(np.float32)
        lookup = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.asarray([lookup[_py(v)] for v in y], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"label {e.args[0]!r} was not seen in training; known classes: {self.classes}") from None

    def decode_labels(self, idx: np.ndarray) -> np.ndarray:
        if self.classes is None:
            return idx
        return np.asarray(self.classes, dtype=object if any(isinstance(c, str) for c in self.classes) else None)[idx]

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessor":
        return cls(**json.loads(text))


@dataclass
class PreparedData:
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    preprocessor: Preprocessor
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.preprocessor.classes or [])

    @property
    def target_type(self) -> str:
        if self.task == "regression":
            return "continuous"
        return "binary" if self.n_classes == 2 else "multiclass"

    def meta(self) -> dict[str, Any]:
        """scikeras-style metadata that builders receive as ``meta``."""
        m: dict[str, Any] = {
            "n_features_in_": int(self.X_train.shape[1]),
            "target_type_": self.target_type,
            "n_outputs_expected_": 1,
        }
        if self.task == "classification":
            m["n_classes_"] = self.n_classes
            m["classes_"] = np.arange(self.n_classes)
        return m


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _as_feature_array(X: Any, names: Optional[list[str]]) -> np.ndarray:
    if hasattr(X, "columns") and names:
        missing = [n for n in names if n not in X.columns]
        if missing:
            raise DataError(f"X lacks feature column {missing[0]!r}")
        X = X[names]
    return np.asarray(X)


def load_raw(cfg: "StudyConfig") -> tuple[np.ndarray, np.ndarray, Optional[list[str]], str]:
    """Load features and target; returns ``(X, y, feature_names, where)`` without validating."""
    src = cfg.data.source
    if src.startswith("sklearn:"):
        name = src.split(":", 1)[1]
        if name not in SKLEARN_DATASETS:
            raise DataError(f"data.source: unknown dataset {name!r}; use one of {', '.join(SKLEARN_DATASETS)}")
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, SKLEARN_DATASETS[name][0])()
        names = [str(n) for n in getattr(bunch, "feature_names", [])] or None
        return np.asarray(bunch.data), np.asarray(bunch.target), names, src
    path = cfg.data_path()
    assert path is not None
    where = f"data.source {path}"
    if not path.exists():
        raise DataError(f"{where}: file not found; check the path (relative paths start at the study file)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                xkey = "X" if "X" in keys else ("x" if "x" in keys else None)
                ykey = cfg.data.target or ("y" if "y" in keys else None)
                if xkey is None or ykey not in keys:
                    raise DataError(f"{where}: needs arrays 'X' and '{ykey or 'y'}' (has {keys}); save with np.savez(path, X=..., y=...)")
                return np.asarray(z[xkey]), np.asarray(z[ykey]), None, where
        import pandas as pd

        if suffix == ".csv":
            df = pd.read_csv(path)
        else:
            df = pd.read_parquet(path)
    except DataError:
        raise
    except Exception as e:  # pandas/pyarrow/numpy parse errors: a user's file problem
        if e.__class__.__name__ == "EmptyDataError":
            raise DataError(f"{where}: the file is empty; give a file with a header and rows") from None
        first = (str(e).splitlines() or [""])[0][:120]
        raise DataError(
            f"{where}: cannot read it ({e.__class__.__name__}: {first}); check that it is a valid {suffix} file"
        ) from None
    if len(df) == 0:
        raise DataError(f"{where}: no data rows (only a header); give a file with a header and rows")
    target = cfg.data.target
    if target not in df.columns:
        raise DataError(f"{where}: target column {target!r} not found; set data.target to one of the columns"
                        f" {list(map(str, df.columns))[:20]}")
    if cfg.data.features and target in cfg.data.features:
        raise DataError(f"{where}: data.features lists the target column {target!r}; remove it from data.features")
    feats = cfg.data.features or [c for c in df.columns if c != target]
    for c in feats:
        if c not in df.columns:
            raise DataError(f"{where}: feature column {c!r} not found; fix data.features (columns are"
                            f" {list(map(str, df.columns))[:20]})")
    for c in feats:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise DataError(f"{where}: feature column {c!r} is not numeric; encode it or leave it out with data.features")
    y = df[target].to_numpy()
    X = df[feats].to_numpy(dtype=np.float64)
    return X, y, [str(c) for c in feats], where


def _infer_task(y: np.ndarray, declared: str) -> str:
    if declared != "auto":
        return declared
    if y.dtype.kind in "OUSb":
        return "classification"
    if y.dtype.kind in "iu":
        return "classification" if len(np.unique(y)) <= max(20, int(0.05 * len(y))) and len(np.unique(y)) < len(y) else "regression"
    if y.dtype.kind == "f":
        finite = y[np.isfinite(y)]
        if finite.size and np.all(finite == np.round(finite)) and len(np.unique(finite)) <= 20:
            return "classification"
        return "regression"
    return "classification"


def validate_arrays(X: np.ndarray, y: np.ndarray, task: str, where: str, *, min_rows: int = 2) -> None:
    """Reject data that cannot train: empty, NaN/inf, mismatched lengths, bad labels, too few rows."""
    if X.ndim != 2:
        raise DataError(f"{where}: features must be a 2-D table (rows x features), got shape {X.shape};"
                        " reshape X to (rows, features)")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{where}: no data (shape {X.shape}); give a file with rows and feature columns")
    if y.ndim != 1:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        else:
            raise DataError(f"{where}: target must be one column, got shape {y.shape}; give a 1-D target")
    if len(y) != X.shape[0]:
        raise DataError(f"{where}: {X.shape[0]} feature rows but {len(y)} target values; give X and y the same rows")
    if X.dtype.kind not in "iufb":
        raise DataError(f"{where}: features must be numeric, got {X.dtype}; encode categorical columns first")
    bad = ~np.isfinite(X.astype(np.float64))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{where}: features contain NaN or inf (first at row {r}, column {c}); impute or drop those rows")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise DataError(f"{where}: target contains NaN or inf (first at row {int(np.argmax(~np.isfinite(y)))}); drop those rows")
    if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and v != v) for v in y):
        raise DataError(f"{where}: target has missing values; drop those rows")
    if task == "regression":
        if y.dtype.kind not in "iuf":
            raise DataError(f"{where}: task regression needs a numeric target, got {y.dtype}; set data.task: classification")
        if len(np.unique(y)) < 2:
            raise DataError(f"{where}: the target is constant, nothing to learn; check data.target")
    else:
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DataError(f"{where}: task classification but the target has fractional values; set data.task: regression")
        classes, counts = np.unique(y.astype(str) if y.dtype.kind == "O" else y, return_counts=True)
        if len(classes) < 2:
            raise DataError(f"{where}: the target has one class ({_py(classes[0])!r}); classification needs at"
                            " least two: check data.target or add rows of other classes")
    if X.shape[0] < min_rows:
        raise DataError(f"{where}: only {X.shape[0]} rows; at least {min_rows} are needed for this split and cv;"
                        " add rows, or lower search.cv or the data.split fractions")


def _check_metric(cfg: "StudyConfig", task: str, n_classes: Optional[int]) -> None:
    """The metric must fit the task found in the data (``validate`` and ``run`` both get here)."""
    from hpsearch.config import metric_problem

    metric = cfg.search.metric or ("accuracy" if task == "classification" else "mse")
    problem = metric_problem(metric, task, n_classes, cfg.data.source)
    if problem:
        raise ConfigError(problem)


def prepare_data(cfg: "StudyConfig") -> PreparedData:
    """Load, validate, split (seeded; stratified for classification), scale on the training part only."""
    from sklearn.model_selection import train_test_split

    X, y, names, where = load_raw(cfg)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    task = _infer_task(y, cfg.data.task)
    folds = cfg.search.cv or (3 if cfg.search.engine in ("random", "grid", "halving") else 1)
    split = cfg.data.split
    train_frac = 1.0 - split.valid - split.test
    min_rows = max(4, int(np.ceil(max(folds, 2) / train_frac)) + 2)
    validate_arrays(np.asarray(X), y, task, where, min_rows=min_rows)
    X = np.asarray(X, dtype=np.float64)
    rng = np.random.default_rng(split.seed)
    if cfg.data.max_rows is not None and cfg.data.max_rows < len(y):
        idx = rng.permutation(len(y))[: cfg.data.max_rows]
        X, y = X[idx], y[idx]
        validate_arrays(X, y, task, where, min_rows=min_rows)

    classes: Optional[list[Any]] = None
    if task == "classification":
        yk = y.astype(str) if y.dtype.kind == "O" else y
        uniq, y_enc = np.unique(yk, return_inverse=True)
        classes = [_py(c) for c in uniq]
        counts = np.bincount(y_enc)
        # stratified splitting and stratified k-fold need each class in every part
        need = max(folds, 2)
        if counts.min() < need:
            worst = classes[int(np.argmin(counts))]
            raise DataError(
                f"{where}: class {worst!r} has only {int(counts.min())} rows; each class needs at least {need}"
                " for the split and cv folds; add rows, merge rare classes, or lower search.cv"
            )
        y_model = y_enc.astype(np.int64)
        strat = y_model
    else:
        y_model = y.astype(np.float32)
        strat = None
    _check_metric(cfg, task, len(classes) if classes is not None else None)

    def _split(Xa, ya, frac, strat_a, seed):
        try:
            return train_test_split(Xa, ya, test_size=frac, random_state=seed, stratify=strat_a)
        except ValueError as e:  # too few members of a class for a stratified split
            raise DataError(f"{where}: cannot split ({str(e).splitlines()[0]}); add rows or lower data.split fractions") from None

    if split.test > 0:
        X_rest, X_test, y_rest, y_test = _split(X, y_model, split.test, strat, split.seed)
    else:
        X_rest, y_rest = X, y_model
        X_test, y_test = X[:0], y_model[:0]
    valid_frac = split.valid / (1.0 - split.test)
    X_train, X_valid, y_train, y_valid = _split(
        X_rest, y_rest, valid_frac, y_rest if task == "classification" else None, split.seed + 1
    )
    if task == "classification" and len(np.unique(y_train)) < len(classes or []):
        raise DataError(f"{where}: the training split lacks a class; add rows or lower data.split fractions")
    if folds > 1:
        # k-fold CV runs on the training split: every fold needs rows (and every class, stratified)
        if task == "classification":
            tc = np.bincount(y_train, minlength=len(classes or []))
            if tc.min() < folds:
                worst = (classes or [])[int(np.argmin(tc))]
                raise DataError(
                    f"{where}: class {worst!r} has only {int(tc.min())} rows in the training split; {folds}-fold cv"
                    f" needs at least {folds}: add rows, merge rare classes, lower search.cv or data.split fractions"
                )
        elif len(y_train) < folds:
            raise DataError(
                f"{where}: the training split has {len(y_train)} rows, fewer than the {folds} cv folds;"
                " add rows, or lower search.cv or the data.split fractions"
            )

    mean = scale = None
    if cfg.data.scale == "standard":
        mean_a = X_train.mean(axis=0)
        scale_a = X_train.std(axis=0)
        scale_a[scale_a == 0] = 1.0  # constant columns: leave unscaled (sklearn does the same)
        mean, scale = mean_a.tolist(), scale_a.tolist()
    pre = Preprocessor(task=task, n_features=int(X.shape[1]), mean=mean, scale=scale, classes=classes,
                       feature_names=names)
    summary: dict[str, Any] = {
        "source": cfg.data.source,
        "task": task,
        "rows": int(len(y_model)),
        "train_rows": int(len(y_train)),
        "valid_rows": int(len(y_valid)),
        "test_rows": int(len(y_test)),
        "features": int(X.shape[1]),
    }
    if classes is not None:
        summary["classes"] = len(classes)
        summary["class_counts"] = {str(c): int(n) for c, n in zip(classes, np.bincount(y_model))}
    return PreparedData(
        X_train=pre.transform(X_train), y_train=y_train,
        X_valid=pre.transform(X_valid), y_valid=y_valid,
        X_test=pre.transform(X_test) if len(y_test) else X_test.astype(np.float32), y_test=y_test,
        task=task, preprocessor=pre, summary=summary,
    )
