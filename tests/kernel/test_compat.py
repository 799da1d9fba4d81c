"""Pins hpsearch.compat.PRIVATE_HOOKS: each private hook of scikeras / scikit-learn / Optuna that
hpsearch uses still exists and behaves as hpsearch expects, on the installed versions.

Checked on the lowest and the highest versions of hpsearch.compat.SUPPORTED (see CHECKED_ON): the
lowest in a fresh virtual environment with exactly those versions
(``pip install scikit-learn==1.6.0 scikeras==0.13.0 keras==3.3.0 optuna==5.0.0 numpy==1.26.0
scipy==1.10.0 tensorflow-cpu==2.16.1 pytest pytest-timeout``), the highest in the project's
environment. A failure names the hook, the installed versions and the versions it was checked on.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from packaging.version import Version
from scikeras.wrappers import BaseWrapper
from scikeras.wrappers import KerasClassifier as ScikerasClassifier

from hpsearch.compat import PRIVATE_HOOKS, SUPPORTED

ROOT = Path(__file__).resolve().parents[2]
CHECKED_ON = ("lowest: scikit-learn 1.6.0, scikeras 0.13.0, keras 3.3.0, optuna 5.0.0; "
              "highest: scikit-learn 1.9.1, scikeras 0.13.0, keras 3.15.1, optuna 5.0.0")

#: hpsearch's own names that happen to equal a private name of those packages (not hooks).
OWN_NAMES = {
    "_fit": "engines/trial_runner.py: the trial runner's own fit step",
    "_lock": "console.py: the progress display's own lock",
}


def installed() -> str:
    return ", ".join(f"{p} {version(p)}" for p in SUPPORTED)


def broken(hook: str, problem: str) -> str:
    return (f"private hook {hook} {problem} (installed: {installed()}; checked on {CHECKED_ON}). "
            "Find a public replacement or adapt hpsearch, then update hpsearch/compat.py")


# ------------------------------------------------------------------- one instrumented fit --

class Probe(keras.callbacks.Callback):
    """Counts the fits it takes part in."""

    def __init__(self) -> None:
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs: Any = None) -> None:
        self.fits += 1


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    """Fit plain scikeras once with every hook overridden or read as hpsearch does, and record."""
    log: dict[str, Any] = {"builds": 0, "probe": Probe()}

    def build(meta: Any, compile_kwargs: Any) -> keras.Model:
        log["build_meta"], log["build_compile_kwargs"] = meta, compile_kwargs
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(meta["n_classes_"], activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        return model

    class Spy(ScikerasClassifier):  # type: ignore[misc]
        def _build_keras_model(self) -> keras.Model:
            log["builds"] += 1
            log["compile_kwargs"] = self._get_compile_kwargs()
            return super()._build_keras_model()

        def _get_metadata(self) -> dict[str, Any]:
            meta = super()._get_metadata()
            log["meta"] = dict(meta)
            return meta

        def _fit_keras_model(self, X: Any, y: Any, sample_weight: Any, warm_start: bool, epochs: int,
                             initial_epoch: int, **kwargs: Any) -> None:
            log["fit_kwargs"] = dict(kwargs)
            log["fit_callbacks_before"] = list(self._fit_callbacks)
            self._fit_callbacks = [*self._fit_callbacks, log["probe"]]
            super()._fit_keras_model(X, y, sample_weight=sample_weight, warm_start=warm_start,
                                     epochs=epochs, initial_epoch=initial_epoch, **kwargs)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3)).astype("float32")
    y = np.array([0, 1, 2] * 4)
    est = Spy(model=build, loss="sparse_categorical_crossentropy", optimizer="sgd", epochs=1, verbose=0)
    est.fit(X, y, validation_data=(X, y))
    log["estimator"], log["data"] = est, (X, y)
    return log


# ----------------------------------------------------------------------- the hook checks --

def _check_build_keras_model(fitted: dict[str, Any]) -> None:
    assert list(inspect.signature(BaseWrapper._build_keras_model).parameters) == ["self"], "signature changed"
    assert fitted["builds"] == 1, "fit() no longer builds the model through it"
    assert fitted["estimator"].model_ is not None


def _uncompiled(meta: Any) -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(meta["n_classes_"], activation="softmax")])


def _check_check_model_param(fitted: dict[str, Any]) -> None:
    assert list(inspect.signature(BaseWrapper._check_model_param).parameters) == ["self"], "signature changed"
    assert ScikerasClassifier(model=_uncompiled)._check_model_param() is _uncompiled, "no longer returns model"
    with pytest.raises(ValueError, match="_keras_build_fn"):
        ScikerasClassifier()._check_model_param()


def _check_ensure_compiled_model(fitted: dict[str, Any]) -> None:
    X, y = fitted["data"]
    est = ScikerasClassifier(model=_uncompiled, loss="sparse_categorical_crossentropy", verbose=0)
    est.initialize(X, y)
    assert not est.model_.compiled, "initialize() now compiles the model"
    est._ensure_compiled_model()
    assert est.model_.compiled and type(est.model_.optimizer).__name__ == "RMSprop", "no longer compiles it"


def _check_user_params(fitted: dict[str, Any]) -> None:
    assert ScikerasClassifier(model=_uncompiled, foo=1, model__bar=2)._user_params == {"foo", "model__bar"}


def _check_route_params(fitted: dict[str, Any]) -> None:
    from scikeras._utils import route_params

    params = {"a": 1, "b": 0, "model__c": 2, "model__d__e": 3, "fit__f": 4}
    assert route_params(params, destination="model", pass_filter={"a"}, strict=True) == {"a": 1, "c": 2}


def _check_fit_keras_model(fitted: dict[str, Any]) -> None:
    params = list(inspect.signature(BaseWrapper._fit_keras_model).parameters)
    assert params == ["self", "X", "y", "sample_weight", "warm_start", "epochs", "initial_epoch", "kwargs"], \
        f"signature changed: {params}"
    assert "validation_data" in fitted["fit_kwargs"], "fit() keyword arguments no longer reach it"


def _check_fit_callbacks(fitted: dict[str, Any]) -> None:
    assert isinstance(fitted["fit_callbacks_before"], list), "not a list when fitting"
    assert fitted["probe"].fits == 1, "callbacks added to it no longer reach Keras' fit"


def _check_get_metadata(fitted: dict[str, Any]) -> None:
    meta = fitted["meta"]
    for key in ("n_features_in_", "target_type_", "n_classes_"):
        assert key in meta, f"meta lacks {key}"
    assert meta["target_type_"] == "multiclass" and meta["n_classes_"] == 3
    assert fitted["build_meta"]["n_classes_"] == 3, "meta no longer reaches a builder that asks for it"


def _check_get_compile_kwargs(fitted: dict[str, Any]) -> None:
    kwargs = fitted["compile_kwargs"]
    assert isinstance(kwargs, dict) and {"optimizer", "loss", "metrics"} <= set(kwargs), kwargs
    assert set(fitted["build_compile_kwargs"]) == set(kwargs), "scikeras passes builders other compile kwargs"


def _check_is_categorical_crossentropy(fitted: dict[str, Any]) -> None:
    from scikeras.utils.transformers import ClassifierLabelEncoder, _is_categorical_crossentropy

    y = np.array([0, 1, 2, 1])
    for loss in ("categorical_crossentropy", keras.losses.CategoricalCrossentropy(),
                 "sparse_categorical_crossentropy", None):
        one_hot = ClassifierLabelEncoder(loss=loss).fit(y).transform(y).shape[1] == 3
        assert _is_categorical_crossentropy(loss) is one_hot, f"disagrees with the target encoder for {loss!r}"


def _check_sklearn_tags_patch(fitted: dict[str, Any]) -> None:
    import hpsearch.models.estimators  # noqa: F401  (applies the patch when scikeras lacks the method)

    method = vars(BaseWrapper).get("__sklearn_tags__")
    assert method is not None, "hpsearch.models.estimators did not add it"
    assert method.__module__ == "hpsearch.models.estimators", (
        "scikeras now defines __sklearn_tags__ itself: remove the patch from hpsearch/estimators.py"
        " and its PRIVATE_HOOKS entry")
    assert "_more_tags" in vars(BaseWrapper), "scikeras changed how it declares tags"


def _check_get_stale_trial_ids(fitted: dict[str, Any]) -> None:
    import time
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    tid = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    storage.record_heartbeat(tid)
    assert storage._get_stale_trial_ids(study._study_id) == [], "a fresh heartbeat counts as stale"
    time.sleep(2.5)  # SQLite's now() has whole seconds
    assert storage._get_stale_trial_ids(study._study_id) == [tid], "a silent trial is not listed as stale"


def _check_get_variable_index(fitted: dict[str, Any]) -> None:
    import keras

    opt = keras.optimizers.SGD()
    variables = [keras.Variable(np.zeros(2)), keras.Variable(np.zeros(3))]
    opt.build(variables)
    assert [opt._get_variable_index(v) for v in variables] == [0, 1], "no longer the index in build()'s list"


# ---------------------------------------------------- TPE internals (hpsearch.engines.packsampling) --

@functools.cache
def _tpe_case() -> dict[str, Any]:
    """A seeded in-memory study past TPE's startup, one constant-liar TPE ask on it, and its split."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"x": FloatDistribution(1e-3, 1.0, log=True), "n": IntDistribution(1, 9),
             "c": CategoricalDistribution(["a", "b", "c"])}
    rng = np.random.default_rng(0)
    study = optuna.create_study()
    for i in range(30):
        p = {"x": float(10 ** rng.uniform(-3, 0)), "n": int(rng.integers(1, 10)), "c": "abc"[i % 3]}
        study.add_trial(optuna.trial.create_trial(params=p, distributions=space, value=float(rng.normal())))
    tpe = optuna.samplers.TPESampler(seed=3, multivariate=True, constant_liar=True, n_startup_trials=7,
                                     n_ei_candidates=11)
    study.sampler = tpe
    asked = study.ask(space)  # RUNNING, with its relative params written by TPE
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    return {"study": study, "tpe": tpe, "space": space, "asked": asked, "trials": trials}


