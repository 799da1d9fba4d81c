"""Searches over in-memory arrays, stored like studies: ``GridSearchCV``, ``RandomizedSearchCV``,
``HalvingRandomSearchCV`` (scikit-learn's signatures) and ``OptunaSearchCV``.

``fit(X, y, **fit_params)`` hands the arrays to the ``memory:`` data source
(:mod:`hpsearch.data.sources.memory`), turns the constructor and fit arguments into a study
(:mod:`hpsearch.search.translate`), validates it like a study file and runs it with
:func:`hpsearch.study.run.run_study`: the same engines, packing, pruning, stop rules and storage.
Each candidate is an Optuna trial in ``storage`` as it finishes, so ``hpsearch status / best``, the
dashboard and ``hpsearch.load_best(study_name)`` work on it. The fitted attributes are read back
from the study, in scikit-learn's names.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, is_classifier

from hpsearch.data.sources.memory import hold
from hpsearch.errors import ConfigError
from hpsearch.metrics import sklearn_scoring
from hpsearch.models.mlp import build_mlp
from hpsearch.pareto import chosen_trial
from hpsearch.records import STUDY, TRIAL, clean_attr
from hpsearch.results.best import load_best
from hpsearch.search.cvresults import candidate_trials, cv_results
from hpsearch.search.translate import (
    FIT_PARAMS,
    Study,
    estimator_sections,
    metric_of,
    space_section,
    study_param,
    unwrap_estimator,
)
from hpsearch.storage import open_storage, resolve_storage_url
from hpsearch.study.run import run_study
from hpsearch.study.validate import parse_study_config
from hpsearch.trials.context import NullObserver, Observer

__all__ = ["GridSearchCV", "RandomizedSearchCV", "HalvingRandomSearchCV", "OptunaSearchCV"]

#: the share of ``X`` held out for early stopping and pruning when ``fit`` gets no validation_data
VALID_SHARE = 0.2


class _Collect:
    """An observer that keeps every message (``messages_``) and passes all on to the user's."""

    def __init__(self, inner: Observer | None) -> None:
        self.inner: Observer = inner if inner is not None else NullObserver()
        self.messages: list[str] = []
        self.total: int | None = None
        self.label, self.direction = "", "maximize"

    def begin(self, done: int, best: float | None) -> None:
        self.inner.total, self.inner.label, self.inner.direction = self.total, self.label, self.direction
        self.inner.begin(done, best)

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None:
        self.inner.trial_done(number, state, value, detail)

    def message(self, text: str) -> None:
        self.messages.append(text)
        self.inner.message(text)

    def end(self) -> None:
        self.inner.end()


def _drawn_seed(decisions: list[str], why: str) -> int:
    """A fresh seed (scikit-learn's None: different each run), said and stored with the study."""
    seed = int(np.random.SeedSequence().entropy % (2**32))  # type: ignore[operator]
    decisions.append(f"hpsearch: {why}: drew seed {seed} (stored with the study; give an int to repeat the search)")
    return seed


