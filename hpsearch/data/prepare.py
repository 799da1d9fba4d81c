"""Prepared data: validation, seeded splits, labels, and preprocessing fitted on training rows.

Data is prepared once per process (not once per trial): :func:`prepare_data` reads the rows through
the study's data source (:mod:`hpsearch.data.sources.base`) and returns a :class:`PreparedData` with
float32 arrays already scaled by a :class:`Preprocessor` fitted on the training split, labels
encoded to ``0..K-1``, and that preprocessor, which travels with every stored model.

Under k-fold CV the preprocessing is fitted inside each fold: :meth:`PreparedData.fold_arrays`
scales each fold with statistics of that fold's training rows only, and
:meth:`PreparedData.scaler` gives scikit-learn engines the same step for a Pipeline, so no
held-out row ever shapes the scaling of the rows a model trains on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hpsearch.data.fixed import load_fixed_parts
from hpsearch.data.preprocess import Preprocessor, fit_preprocessor
from hpsearch.data.snapshot import RawParts, load_raw
from hpsearch.data.sources.base import RawData, source_for
from hpsearch.data.sources.memory import content_key
from hpsearch.errors import ConfigError, DataError
from hpsearch.metrics import default_metric, metric_problem

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.base import TransformerMixin

    from hpsearch.spec.config import StudyConfig

__all__ = ["Fold", "PreparedData", "Preprocessor", "check_input_rank", "class_list", "prepare_data",
           "preprocessor_template", "validate_arrays"]


class Fold(NamedTuple):
    """One CV fold, each part scaled by a preprocessor fitted on ``X_train``'s raw rows only."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray


@dataclass
class PreparedData:
    """The splits of one study's data, scaled by the preprocessor fitted on the training split."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    preprocessor: Preprocessor
    X_train_raw: np.ndarray  # the training rows before scaling (float64): folds and pipelines refit on them
    X_valid_raw: np.ndarray  # the validation rows before scaling: each fold's own scaler is applied to them
    scaling: str = "standard"  # data.scale: "standard" or "none"
    summary: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False  # an image folder read from disk: the X fields are ImageFiles, not arrays
    X_test_raw: Any = None  # the test rows before scaling (``hpsearch.load_split`` gives them back)

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
            "X_shape_": tuple(int(d) for d in self.X_train.shape),  # rows first, as scikeras
            "target_type_": self.target_type,
            "n_outputs_expected_": 1,
        }
        if self.task == "classification":
            m["n_classes_"] = self.n_classes
            m["classes_"] = np.arange(self.n_classes)
        return m

    def fit_preprocessor(self, X_raw: np.ndarray) -> Preprocessor:
        """A preprocessor whose scaling is fitted on exactly ``X_raw`` (same task, classes, names):
        for a model trained on those rows, e.g. a refit on a fold or on train + valid."""
        return fit_preprocessor(X_raw, self.scaling, self.preprocessor)

    def fold_arrays(self, k: int, seed: int | None) -> list[Fold]:
        """k CV folds of the training split, each scaled with its own training rows' statistics.

        Stratified for classification, shuffled with ``seed`` (the same rows as scikit-learn's
        ``StratifiedKFold`` / ``KFold(shuffle=True, random_state=seed)`` would give).
        """
        from sklearn.model_selection import KFold, StratifiedKFold

        splitter = (StratifiedKFold if self.task == "classification" else KFold)(
            n_splits=k, shuffle=True, random_state=seed)
        folds = []
        for tr, va in splitter.split(self.X_train_raw, self.y_train):
            pre = self.fit_preprocessor(self.X_train_raw[tr])
            folds.append(Fold(pre.transform(self.X_train_raw[tr]), self.y_train[tr],
                              pre.transform(self.X_train_raw[va]), self.y_train[va]))
        return folds

    def scaler(self) -> TransformerMixin | str:
        """An unfitted scikit-learn step doing this study's preprocessing, for a Pipeline fitted per
        fold (``"passthrough"`` when ``data.scale: none`` on a numeric table; the encoding, reshape
        and rescale of tables with text or gaps and of N-D inputs go through the study's own
        :class:`Preprocessor`)."""
        pre = self.preprocessor
        if pre.columns is not None or pre.input_shape is not None or pre.rescale is not None:
            from hpsearch.data.foldstep import FittedPreprocessing

            return FittedPreprocessing(like=pre, scaling=self.scaling)
        if self.scaling == "none":
            return "passthrough"
        from sklearn.preprocessing import StandardScaler

        scaler: TransformerMixin = StandardScaler()
        return scaler


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _infer_task(y: np.ndarray, declared: str) -> str:
    if declared != "auto":
        return declared
    if y.dtype.kind in "OUSb":
        return "classification"
    if y.dtype.kind in "iu":
        n_values = len(np.unique(y))
        return "classification" if n_values <= max(20, int(0.05 * len(y))) and n_values < len(y) else "regression"
    if y.dtype.kind == "f":
        finite = y[np.isfinite(y)]
        if finite.size and np.all(finite == np.round(finite)) and len(np.unique(finite)) <= 20:
            return "classification"
        return "regression"
    return "classification"


def validate_arrays(X: np.ndarray, y: np.ndarray, task: str, where: str, *, min_rows: int = 2) -> None:
    """Reject data that cannot train: empty, NaN/inf, mismatched lengths, bad labels, too few rows."""
    if X.ndim < 2:
        raise DataError(f"{where}: features must be rows of a table, images or sequences, got shape {X.shape};"
                        " reshape X to (rows, features) or (rows, ...)")
    if X.shape[0] == 0 or math.prod(X.shape[1:]) == 0:
        raise DataError(f"{where}: no data (shape {X.shape}); give a file with rows and feature columns")
    if y.ndim != 1:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        else:
            raise DataError(f"{where}: target must be one column, got shape {y.shape}; give a 1-D target")
    if len(y) != X.shape[0]:
        raise DataError(f"{where}: {X.shape[0]} feature rows but {len(y)} target values; give X and y the same rows")
    if X.dtype.kind == "O" and X.ndim == 2:
        pass  # a table with text, categories or gaps: encoded and imputed by the preprocessor
    elif X.dtype.kind not in "iufb":
        raise DataError(f"{where}: features must be numeric, got {X.dtype}; encode categorical columns first")
    elif X.dtype.kind == "f" and not np.all(np.isfinite(X)):
        r, *c = (int(i) for i in np.argwhere(~np.isfinite(X))[0])
        at = f"column {c[0]}" if len(c) == 1 else f"position {tuple(c)}"
        raise DataError(f"{where}: features contain NaN or inf (first at row {r}, {at});"
                        " impute or drop those rows (a CSV / Parquet table imputes gaps itself)")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        first = int(np.argmax(~np.isfinite(y)))
        raise DataError(f"{where}: target contains NaN or inf (first at row {first}); drop those rows")
    if y.dtype.kind == "O" and any(v is None or (isinstance(v, float) and math.isnan(v)) for v in y):
        raise DataError(f"{where}: target has missing values; drop those rows")
    if task == "regression":
        if y.dtype.kind not in "iuf":
            raise DataError(f"{where}: task regression needs a numeric target, got {y.dtype};"
                            " set data.task: classification")
        if len(np.unique(y)) < 2:
            raise DataError(f"{where}: the target is constant, nothing to learn; check data.target")
    else:
        if y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DataError(f"{where}: task classification but the target has fractional values;"
                            " set data.task: regression")
        classes = np.unique(y.astype(str) if y.dtype.kind == "O" else y)
        if len(classes) < 2:
            raise DataError(f"{where}: the target has one class ({_py(classes[0])!r}); classification needs at"
                            " least two: check data.target or add rows of other classes")
    if X.shape[0] < min_rows:
        raise DataError(f"{where}: only {X.shape[0]} rows; at least {min_rows} are needed for this split and cv;"
                        " add rows, or lower search.cv or the data.split fractions")


def class_list(y: np.ndarray) -> list[Any]:
    """A classifier's classes in the order of its outputs: the sorted distinct labels (text labels of a
    mixed column as text), Python values."""
    y = np.asarray(y)
    return [_py(c) for c in np.unique(y.astype(str) if y.dtype.kind == "O" else y)]


def _encode_target(y: np.ndarray, task: str, folds: int, where: str) -> tuple[np.ndarray, list[Any] | None]:
    """Labels as ``0..K-1`` (int64) with their classes, or float32 regression targets and None."""
    if task != "classification":
        return y.astype(np.float32), None
    classes = class_list(y)
    y_enc = np.unique(y.astype(str) if y.dtype.kind == "O" else y, return_inverse=True)[1]
    counts = np.bincount(y_enc)
    need = max(folds, 2)  # stratified splitting and stratified k-fold need each class in every part
    if counts.min() < need:
        worst = classes[int(np.argmin(counts))]
        raise DataError(
            f"{where}: class {worst!r} has only {int(counts.min())} rows; each class needs at least {need}"
            " for the split and cv folds; add rows, merge rare classes, or lower search.cv"
        )
    return y_enc.astype(np.int64), classes


def _split(X: np.ndarray, y: np.ndarray, frac: float, stratify: bool, seed: int,
           where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        X_a, X_b, y_a, y_b = train_test_split(X, y, test_size=frac, random_state=seed,
                                              stratify=y if stratify else None)
    except ValueError as e:  # too few members of a class for a stratified split
        raise DataError(f"{where}: cannot split ({str(e).splitlines()[0]});"
                        " add rows or lower data.split fractions") from None
    return X_a, y_a, X_b, y_b


def _check_metrics(cfg: StudyConfig, task: str, classes: list[Any] | None, where: str) -> None:
    """Each trained metric of the study must fit the task found in the data."""
    for metric in cfg.search.trained_metrics or [default_metric(task)]:
        problem = metric_problem(metric, task, None if classes is None else len(classes), where)
        if problem:
            raise ConfigError(problem)


def _three_way(items: np.ndarray, y: np.ndarray, cfg: StudyConfig, stratify: bool,
               where: str) -> tuple[np.ndarray, ...]:
    """``data.split`` of rows (or row indices): train, y_train, valid, y_valid, test, y_test. A part
    given as its own set (``data.valid`` / ``data.test``) is not split off: it comes back empty here.
    With both given, the training rows keep their order."""
    split = cfg.data.split
    test_frac = 0.0 if cfg.data.test is not None else split.test
    if test_frac > 0:
        rest, y_rest, test, y_test = _split(items, y, test_frac, stratify, split.seed, where)
    else:
        rest, y_rest, test, y_test = items, y, items[:0], y[:0]
    if cfg.data.valid is not None:
        return rest, y_rest, rest[:0], y_rest[:0], test, y_test
    train, y_train, valid, y_valid = _split(rest, y_rest, split.valid / (1.0 - test_frac), stratify,
                                            split.seed + 1, where)
    return train, y_train, valid, y_valid, test, y_test


def _with_fixed(X_part: np.ndarray, y_part: np.ndarray, fixed: tuple[np.ndarray, np.ndarray] | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """A split part, or the fixed set given for it (``data.valid`` / ``data.test``)."""
    return (X_part, y_part) if fixed is None else fixed


def _check_folds(y_train: np.ndarray, classes: list[Any] | None, folds: int, where: str) -> None:
    """k-fold CV runs on the training split: every fold needs rows (and every class, stratified)."""
    if folds <= 1:
        return
    if classes is not None:
        tc = np.bincount(y_train, minlength=len(classes))
        if tc.min() < folds:
            worst = classes[int(np.argmin(tc))]
            raise DataError(
                f"{where}: class {worst!r} has only {int(tc.min())} rows in the training split; {folds}-fold cv"
                f" needs at least {folds}: add rows, merge rare classes, lower search.cv or data.split fractions"
            )
    elif len(y_train) < folds:
        raise DataError(
            f"{where}: the training split has {len(y_train)} rows, fewer than the {folds} cv folds;"
            " add rows, or lower search.cv or the data.split fractions"
        )


def _reshaped(X: np.ndarray, shape: list[int] | None, where: str) -> np.ndarray:
    """``X`` with each sample reshaped to ``data.reshape`` (a ConfigError when the sizes differ)."""
    if shape is None:
        return X
    if X.ndim < 2 or X.dtype.kind == "O" or math.prod(X.shape[1:]) != math.prod(shape):
        raise ConfigError(f"data.reshape: {shape} holds {math.prod(shape)} values but each sample of {where} has"
                          f" shape {X.shape[1:]}; give a shape whose sizes multiply to"
                          f" {math.prod(X.shape[1:]) if X.ndim >= 2 else 0}")
    return X.reshape((X.shape[0], *shape))


def check_input_rank(builder: Any, data: PreparedData, field: str = "model.builder") -> None:
    """Refuse data whose sample rank the builder does not take, before anything is written.

    A builder declares ``fn.input_ranks`` (sample ranks it takes: 1 for table rows, 2 for
    sequences, 3 for images); one that declares nothing is not checked.
    """
    ranks = getattr(builder, "input_ranks", None)
    shape = tuple(data.X_train.shape[1:])
    if ranks is None or len(shape) in ranks:
        return
    takes = " or ".join(_RANK_KINDS.get(r, f"rank-{r} samples") for r in sorted(ranks))
    gives = _RANK_KINDS.get(len(shape), f"rank-{len(shape)} samples")
    raise ConfigError(f"{field}: {getattr(builder, '__name__', builder)} takes {takes}, but the data gives"
                      f" {gives}: each sample has shape {shape}; {_rank_fix(shape, ranks)}")


#: what a sample of each rank is (the data's rows come first: a sequence array is (samples, steps, features))
_RANK_KINDS = {1: "table rows (features,)", 2: "sequences (steps, features)", 3: "images (height, width, channels)"}


def _rank_fix(shape: tuple[int, ...], ranks: Any) -> str:
    """The fix for data of ``shape`` given to a builder that takes samples of ``ranks``: a builder that
    takes the data as it is first, a ``data.reshape`` only where one keeps the samples' meaning."""
    rank = len(shape)
    ours = "model.builder: mlp takes table rows" if rank == 1 else "model.builder: cnn takes sequences and images"
    builder = (f"use a builder that takes {_RANK_KINDS.get(rank, f'rank-{rank} samples')} ({ours}; a builder of"
               f" your own declares fn.input_ranks = ({rank},) and reads meta['X_shape_'])")
    if rank + 1 in ranks:  # a channel (images) or feature (sequences) axis of size 1
        return f"{builder}, or set data.reshape: [{', '.join(map(str, (*shape, 1)))}]"
    if 1 in ranks and rank > 1:
        return (f"{builder}, or flatten each sample with data.reshape: [{math.prod(shape)}] (the order of"
                " steps or pixels is then lost to the model)")
    if 2 in ranks and rank == 3:
        return f"{builder}, or set data.reshape: [{shape[0]}, {shape[1] * shape[2]}] (each image row one step)"
    if rank == 1:
        want = "STEPS, FEATURES" if 2 in ranks else "HEIGHT, WIDTH, CHANNELS"
        return f"{builder}, or set data.reshape: [{want}] whose sizes multiply to {shape[0]}"
    return builder