def _check_split_trials(fitted: dict[str, Any]) -> None:
    from optuna.samplers._tpe.sampler import _split_trials

    case = _tpe_case()
    below, above = _split_trials(case["study"], case["trials"], 3)
    done = sorted((t for t in case["trials"] if t.values), key=lambda t: t.values[0])
    assert {t.number for t in below} == {t.number for t in done[:3]}, "below is no longer the n best"
    assert len(below) + len(above) == len(case["trials"]) and case["asked"].number in {t.number for t in above}


def _check_truncnorm(fitted: dict[str, Any]) -> None:
    """Optuna's truncated normal reads _log_ndtr and _ndtri_exp from its module at call time (so the
    swap reaches TPE), and SciPy's functions agree with them."""
    import numpy as np
    from optuna.samplers._tpe import _truncnorm

    from hpsearch.engines import packsampling

    x = np.linspace(-30.0, 8.0, 400)
    np.testing.assert_allclose(packsampling._log_ndtr(x), _truncnorm._log_ndtr(x), rtol=1e-6)
    y = -np.logspace(-10, 2.5, 200)
    np.testing.assert_allclose(packsampling._ndtri_exp(y), _truncnorm._ndtri_exp(y), rtol=1e-9)
    a, b = np.array([-3.0, 0.5]), np.array([1.0, 4.0])
    plain = _truncnorm.logpdf(np.array([0.2, 1.0]), a, b)
    calls: list[int] = []
    real = _truncnorm._log_ndtr
    _truncnorm._log_ndtr = lambda v: calls.append(1) or real(v)
    try:
        np.testing.assert_allclose(_truncnorm.logpdf(np.array([0.2, 1.0]), a, b), plain)
        assert calls, "logpdf no longer calls _truncnorm._log_ndtr through its module"
    finally:
        _truncnorm._log_ndtr = real
    z = np.linspace(-8.0, 8.0, 400)  # Optuna's _ndtr flushes to 0 below -8.37: compared where it does not
    np.testing.assert_allclose(packsampling._ndtr(z), _truncnorm._ndtr(z), rtol=1e-12, atol=1e-16)
    with packsampling._vectorised_truncnorm():
        assert _truncnorm._log_ndtr is packsampling._log_ndtr and _truncnorm._ndtr is packsampling._ndtr
        np.testing.assert_allclose(_truncnorm.logpdf(np.array([0.2, 1.0]), a, b), plain, rtol=1e-9)
    assert _truncnorm._log_ndtr is real and _truncnorm._ndtr is not packsampling._ndtr