class _PythonSearch(ABC, BaseEstimator):
    """What the four searches share; each subclass gives its ``search:`` section."""

    _what: ClassVar[str] = "param_distributions"  # the constructor argument holding the space

    def _space(self) -> Any:
        return getattr(self, self._what)

    @abstractmethod
    def _search_section(self, seed: int, decisions: list[str]) -> dict[str, Any]:
        """The study's ``search:`` section (engine, budget, folds) from the constructor's arguments."""

    def _seed(self, decisions: list[str], keras_est: Any) -> int:
        rs = getattr(self, "random_state", None)
        if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool):
            return int(rs)
        if rs is not None:
            raise ConfigError("random_state: give an int (or None); hpsearch stores the seed with the study")
        return _drawn_seed(decisions, "random_state=None")

    def _cv(self, default: int | None) -> int | None:
        cv = self.cv if self.cv is not None else default
        if cv is not None and (isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2):
            raise ConfigError(f"cv: {cv!r}; give an int >= 2 (hpsearch makes the folds: stratified for a"
                              " classifier, as scikit-learn's)")
        return None if cv is None else int(cv)

    def _study(self, X: Any, y: Any, fit_params: dict[str, Any]) -> tuple[Study, int]:
        unknown = sorted(set(fit_params) - FIT_PARAMS)
        if unknown:
            raise ConfigError(f"fit: {unknown[0]} is not a fit parameter of hpsearch searches; give only"
                              f" {', '.join(sorted(FIT_PARAMS))}")
        study = Study()
        d = study.decisions
        classifier = is_classifier(self.estimator)
        unwrapped = unwrap_estimator(self.estimator, study)
        seed = self._seed(d, unwrapped.keras)
        own = unwrapped.keras.get_params(deep=False).get("random_state")
        if own is not None and own != seed:
            d.append(f"hpsearch: the estimator's random_state {own!r} is replaced by the search's seed {seed}"
                     " (one seed per study: candidates, folds and each model's initial weights)")
        space = space_section(self._space(), self._what, unwrapped.prefix)
        given = self._space()
        given = given[0] if isinstance(given, list) else given
        self._given_names = {study_param(str(raw), unwrapped.prefix): str(raw) for raw in given}
        model, train, builder = estimator_sections(unwrapped.keras, set(space), fit_params, d)
        train["pack"] = self.pack
        if builder is not build_mlp:
            study.decide("search.estimator", "one model at a time",
                         f"builder {model['builder']} is not hpsearch's MLP, so candidates train one model at a time"
                         " (only the built-in MLP packs several candidates into one compiled model)")
        source = hold(X, y)
        data: dict[str, Any] = {"source": source, "task": "classification" if classifier else "regression",
                                "scale": unwrapped.scale, "split": {"test": 0.0, "seed": seed}}
        valid = fit_params.get("validation_data")
        if valid is not None:
            if not isinstance(valid, (tuple, list)) or len(valid) != 2:
                raise ConfigError("fit: validation_data must be a pair (X_valid, y_valid)")
            data["valid"] = hold(*valid)
        else:
            data["split"]["valid"] = VALID_SHARE
            d.append(f"hpsearch: no validation_data given: {VALID_SHARE:.0%} of X (seeded) is held out for early"
                     " stopping and pruning; the search cross-validates on the rest")
        name = self.study_name
        if name is None:
            name = f"{type(self).__name__.lower()}-{time.strftime('%Y%m%d-%H%M%S')}-{source.split(':')[1][:6]}"
            d.append(f"hpsearch: study_name not given: the study is {name!r}")
        study.mapping = {"name": name, "data": data, "model": model, "space": space, "train": train,
                         "search": {**self._search_section(seed, d),
                                    "metric": metric_of(self.scoring, classifier), "seed": seed}}
        return study, seed

    def fit(self, X: Any, y: Any, **fit_params: Any) -> _PythonSearch:
        """Run the search on ``X`` / ``y`` (``epochs``, ``batch_size``, ``verbose``, ``validation_data``,
        ``callbacks`` as scikeras' ``fit`` takes them) and store every candidate as a trial."""
        study, _seed = self._study(X, y, fit_params)
        cfg = parse_study_config(study.mapping, where=type(self).__name__)
        observer = _Collect(self.observer)
        for line in study.decisions:
            observer.message(line)
        run_study(cfg, storage=self.storage, artifacts=self.artifacts, resume=self.resume, observer=observer)
        url = resolve_storage_url(self.storage, None)
        import optuna

        self.study_ = optuna.load_study(study_name=cfg.name, storage=open_storage(url))
        self.study_.set_user_attr(STUDY.PYTHON_SEARCH, {"class": type(self).__name__, "decisions": study.decisions})
        if study.keyed:
            decided = dict(self.study_.user_attrs.get(STUDY.DECISIONS) or {})
            decided.update({k: clean_attr({"value": v, "line": line}) for k, (v, line) in study.keyed.items()})
            self.study_.set_user_attr(STUDY.DECISIONS, decided)
        self.study_name_ = cfg.name
        self.messages_ = observer.messages
        self._read_back(cfg.search.metric, is_classifier(self.estimator), cfg.search.cv or self._default_folds())
        if self.refit:
            self.best_estimator_ = load_best(cfg.name, storage=self.storage, artifacts=self.artifacts)
            self.refit_time_ = self.study_.user_attrs.get(STUDY.REFIT_TIME)
        return self

    def _default_folds(self) -> int:
        return 1

    def _read_back(self, metric: Any, classifier: bool, folds: int) -> None:
        scorer_name, sign = sklearn_scoring(str(metric), "classification" if classifier else "regression")
        from sklearn.metrics import get_scorer

        self.scorer_ = get_scorer(scorer_name)
        self.multimetric_ = False
        self.n_splits_ = folds
        self.cv_results_ = cv_results(self.study_, sign, self._given_names)
        best = chosen_trial(self.study_)
        number = best.user_attrs.get(TRIAL.RESULT_OF, best.number)  # a stopped halving's result: its candidate
        self.best_index_ = next(i for i, t in enumerate(candidate_trials(self.study_)) if t.number == number)
        self.best_params_ = {self._given_names.get(k, k): v for k, v in best.params.items()}
        self.best_score_ = float(self.cv_results_["mean_test_score"][self.best_index_])
        self.trials_ = self.study_.get_trials()

    # the best model's predictions, as scikit-learn's searches give them
    def predict(self, X: Any) -> Any:
        return self.best_estimator_.predict(X)

    def predict_proba(self, X: Any) -> Any:
        return self.best_estimator_.predict_proba(X)

    def score(self, X: Any, y: Any) -> float:
        return float(self.scorer_(self.best_estimator_, X, y))

    @property
    def classes_(self) -> Any:
        return self.best_estimator_.classes_