def _rows(cfg: StudyConfig, raw: RawData, folds: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Validated rows (``data.max_rows`` of them, seeded) and the task."""
    y = np.asarray(raw.y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    task = _infer_task(y, cfg.data.task)
    split = cfg.data.split
    train_frac = 1.0 - split.valid - split.test
    min_rows = max(4, int(np.ceil(max(folds, 2) / train_frac)) + 2)
    X = _reshaped(np.asarray(raw.X), cfg.data.reshape, raw.where)
    validate_arrays(X, y, task, raw.where, min_rows=min_rows)
    if X.ndim == 2 and X.dtype.kind != "O":
        X = X.astype(np.float64)  # N-D inputs keep their dtype (uint8 images stay 1 byte a value)
    if cfg.data.max_rows is not None and cfg.data.max_rows < len(y):
        idx = np.random.default_rng(split.seed).permutation(len(y))[: cfg.data.max_rows]
        X, y = X[idx], y[idx]
        validate_arrays(X, y, task, raw.where, min_rows=min_rows)
    return X, y, task


def _template(cfg: StudyConfig, X: np.ndarray, task: str, classes: list[Any] | None,
              names: list[str] | None) -> Preprocessor:
    """The unfitted preprocessor of this data: what fitting on some training rows starts from."""
    return preprocessor_template(X, task, classes, names, rescale=cfg.data.rescale,
                                 max_categories=cfg.data.max_categories)


def preprocessor_template(X: np.ndarray, task: str, classes: list[Any] | None, names: list[str] | None, *,
                          rescale: float | None = None, max_categories: int = 20) -> Preprocessor:
    """The unfitted :class:`Preprocessor` of rows like ``X`` (a table, or N-D samples after
    ``data.reshape``): what :func:`~hpsearch.data.preprocess.fit_preprocessor` fits on training rows."""
    return Preprocessor(
        task=task, n_features=math.prod(X.shape[1:]), classes=classes, feature_names=names,
        input_shape=[int(d) for d in X.shape[1:]] if X.ndim > 2 else None, rescale=rescale,
        columns=[] if X.dtype.kind == "O" else None, max_categories=max_categories)


def prepare_data(cfg: StudyConfig, folds: int, raws: RawParts | None = None) -> PreparedData:
    """Load, validate, split (seeded; stratified for classification), scale on the training part only.

    ``folds`` is the k of the engine's CV (``get_engine(name).cv_folds(cfg)``; 1 for a holdout):
    the data must give every fold rows (and every class). ``raws``: the parts' raw rows already read
    (:func:`hpsearch.data.snapshot.load_raw`, or a study's data snapshot); default: read them here.
    """
    source = source_for(cfg.data.source)
    if source.streams(cfg):  # the source decides (image folders over data.in_memory)
        root = source.locate(cfg)
        assert root is not None
        return _prepare_streamed(cfg, folds, root)
    raws = raws if raws is not None else load_raw(cfg)
    raw = raws["source"] if raws and "source" in raws else source.load(cfg)  # a snapshot lists folders only
    where = raw.where
    X, y, task = _rows(cfg, raw, folds)
    parts = load_fixed_parts(cfg, X, raw.feature_names, task, raws)  # data.valid / data.test given as their own sets
    # labels are encoded over the main rows and every fixed part together (one class list)
    y_all, classes = _encode_target(np.concatenate([y, *(p.y for p in parts.values())]), task, folds, where)
    y_model = y_all[: len(y)]
    fixed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    at = len(y)
    for name, part in parts.items():
        fixed[name], at = (part.X, y_all[at: at + len(part.y)]), at + len(part.y)
    _check_metrics(cfg, task, classes, source.redacted(cfg))
    X_train, y_train, X_valid, y_valid, X_test, y_test = _three_way(X, y_model, cfg, classes is not None, where)
    X_valid, y_valid = _with_fixed(X_valid, y_valid, fixed.get("valid"))
    X_test, y_test = _with_fixed(X_test, y_test, fixed.get("test"))
    if classes is not None and len(np.unique(y_train)) < len(classes):
        raise DataError(f"{where}: the training split lacks a class; add rows or lower data.split fractions")
    _check_folds(y_train, classes, folds, where)
    pre = fit_preprocessor(X_train, cfg.data.scale, _template(cfg, X, task, classes, raw.feature_names))
    summary: dict[str, Any] = {
        "source": source.redacted(cfg), "task": task, "rows": len(y_model),
        "train_rows": len(y_train), "valid_rows": len(y_valid), "test_rows": len(y_test),
        "features": int(X.shape[1]) if X.ndim == 2 else math.prod(X.shape[1:]), **(raw.info or {}),
        **{f"{name}_source": part.where for name, part in parts.items()},
    }
    summary["split_sha256"] = {name: content_key(Xp, yp) for name, Xp, yp in
                               (("train", X_train, y_train), ("valid", X_valid, y_valid), ("test", X_test, y_test))}
    if X.ndim > 2:
        summary["input_shape"] = list(X.shape[1:])
    if pre.columns:
        summary["encoded_features"] = int(pre.transform(X_train[:1]).shape[1])
    if classes is not None:
        summary["classes"] = len(classes)
        summary["class_counts"] = {str(c): int(n) for c, n in zip(classes, np.bincount(y_model))}
    return PreparedData(
        X_train=pre.transform(X_train), y_train=y_train,
        X_valid=pre.transform(X_valid), y_valid=y_valid,
        X_test=pre.transform(X_test), y_test=y_test,
        task=task, preprocessor=pre, X_train_raw=X_train, X_valid_raw=X_valid, scaling=cfg.data.scale, summary=summary,
        X_test_raw=X_test,
    )


#: the streamed preprocessing is fitted on as many training images as fit in this many bytes as
#: float64 (what the fit computes in), at least 64: all of them in a small training split
SCALE_SAMPLE_BYTES = 64 << 20


def _prepare_streamed(cfg: StudyConfig, folds: int, root: Path) -> PreparedData:
    """``prepare_data`` for an image folder streamed from disk: the same checks, seeded split and
    label encoding on the file list, scaling fitted on (a seeded sample of) the training files only.

    Long: the in-memory steps in order, on file indices instead of rows."""
    from hpsearch.data.stream import ImageFiles, scan

    where = f"data.source {root}"
    for name in ("valid", "test"):
        if getattr(cfg.data, name) is not None:
            raise ConfigError(f"data.{name}: {where} streams from disk, and a fixed {name} set is read into memory;"
                              f" set data.in_memory: true, or use data.split.{name} (a fraction) instead")
    if folds > 1:
        raise ConfigError(f"data.in_memory: {where} streams from disk, which only the Optuna engine's holdout"
                          " split trains on; set data.in_memory: true, or use search.engine: optuna without"
                          " search.cv")
    paths, y, shape, info = scan(cfg, root, where)
    task = _infer_task(y, cfg.data.task)
    split = cfg.data.split
    min_rows = max(4, int(np.ceil(2 / (1.0 - split.valid - split.test))) + 2)
    validate_arrays(np.zeros((len(y), 1), np.uint8), y, task, where, min_rows=min_rows)  # labels and row counts
    idx = np.arange(len(y))
    if cfg.data.max_rows is not None and cfg.data.max_rows < len(y):
        idx = np.random.default_rng(split.seed).permutation(len(y))[: cfg.data.max_rows]
    y = y[idx]
    y_model, classes = _encode_target(y, task, folds, where)
    _check_metrics(cfg, task, classes, cfg.data.source)
    i_train, y_train, i_valid, y_valid, i_test, y_test = _three_way(idx, y_model, cfg, classes is not None, where)
    files = ImageFiles(paths, cfg.data.color, shape)
    train_raw = files.take(i_train)
    pick = np.arange(len(i_train))
    most = max(64, SCALE_SAMPLE_BYTES // (8 * math.prod(shape)))
    if len(pick) > most:
        pick = np.sort(np.random.default_rng(split.seed).choice(len(pick), most, replace=False))
    sample = train_raw[pick]
    pre = fit_preprocessor(sample, cfg.data.scale, _template(cfg, sample, task, classes, None))
    summary: dict[str, Any] = {
        "source": cfg.data.source, "task": task, "rows": len(y_model), "train_rows": len(y_train),
        "valid_rows": len(y_valid), "test_rows": len(y_test), "features": math.prod(shape), **info,
        "input_shape": list(shape), "scale_sample": len(pick),
    }
    if classes is not None:
        summary["classes"] = len(classes)
        summary["class_counts"] = {str(c): int(n) for c, n in zip(classes, np.bincount(y_model))}
    valid_raw = files.take(i_valid)
    # the splits are ImageFiles: array-likes (shape, len, indexing) decoded on demand
    lazy: dict[str, Any] = {"X_train": train_raw.with_preprocessor(pre), "X_valid": valid_raw.with_preprocessor(pre),
            "X_test": files.take(i_test).with_preprocessor(pre), "X_train_raw": train_raw, "X_valid_raw": valid_raw}
    return PreparedData(y_train=y_train, y_valid=y_valid, y_test=y_test, task=task, preprocessor=pre,
                        scaling=cfg.data.scale, summary=summary, streamed=True, **lazy)