def _check_parzen(fitted: dict[str, Any]) -> None:
    """hpsearch.engines.parzen's mixture log-density equals Optuna's (the Gaussian mass it computes
    with Optuna's _log_diff, _log_ndtr and _ndtr is still the one that density uses)."""
    import numpy as np
    from optuna.samplers._tpe.probability_distributions import (
        _BatchedDiscreteTruncNormDistributions,
        _BatchedTruncLogNormDistributions,
        _MixtureOfProductDistribution,
    )

    from hpsearch.engines.parzen import mixture_log_pdf

    rng = np.random.default_rng(0)
    k = 40
    mix = _MixtureOfProductDistribution(weights=np.full(k, 1 / k), distributions=[
        _BatchedDiscreteTruncNormDistributions(mu=rng.integers(1, 30, k).astype(float),
                                               sigma=rng.uniform(0.3, 9, k), low=1.0, high=29.0, step=1.0),
        _BatchedTruncLogNormDistributions(mu=rng.uniform(-7, -2, k), sigma=rng.uniform(0.1, 2, k), low=1e-3, high=0.1)])
    x = np.array([rng.integers(1, 30, 50).astype(float), np.exp(rng.uniform(np.log(1e-3), np.log(0.1), 50))]).T
    np.testing.assert_allclose(mixture_log_pdf(mix, x), mix.log_pdf(x), rtol=1e-11)


def _check_relative_params_key(fitted: dict[str, Any]) -> None:
    import json

    from optuna.samplers._tpe.sampler import _RELATIVE_PARAMS_KEY, _SYSTEM_ATTR_MAX_LENGTH

    case = _tpe_case()
    frozen = case["study"].get_trials(deepcopy=False)[case["asked"].number]
    text = frozen.system_attrs.get(f"{_RELATIVE_PARAMS_KEY}:0")
    assert text is not None, "TPE no longer writes a constant-liar proposal under this key"
    assert json.loads(text) == frozen.params and isinstance(_SYSTEM_ATTR_MAX_LENGTH, int) and len(text) <= \
        _SYSTEM_ATTR_MAX_LENGTH


def _fit(case: dict[str, Any]) -> tuple[Any, Any]:
    from optuna.samplers._tpe.sampler import _split_trials

    below, above = _split_trials(case["study"], case["trials"], 3)
    tpe = case["tpe"]
    return (tpe._build_parzen_estimator(case["study"], case["space"], below, handle_below=True),
            tpe._build_parzen_estimator(case["study"], case["space"], above, handle_below=False))