class RandomizedSearchCV(_PythonSearch):
    """scikit-learn's ``RandomizedSearchCV`` over an hpsearch Keras estimator, stored as a study: the same
    candidates (``ParameterSampler`` with ``random_state``), folds and scores; ``n_iter`` candidates."""

    def __init__(self, estimator: Any, param_distributions: Any, *, n_iter: int = 10, scoring: Any = None,
                 n_jobs: int | None = None, refit: bool = True, cv: int | None = None, verbose: int = 0,
                 random_state: int | None = None, storage: str | None = None, study_name: str | None = None,
                 artifacts: str | None = None, pack: int | str = "auto", resume: bool = False,
                 observer: Observer | None = None) -> None:
        self.estimator, self.param_distributions = estimator, param_distributions
        self.n_iter, self.scoring = n_iter, scoring
        self.n_jobs, self.refit, self.cv, self.verbose, self.random_state = n_jobs, refit, cv, verbose, random_state
        self.storage, self.study_name, self.artifacts, self.pack = storage, study_name, artifacts, pack
        self.resume, self.observer = resume, observer

    def _default_folds(self) -> int:
        return 5

    def _search_section(self, seed: int, decisions: list[str]) -> dict[str, Any]:
        return {"engine": "random", "n_trials": int(self.n_iter), "cv": self._cv(5), "n_jobs": int(self.n_jobs or 1)}


class GridSearchCV(_PythonSearch):
    """scikit-learn's ``GridSearchCV`` over an hpsearch Keras estimator, stored as a study: every point
    of ``param_grid`` in ``ParameterGrid``'s order."""

    _what = "param_grid"

    def __init__(self, estimator: Any, param_grid: Any, *, scoring: Any = None, n_jobs: int | None = None,
                 refit: bool = True, cv: int | None = None, verbose: int = 0, storage: str | None = None,
                 study_name: str | None = None, artifacts: str | None = None, pack: int | str = "auto",
                 resume: bool = False, observer: Observer | None = None) -> None:
        self.estimator, self.param_grid, self.scoring, self.n_jobs = estimator, param_grid, scoring, n_jobs
        self.refit, self.cv, self.verbose = refit, cv, verbose
        self.storage, self.study_name, self.artifacts, self.pack = storage, study_name, artifacts, pack
        self.resume, self.observer = resume, observer

    def _seed(self, decisions: list[str], keras_est: Any) -> int:
        """A grid draws nothing: the seed is the estimator's ``random_state`` (its models' weights)."""
        rs = keras_est.get_params(deep=False).get("random_state")
        if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool):
            return int(rs)
        return _drawn_seed(decisions, "the estimator's random_state=None")

    def _default_folds(self) -> int:
        return 5

    def _search_section(self, seed: int, decisions: list[str]) -> dict[str, Any]:
        return {"engine": "grid", "cv": self._cv(5), "n_jobs": int(self.n_jobs or 1)}