def _check_build_parzen_estimator(fitted: dict[str, Any]) -> None:
    import optuna

    params = list(inspect.signature(optuna.samplers.TPESampler._build_parzen_estimator).parameters)
    assert params == ["self", "study", "search_space", "trials", "handle_below"], f"signature changed: {params}"
    l_est, g_est = _fit(_tpe_case())
    cand = l_est.sample(np.random.RandomState(0), 5)
    assert set(cand) == {"x", "n", "c"} and l_est.log_pdf(cand).shape == g_est.log_pdf(cand).shape == (5,)


def _check_parzen_estimator_parameters(fitted: dict[str, Any]) -> None:
    """The liar kernel hpsearch adds for a proposal is the kernel a refit of g gives that point."""
    from hpsearch.engines.packsampling import PackPlan

    case = _tpe_case()
    tpe, space = case["tpe"], case["space"]
    par = tpe._parzen_estimator_parameters
    assert callable(par.weights) and par.prior_weight > 0 and isinstance(par.consider_endpoints, bool)
    plan = PackPlan(tpe, case["study"], space, 4, case["trials"])
    plan.next()
    from optuna.samplers._tpe.sampler import _split_trials

    _, above = _split_trials(case["study"], case["trials"], 3)
    obs = tpe._get_internal_repr(above, space, case["study"])
    for row in plan.cand[:8]:
        if row[1] in set(obs["n"].tolist()):
            continue  # a tie in a discrete dimension: TPE's own sigma depends on argsort's tie order
        refit = tpe._parzen_estimator_cls({p: np.append(obs[p], row[i]) for i, p in enumerate(space)}, space, par)
        mine = plan._liar_kernel(row)
        for d_mine, d_refit in zip(mine.distributions, refit._mixture_distribution.distributions):
            for field in d_mine._fields:
                got, want = np.asarray(getattr(d_mine, field), float), np.asarray(getattr(d_refit, field), float)
                want = want[[-2]] if want.ndim and len(want) == len(obs["x"]) + 2 else want
                assert np.allclose(got, want), f"the liar kernel's {field} differs from a refit of g"


def _check_tpe_settings(fitted: dict[str, Any]) -> None:
    tpe = _tpe_case()["tpe"]
    assert tpe._gamma is None or callable(tpe._gamma)
    assert tpe._n_ei_candidates == 11 and tpe._n_startup_trials == 7 and tpe._constant_liar is True
    a, b = (np.random.RandomState(0), np.random.RandomState(0))
    assert isinstance(tpe._rng.rng, np.random.RandomState) and a.rand() == b.rand()


def _check_mixture_distribution(fitted: dict[str, Any]) -> None:
    from optuna.samplers._tpe.probability_distributions import (
        _BatchedCategoricalDistributions,
        _MixtureOfProductDistribution,
    )

    case = _tpe_case()
    _, g_est = _fit(case)
    mix = g_est._mixture_distribution
    assert isinstance(mix, _MixtureOfProductDistribution) and len(mix.distributions) == len(case["space"])
    n_above = len(case["trials"]) - 3
    assert len(mix.weights) == n_above + 1, "g no longer has one kernel per trial plus the prior"
    x, n, c = mix.distributions
    assert isinstance(c, _BatchedCategoricalDistributions) and c.weights.shape == (n_above + 1, 3)
    assert x.is_log and not n.is_log and n.adapted_low == 0.5 and len(x.mu) == len(x.sigma) == n_above + 1
    cand = g_est.sample(np.random.RandomState(1), 6)
    arr = np.array([cand[p] for p in case["space"]]).T
    assert np.allclose(mix.log_pdf(arr), g_est.log_pdf(cand)), "the mixture's log_pdf is no longer the estimator's"


def _check_storage_and_trial_id(fitted: dict[str, Any]) -> None:
    import optuna

    case = _tpe_case()
    frozen = case["study"].get_trials(deepcopy=False)[case["asked"].number]
    assert isinstance(case["study"]._storage, optuna.storages.BaseStorage)
    assert case["study"]._storage.get_trial(frozen._trial_id).number == frozen.number


def _check_batch_intermediate_values(fitted: dict[str, Any]) -> None:
    import math

    import optuna

    from hpsearch.storage.batch import write_intermediate_values

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    a, b = study.ask(), study.ask()
    ids = [storage.get_trial_id_from_study_id_trial_number(study._study_id, t.number) for t in (a, b)]
    write_intermediate_values(storage, [(ids[0], 0, 0.5), (ids[1], 0, math.inf), (ids[1], 1, -math.inf)])
    assert storage.get_trial(ids[0]).intermediate_values == {0: 0.5}
    assert storage.get_trial(ids[1]).intermediate_values == {0: math.inf, 1: -math.inf}
    study.tell(b, 1.0)
    try:
        write_intermediate_values(storage, [(ids[0], 1, 0.7), (ids[1], 2, 0.8)])
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    else:
        raise AssertionError("a finished trial's intermediate value was written")
    assert storage.get_trial(ids[0]).intermediate_values == {0: 0.5}, "half a batch was committed"


def _check_batch_user_attrs(fitted: dict[str, Any]) -> None:
    import optuna

    from hpsearch.storage.batch import write_user_attrs

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    tid = storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    storage.set_trial_user_attr(tid, "a", 1)
    write_user_attrs(storage, tid, {"a": [1, 2], "b": {"c": None}, "d": "x"})
    assert storage.get_trial(tid).user_attrs == {"a": [1, 2], "b": {"c": None}, "d": "x"}
    study.tell(trial, 1.0)
    try:
        write_user_attrs(storage, tid, {"e": 1})
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    else:
        raise AssertionError("a finished trial's attribute was written")


def _check_batch_heartbeats(fitted: dict[str, Any]) -> None:
    import warnings

    import optuna

    from hpsearch.storage.batch import beat_and_check

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=storage)
    ids = [storage.get_trial_id_from_study_id_trial_number(study._study_id, study.ask().number) for _ in range(3)]
    storage.record_heartbeat(ids[0])  # an existing heartbeat row is updated, the others inserted
    storage.set_trial_state_values(ids[2], optuna.trial.TrialState.FAIL)
    assert beat_and_check(storage, ids) == {ids[2]}
    assert beat_and_check(storage, ids[:2]) == set()
    assert storage._get_stale_trial_ids(study._study_id) == [], "a batched heartbeat is not seen as one"


def _check_trial_cache(fitted: dict[str, Any]) -> None:
    import optuna

    seen: list[dict[int, float]] = []

    class Spy(optuna.pruners.BasePruner):
        def prune(self, study: Any, trial: Any) -> bool:
            seen.append(dict(trial.intermediate_values))
            return False

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage, pruner=Spy())
    trial = study.ask()
    assert trial._trial_id == storage.get_trial_id_from_study_id_trial_number(study._study_id, trial.number)
    trial.report(0.5, 0)
    assert trial._cached_frozen_trial.intermediate_values == {0: 0.5}
    trial._cached_frozen_trial.intermediate_values[1] = 0.7  # what hpsearch.packing.pack.Reports does
    trial.should_prune()
    assert seen == [{0: 0.5, 1: 0.7}], "should_prune does not hand the pruner the trial's cached values"


def _check_bracket_id(fitted: dict[str, Any]) -> None:
    import optuna

    seen: list[Any] = []

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            seen.append(getattr(study, "_bracket_id", "missing"))
            return super().sample_independent(study, trial, name, dist)

    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
    study = optuna.create_study(sampler=Spy(seed=0), pruner=pruner)
    for _ in range(12):  # the brackets exist from the first should_prune on
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, 1)
        trial.should_prune()
    assert seen and all(isinstance(b, int) for b in seen) and len(set(seen)) > 1, \
        f"samplers no longer get a bracket's study view under Hyperband: {seen}"


def _check_filter_study(fitted: dict[str, Any]) -> None:
    import optuna
    from optuna import pruners

    seen: list[tuple[Any, Any]] = []
    outer: list[Any] = []

    class Spy(optuna.samplers.RandomSampler):
        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            # at the same moment, the view _filter_study gives a not yet stored trial of that number
            draft = optuna.trial.FrozenTrial(trial.number, optuna.trial.TrialState.WAITING, None, None, None, {}, {},
                                             {}, {}, {}, -1)
            seen.append((getattr(study, "_bracket_id", None),
                         getattr(pruners._filter_study(outer[0], draft), "_bracket_id", None)))
            return super().sample_independent(study, trial, name, dist)

    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9, reduction_factor=3)
    study = optuna.create_study(sampler=Spy(seed=0), pruner=pruner)
    outer.append(study)
    for _ in range(12):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, 1)
        trial.should_prune()
    assert len({got for got, _ in seen}) > 1, "no brackets to tell apart"
    assert all(got == ours for got, ours in seen), \
        f"_filter_study no longer gives the bracket view a trial of that number gets: {seen}"
    plain = optuna.create_study()
    assert pruners._filter_study(plain, study.trials[0]) is plain


def _check_batch_create_and_finish(fitted: dict[str, Any]) -> None:
    """create_trials and finish_trials store what create_new_trial and tell store, trial for trial."""
    batch_writes_store_what_optuna_stores("sqlite:///:memory:")