class HalvingRandomSearchCV(_PythonSearch):
    """scikit-learn's ``HalvingRandomSearchCV`` with epochs as the resource (``resource="epochs"``, the
    only one: rows are not a resource here): ``n_candidates`` train ``min_resources`` epochs, the best
    ``1/factor`` go on with ``factor`` times more, up to ``max_resources`` (default: the fit's epochs)."""

    def __init__(self, estimator: Any, param_distributions: Any, *, n_candidates: int = 10, factor: int = 3,
                 resource: str = "epochs", max_resources: int | str = "auto", min_resources: int | str = "smallest",
                 scoring: Any = None, refit: bool = True, cv: int | None = None, verbose: int = 0,
                 random_state: int | None = None, n_jobs: int | None = None, storage: str | None = None,
                 study_name: str | None = None, artifacts: str | None = None, pack: int | str = "auto",
                 resume: bool = False, observer: Observer | None = None) -> None:
        self.estimator, self.param_distributions, self.n_candidates = estimator, param_distributions, n_candidates
        self.factor, self.resource = factor, resource
        self.max_resources, self.min_resources = max_resources, min_resources
        self.scoring, self.refit, self.cv, self.verbose = scoring, refit, cv, verbose
        self.random_state, self.n_jobs = random_state, n_jobs
        self.storage, self.study_name, self.artifacts, self.pack = storage, study_name, artifacts, pack
        self.resume, self.observer = resume, observer

    def _default_folds(self) -> int:
        return 5

    def _search_section(self, seed: int, decisions: list[str]) -> dict[str, Any]:
        if self.resource != "epochs":
            raise ConfigError(f"resource: {self.resource!r}; hpsearch halves over epochs: give resource='epochs'")
        if not isinstance(self.n_candidates, int):
            raise ConfigError(f"n_candidates: {self.n_candidates!r}; give an int")
        out: dict[str, Any] = {"engine": "halving", "n_trials": self.n_candidates, "factor": int(self.factor),
                               "cv": self._cv(5), "n_jobs": int(self.n_jobs or 1)}
        if isinstance(self.min_resources, int):
            out["min_resource"] = self.min_resources
        elif self.min_resources != "smallest":
            raise ConfigError(f"min_resources: {self.min_resources!r}; give an int or 'smallest'")
        return out

    def _study(self, X: Any, y: Any, fit_params: dict[str, Any]) -> tuple[Study, int]:
        study, seed = super()._study(X, y, fit_params)
        if isinstance(self.max_resources, int):
            study.mapping["train"]["epochs"] = self.max_resources
        elif self.max_resources != "auto":
            raise ConfigError(f"max_resources: {self.max_resources!r}; give an int or 'auto' (the fit's epochs)")
        return study, seed


class OptunaSearchCV(_PythonSearch):
    """An Optuna search over an hpsearch Keras estimator, stored as a study: ``n_trials`` trials asked of
    ``sampler``, pruned per epoch by ``pruner`` on ``validation_data`` (``cv=None``, the default) or on
    the folds (``cv=k``), packed like a study file's. Samplers and pruners are named as in a study
    file (``tpe``, ``random``, ``gp``, ...; ``hyperband``, ``median``, ``none``)."""

    def __init__(self, estimator: Any, param_distributions: Any, *, n_trials: int = 10, cv: int | None = None,
                 sampler: str = "tpe", pruner: str = "hyperband", timeout: float | None = None,
                 scoring: Any = None, refit: bool = True, random_state: int | None = None, verbose: int = 0,
                 storage: str | None = None, study_name: str | None = None, artifacts: str | None = None,
                 pack: int | str = "auto", resume: bool = False, observer: Observer | None = None) -> None:
        self.estimator, self.param_distributions = estimator, param_distributions
        self.n_trials, self.cv = n_trials, cv
        self.sampler, self.pruner, self.timeout, self.scoring = sampler, pruner, timeout, scoring
        self.refit, self.random_state, self.verbose = refit, random_state, verbose
        self.storage, self.study_name, self.artifacts, self.pack = storage, study_name, artifacts, pack
        self.resume, self.observer = resume, observer

    def _search_section(self, seed: int, decisions: list[str]) -> dict[str, Any]:
        for field, value in (("sampler", self.sampler), ("pruner", self.pruner)):
            if not isinstance(value, str):
                raise ConfigError(f"{field}: {type(value).__name__} object; name it as a study file does"
                                  " (e.g. sampler='tpe', pruner='hyperband'), so workers and the stored study"
                                  " can rebuild it")
        out: dict[str, Any] = {"engine": "optuna", "n_trials": int(self.n_trials), "sampler": self.sampler,
                               "pruner": self.pruner}
        cv = self._cv(None)
        if cv is not None:
            out["cv"] = cv
        if self.timeout is not None:
            out["timeout"] = float(self.timeout)
        return out

    def _default_folds(self) -> int:
        return 1