def batch_writes_store_what_optuna_stores(url: str) -> None:
    """create_trials and finish_trials store what create_new_trial and tell store, trial for trial,
    on the storage at ``url`` (each way in a study of its own)."""
    import datetime
    import math

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    from hpsearch.storage.batch import (
        Finish,
        create_trials,
        finish_trials,
        running_without_heartbeat,
        write_intermediate_values,
    )

    dist = FloatDistribution(0.0, 1.0)
    awkward = 'tab\there, line\nbreak, back\\slash, "quotes", \\N, é'  # COPY's text format escapes these
    odd = [(0, math.inf), (1, -math.inf), (3, 1e-300)]

    def template(x: float) -> Any:
        t = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, params={"x": x, "c": "b"},
                                      distributions={"x": dist, "c": CategoricalDistribution(["a", "b"])},
                                      user_attrs={"w": "a"}, system_attrs={"s": [1]})
        t.state, t.value = TrialState.RUNNING, None
        return t

    stores = {}
    for way in ("public", "batched"):
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(storage=storage)
        study.enqueue_trial({"x": 0.0})  # a trial already there: the new ones are numbered after it
        xs = [0.1, 0.2, 0.3, 0.4]
        if way == "public":
            ids = [storage.create_new_trial(study._study_id, template_trial=template(x)) for x in xs]
        else:
            made = [template(x) for x in xs]
            ids = create_trials(storage, study._study_id, made)
            assert not running_without_heartbeat(storage, study._study_id), "created without heartbeats"
            # stored as Optuna stores it (naive UTC), read back as the template's local time
            assert [storage.get_trial(i).datetime_start for i in ids] == [t.datetime_start for t in made]
        storage.set_trial_intermediate_value(ids[1], 2, 0.25)
        storage.set_trial_intermediate_value(ids[1], 5, 0.5)
        ends = [("COMPLETE", [0.9]), ("PRUNED", None), ("COMPLETE", [math.nan]), ("FAIL", None)]
        if way == "public":
            for step, v in odd:
                storage.set_trial_intermediate_value(ids[3], step, v)
            for tid, (state, values) in zip(ids, ends):
                storage.set_trial_user_attr(tid, "end", state + awkward)
                trial = optuna.trial.Trial(study, tid)
                study.tell(trial, values, state=None if state == "COMPLETE" else TrialState[state])
        else:
            write_intermediate_values(storage, [(ids[3], step, v) for step, v in odd])
            finish_trials(storage, [Finish(tid, state, values, {"end": state + awkward})
                                    for tid, (state, values) in zip(ids, ends)], 1)
        stores[way] = study.get_trials()
    storage = optuna.storages.RDBStorage(url)  # several objectives: a pruned trial has no value
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    ids = create_trials(storage, study._study_id, [template(0.5), template(0.6)])
    for tid in ids:
        storage.set_trial_intermediate_value(tid, 1, 0.5)
    study.tell(optuna.trial.Trial(study, ids[1]), state=TrialState.PRUNED)
    finish_trials(storage, [Finish(ids[0], "PRUNED", None, {})], 2)
    assert [t.values for t in study.get_trials()] == [None, None]
    now = datetime.datetime.now()
    for a, b in zip(stores["public"], stores["batched"], strict=True):
        assert (a.number, a.state, a.values, a.params, a.distributions, a.user_attrs, a.intermediate_values) == (
            b.number, b.state, b.values, b.params, b.distributions, b.user_attrs, b.intermediate_values), f"{a} != {b}"
        assert a.system_attrs == b.system_attrs
        if a.number:  # the created ones (0: the queued trial, not started)
            assert abs((a.datetime_start - b.datetime_start).total_seconds()) < 60
            assert abs((b.datetime_complete - now).total_seconds()) < 60, "datetime_complete not stored as Optuna's"
            assert a.state.is_finished() and b.datetime_complete >= b.datetime_start


def _check_thread_local_trials(fitted: dict[str, Any]) -> None:
    import optuna

    from hpsearch.execution.drafts import resync
    from hpsearch.storage.batch import Finish, finish_trials

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    assert [t.state.name for t in study._get_trials(deepcopy=False, use_cache=True)] == ["RUNNING"]
    finish_trials(storage, [Finish(trial._trial_id, "COMPLETE", [1.0], {})], 1)
    assert [t.state.name for t in study._get_trials(deepcopy=False, use_cache=True)] == ["RUNNING"], \
        "samplers no longer read trials through a per-thread copy: resync may be unneeded"
    resync(study)
    assert [t.state.name for t in study._get_trials(deepcopy=False, use_cache=True)] == ["COMPLETE"], \
        "dropping _thread_local.cached_all_trials no longer refreshes what samplers read"


def _check_created_trial(fitted: dict[str, Any]) -> None:
    """hpsearch.execution.drafts.created_trial builds the Trial Trial.__init__ builds from its read:
    the same attributes (no more, no fewer), the same values, and a Trial that works as one."""
    import datetime

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from hpsearch.execution.drafts import created_trial
    from hpsearch.storage.batch import create_trials

    seen: list[int] = []

    class Spy(optuna.samplers.RandomSampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            seen.append(trial.number)

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    study = optuna.create_study(storage=storage, sampler=Spy(seed=0))
    study.enqueue_trial({"x": 0.5})  # numbered 0: the created one is numbered after it
    template = optuna.trial.FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.datetime.now(), datetime_complete=None,
        params={"x": 0.25}, distributions={"x": FloatDistribution(0, 1)}, user_attrs={"w": "a"},
        system_attrs={"fixed_params": {"y": 3}}, intermediate_values={}, trial_id=-1)
    [tid] = create_trials(storage, study._study_id, [template])
    built = created_trial(study, template, tid)
    read = optuna.trial.Trial(study, tid)
    assert seen == [1, 1], "before_trial is not called as Trial.__init__ calls it"
    assert set(vars(built)) == set(vars(read)), (
        f"Trial.__init__ sets {sorted(vars(read))}, created_trial {sorted(vars(built))}")
    for name, value in vars(read).items():
        assert getattr(built, name) == value, f"Trial.{name}: {getattr(built, name)!r} != {value!r} (as read)"
    assert built.number == 1 and built.params == {"x": 0.25} and built.suggest_float("x", 0, 1) == 0.25
    study.get_trials()  # Optuna's cache learns the new trial's id (a new param's write needs it), as the loop reads
    assert built.suggest_int("y", 0, 5) == 3, "the fixed params are not Trial._fixed_params any more"
    assert 0 <= built.suggest_float("z", 0, 1) <= 1 and built.relative_params == {}


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "keras.optimizers.Optimizer._get_variable_index": _check_get_variable_index,
    "scikeras.wrappers.BaseWrapper._build_keras_model": _check_build_keras_model,
    "scikeras.wrappers.BaseWrapper._check_model_param": _check_check_model_param,
    "scikeras.wrappers.BaseWrapper._ensure_compiled_model": _check_ensure_compiled_model,
    "scikeras.wrappers.BaseWrapper._user_params": _check_user_params,
    "scikeras._utils.route_params": _check_route_params,
    "scikeras.wrappers.BaseWrapper._fit_keras_model": _check_fit_keras_model,
    "scikeras.wrappers.BaseWrapper._fit_callbacks": _check_fit_callbacks,
    "scikeras.wrappers.BaseWrapper._get_metadata": _check_get_metadata,
    "scikeras.wrappers.BaseWrapper._get_compile_kwargs": _check_get_compile_kwargs,
    "scikeras.utils.transformers._is_categorical_crossentropy": _check_is_categorical_crossentropy,
    "scikeras.wrappers.BaseWrapper.__sklearn_tags__": _check_sklearn_tags_patch,
    "optuna.storages.RDBStorage._get_stale_trial_ids": _check_get_stale_trial_ids,
    "optuna.samplers._tpe.sampler._split_trials": _check_split_trials,
    "optuna.samplers._tpe.sampler._RELATIVE_PARAMS_KEY": _check_relative_params_key,
    "optuna.samplers._tpe.sampler._SYSTEM_ATTR_MAX_LENGTH": _check_relative_params_key,
    "optuna.samplers.TPESampler._build_parzen_estimator": _check_build_parzen_estimator,
    "optuna.samplers.TPESampler._parzen_estimator_parameters": _check_parzen_estimator_parameters,
    "optuna.samplers.TPESampler._gamma": _check_tpe_settings,
    "optuna.samplers.TPESampler._n_ei_candidates": _check_tpe_settings,
    "optuna.samplers.TPESampler._n_startup_trials": _check_tpe_settings,
    "optuna.samplers.TPESampler._constant_liar": _check_tpe_settings,
    "optuna.samplers.TPESampler._rng": _check_tpe_settings,
    "optuna.samplers._tpe.parzen_estimator._ParzenEstimator._mixture_distribution": _check_mixture_distribution,
    "optuna.samplers._tpe.probability_distributions._MixtureOfProductDistribution": _check_mixture_distribution,
    "optuna.samplers._tpe.probability_distributions._BatchedCategoricalDistributions": _check_mixture_distribution,
    "optuna.samplers._tpe._truncnorm._log_ndtr": _check_truncnorm,
    "optuna.samplers._tpe._truncnorm._ndtri_exp": _check_truncnorm,
    "optuna.samplers._tpe._truncnorm._ndtr": _check_truncnorm,
    "optuna.samplers._tpe._truncnorm._log_diff": _check_parzen,
    "optuna.study.Study._storage": _check_storage_and_trial_id,
    "optuna.trial.FrozenTrial._trial_id": _check_storage_and_trial_id,
    "optuna.study.Study._bracket_id": _check_bracket_id,
    "optuna.pruners._filter_study": _check_filter_study,
    "optuna.storages._rdb.models.TrialIntermediateValueModel": _check_batch_intermediate_values,
    "optuna.storages._rdb.models.TrialHeartbeatModel": _check_batch_heartbeats,
    "optuna.storages._rdb.models.TrialModel": _check_batch_heartbeats,
    "optuna.storages._rdb.models.TrialUserAttributeModel": _check_batch_user_attrs,
    "optuna.storages._rdb.models.TrialModel._datetime_complete_utc": _check_batch_create_and_finish,
    "optuna.storages._rdb.models.TrialValueModel": _check_batch_create_and_finish,
    "optuna.storages._rdb.models.StudyModel": _check_batch_create_and_finish,
    "optuna.storages._rdb.models.TrialParamModel": _check_batch_create_and_finish,
    "optuna.study.Study._thread_local": _check_thread_local_trials,
    "optuna.storages._rdb.models.TrialSystemAttributeModel": _check_batch_create_and_finish,
    "optuna.trial.Trial._cached_frozen_trial": _check_trial_cache,
    "optuna.trial.Trial._trial_id": _check_trial_cache,
    "optuna.trial.Trial._relative_params": _check_created_trial,
    "optuna.trial.Trial._fixed_params": _check_created_trial,
}


def test_every_hook_has_a_check() -> None:
    assert {h.name for h in PRIVATE_HOOKS} == set(CHECKS)
    assert all(h.package in SUPPORTED and h.why for h in PRIVATE_HOOKS)


@pytest.mark.parametrize("hook", PRIVATE_HOOKS, ids=lambda h: h.name)
def test_private_hook_still_works(hook: Any, fitted: dict[str, Any]) -> None:
    try:
        CHECKS[hook.name](fitted)
    except (AssertionError, AttributeError, ImportError, TypeError) as exc:
        pytest.fail(broken(hook.name, f"no longer works: {type(exc).__name__}: {exc}"))


# ---------------------------------------------------------------------------- versions --

def declared_minimums() -> dict[str, str]:
    """``package -> lowest version`` from pyproject.toml's dependencies."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][0-9.]*)', text))


def test_supported_lowest_versions_are_the_declared_ones() -> None:
    declared = declared_minimums()
    for package, (lowest, highest) in SUPPORTED.items():
        assert declared.get(package) == lowest, (
            f"pyproject.toml declares {package}>={declared.get(package)} but hpsearch.compat.SUPPORTED"
            f" says {lowest}: keep them equal (and run this file at that version)")
        assert Version(lowest) <= Version(highest)


def test_declared_ranges_stop_where_the_private_hooks_were_checked() -> None:
    """scikeras is unmaintained and most private hooks are on it: 0.13.* only; Optuna below 6."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"scikeras>=0.13,<0.14"' in text and '"optuna>=5.0,<6"' in text
    assert "optuna-integration" not in text  # a dependency nothing imports is not declared


def test_installed_versions_are_supported() -> None:
    for package, (lowest, _highest) in SUPPORTED.items():
        assert Version(version(package)) >= Version(lowest), (
            f"{package} {version(package)} is older than the lowest supported {lowest}")


# ------------------------------------------------ no unlisted private name in hpsearch --

def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_names_used(path: Path) -> Iterator[tuple[str, int, bool]]:
    """Private identifiers one hpsearch module uses, as (name, line, certainly foreign): attributes,
    methods its classes define (overrides), getattr-style string constants, and the private parts
    of what it imports from other packages (certainly foreign)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            yield node.attr, node.lineno, False
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(item.name):
                    yield item.name, item.lineno, False
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and not (node.module or "").startswith("hpsearch"):
            for part in [*(node.module or "").split("."), *(alias.name for alias in node.names)]:
                if _private(part):
                    yield part, node.lineno, True
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier() \
                and _private(node.value):
            yield node.value, node.lineno, False


def foreign_private_names(fitted: dict[str, Any], tmp_path: Path) -> set[str]:
    """Private names of scikeras, scikit-learn and Optuna objects hpsearch works with."""
    import optuna
    import scikeras.utils
    import scikeras.utils.transformers
    import sklearn.base
    import sklearn.model_selection
    import sklearn.pipeline
    from optuna.artifacts import FileSystemArtifactStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    trial = study.ask()
    objects: list[Any] = [
        BaseWrapper, ScikerasClassifier, fitted["estimator"], scikeras.utils, scikeras.utils.transformers,
        sklearn.base.BaseEstimator, sklearn.model_selection.GridSearchCV, sklearn.model_selection.RandomizedSearchCV,
        sklearn.pipeline.Pipeline, study, trial, optuna.storages.RDBStorage, optuna.samplers.TPESampler(),
        optuna.pruners.HyperbandPruner(), FileSystemArtifactStore(str(tmp_path)),
    ]
    names: set[str] = set()
    for obj in objects:
        names |= {n for n in dir(obj) if _private(n)}
        names |= {n for n in getattr(obj, "__dict__", {}) if _private(n)}
    return names


def test_hpsearch_uses_no_unlisted_private_name(fitted: dict[str, Any], tmp_path: Path) -> None:
    foreign = foreign_private_names(fitted, tmp_path)
    listed = {part for h in PRIVATE_HOOKS for part in h.name.split(".") if _private(part)}
    unlisted, used = [], set()
    for path in sorted((ROOT / "hpsearch").rglob("*.py")):
        for name, line, certain in private_names_used(path):
            if name in listed:
                used.add(name)
            elif certain or (name in foreign and name not in OWN_NAMES):
                unlisted.append(f"{path.relative_to(ROOT)}:{line} {name}")
    assert not unlisted, (
        "hpsearch uses private names of scikeras / scikit-learn / Optuna that hpsearch/compat.py"
        f" PRIVATE_HOOKS does not list (list them with a test here, or add a name that is hpsearch's"
        f" own to OWN_NAMES): {', '.join(unlisted)}")
    assert listed <= used, f"PRIVATE_HOOKS lists hooks hpsearch no longer uses: {sorted(listed - used)}"
