"""One search space, three conversions: sklearn grids, scipy distributions, Optuna suggestions."""

from __future__ import annotations

import re
import warnings

import numpy as np
import optuna
import pytest
from scipy import stats

from hpsearch.errors import ConfigError, UserError
from hpsearch.spec.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    SearchSpace,
    coerce_params,
    coerce_value,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

CLASSIC = {  # the classic recipe, as a study file declares it
    "n_hidden": {"choice": [0, 1, 2, 3]},
    "n_neurons": {"int": [1, 99]},
    "learning_rate": {"float": [3.0e-4, 3.0e-2], "log": True},
}


def space(**kw) -> SearchSpace:
    return SearchSpace.from_dict(kw)


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------


def test_from_dict_study_file_forms():
    s = SearchSpace.from_dict(CLASSIC, fixed={"activation": "relu"})
    assert s.params["n_hidden"] == CategoricalParam((0, 1, 2, 3))
    assert s.params["n_neurons"] == IntParam(1, 99)
    assert s.params["learning_rate"] == FloatParam(3e-4, 3e-2, log=True)
    assert s.fixed == {"activation": "relu"}
    assert s.names == ["n_hidden", "n_neurons", "learning_rate"]


def test_python_side_specs_classic_recipe():
    """The book's ``{"n_neurons": np.arange(1, 100), "learning_rate": reciprocal(3e-4, 3e-2)}``."""
    s = SearchSpace.from_dict({
        "n_hidden": [0, 1, 2, 3],
        "n_neurons": np.arange(1, 100),
        "learning_rate": stats.reciprocal(3e-4, 3e-2),
    })
    n = s.params["n_neurons"]
    assert isinstance(n, CategoricalParam) and len(n.choices) == 99
    assert all(type(v) is int for v in n.choices)  # Keras 3 rejects np.int64 sizes
    assert s.params["learning_rate"] == FloatParam(3e-4, 3e-2, log=True)
    assert s.params["n_hidden"] == CategoricalParam((0, 1, 2, 3))


@pytest.mark.parametrize("spec,expected", [
    (stats.loguniform(1e-3, 1e-1), FloatParam(1e-3, 1e-1, log=True)),
    (stats.loguniform(a=1e-3, b=1e-1), FloatParam(1e-3, 1e-1, log=True)),
    (stats.reciprocal(1e-3, b=1e-1), FloatParam(1e-3, 1e-1, log=True)),
    (stats.uniform(0.1, 0.5), FloatParam(0.1, 0.6)),
    (stats.uniform(loc=0.2, scale=0.3), FloatParam(0.2, 0.5)),
    (stats.randint(1, 100), IntParam(1, 99)),
    (stats.randint(low=2, high=5), IntParam(2, 4)),
    (range(3), CategoricalParam((0, 1, 2))),
    (("relu", "elu"), CategoricalParam(("relu", "elu"))),
    (np.array([0.1, 0.2]), CategoricalParam((0.1, 0.2))),
    (IntParam(1, 5, step=2), IntParam(1, 5, step=2)),
])
def test_python_side_specs(spec, expected):
    p = SearchSpace.from_dict({"x": spec}).params["x"]
    assert p == expected
    if isinstance(p, CategoricalParam):
        assert all(not isinstance(c, np.generic) for c in p.choices)


@pytest.mark.parametrize("spec,fragment", [
    ({"int": [5, 1]}, "low 5 > high 1"),
    ({"float": [1.0, 0.5]}, "make low <= high"),
    ({"float": [0.0, 1.0], "log": True}, "log range needs low > 0"),
    ({"int": [0, 10], "log": True}, "log range needs low > 0"),
    ({"choice": []}, "choice list is empty"),
    ({"int": [1.5, 3]}, "int range needs int numbers"),
    ({"int": [True, 3]}, "int range needs int numbers"),
    ({"int": [1, 10], "step": 0}, "step must be >= 1"),
    ({"int": [1, 10], "step": 2, "log": True}, "log and step cannot be combined"),
    ({"float": ["a", 1]}, "float range needs float numbers"),
    ({"float": [1]}, "[low, high] pair"),
    ({"float": [0, float("inf")]}, "finite"),
    ({"float": [0, 1], "log": "yes"}, "log must be true or false"),
    ({"float": [0, 1], "grid": 0}, "grid must be >= 1"),
    ({"int": [1, 3], "float": [1, 3]}, "exactly one of"),
    ({"choice": "relu"}, "choice must be a list"),
    ({"choice": [[1, 2]]}, "scalar choices"),
    ({"int": [1, 3], "lo": 1}, "unknown key 'lo'"),
    (stats.norm(0, 1), "cannot read"),
    (42, "cannot read"),
])
def test_bad_specs_raise_config_error_naming_the_parameter(spec, fragment):
    with pytest.raises(ConfigError) as ei:
        SearchSpace.from_dict({"p": spec})
    msg = str(ei.value)
    assert msg.startswith("space.p: ") and fragment in msg
    assert "\n" not in msg
    assert re.search(r"\b(use|give|make|raise|drop|remove|write|set|add)\b", msg)  # says what to do
    assert isinstance(ei.value, UserError)


def test_searched_and_fixed_overlap_is_rejected():
    with pytest.raises(ConfigError, match="space.n_neurons: is both searched and fixed"):
        SearchSpace.from_dict({"n_neurons": {"int": [1, 3]}}, fixed={"n_neurons": 4})


# --------------------------------------------------------------------------------------------------
# sklearn grid
# --------------------------------------------------------------------------------------------------


def test_to_sklearn_grid():
    s = space(
        a={"int": [1, 7], "step": 3},
        b={"choice": ["relu", "elu"]},
        c={"float": [0.0, 1.0], "grid": 3},
        d={"float": [1e-3, 1e-1], "log": True, "grid": 3},
        e={"float": [0.5, 0.9], "grid": 1},
    )
    g = s.to_sklearn_grid()
    assert g["a"] == [1, 4, 7]
    assert g["b"] == ["relu", "elu"]
    assert g["c"] == [0.0, 0.5, 1.0]
    assert g["d"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert g["e"] == [0.5]
    assert s.to_optuna_grid() == g
    from sklearn.model_selection import ParameterGrid

    assert len(ParameterGrid(g)) == 3 * 2 * 3 * 3 * 1


def test_grid_of_a_huge_int_range_is_refused_not_materialised():
    s = space(n={"int": [1, 10**9]})
    with pytest.raises(ConfigError, match=r"space.n: engine grid would enumerate 1000000000 values"):
        s.to_sklearn_grid()
    assert space(n={"int": [0, 10**9], "step": 10**6}).to_sklearn_grid()["n"][-1] == 10**9
    with pytest.raises(ConfigError, match="too many"):
        space(f={"float": [0, 1], "grid": 10**7})


def test_grid_of_a_float_range_without_points_names_the_fix():
    with pytest.raises(ConfigError, match=r"space.lr: .*add `grid: N`"):
        space(lr={"float": [1e-3, 1e-1], "log": True}).to_sklearn_grid()


# --------------------------------------------------------------------------------------------------
# scipy distributions (RandomizedSearchCV)
# --------------------------------------------------------------------------------------------------


def test_log_float_is_loguniform_equal_to_reciprocal():
    d = space(lr={"float": [3e-4, 3e-2], "log": True}).to_sklearn_distributions()["lr"]
    assert d.dist.name in ("loguniform", "reciprocal")
    ref = stats.reciprocal(3e-4, 3e-2)
    xs = np.geomspace(3e-4, 3e-2, 7)
    np.testing.assert_allclose(d.cdf(xs), ref.cdf(xs))
    np.testing.assert_allclose(d.rvs(size=50, random_state=3), ref.rvs(size=50, random_state=3))
    sample = d.rvs(size=5000, random_state=0)
    assert sample.min() >= 3e-4 and sample.max() <= 3e-2
    # log-uniform: half of the mass below the geometric midpoint
    assert abs(np.mean(sample < np.sqrt(3e-4 * 3e-2)) - 0.5) < 0.03


def test_distributions_sample_in_range():
    s = space(
        i={"int": [1, 99]},
        il={"int": [1, 1000], "log": True},
        istep={"int": [2, 10], "step": 4},
        f={"float": [0.1, 0.4]},
        c={"choice": ["a", "b"]},
    )
    d = s.to_sklearn_distributions()
    rng = np.random.RandomState(0)
    i = d["i"].rvs(size=4000, random_state=rng)
    assert i.min() == 1 and i.max() == 99  # both ends inclusive
    il = np.asarray(d["il"].rvs(size=4000, random_state=rng))
    assert il.dtype.kind == "i" and il.min() >= 1 and il.max() <= 1000
    assert np.mean(il < 32) > 0.4  # log-spread: about half the draws below sqrt(1000)
    one = d["il"].rvs(random_state=rng)
    assert 1 <= int(one) <= 1000
    assert d["istep"] == [2, 6, 10]
    f = d["f"].rvs(size=2000, random_state=rng)
    assert f.min() >= 0.1 and f.max() <= 0.4
    assert d["c"] == ["a", "b"]


def test_distributions_drive_randomized_search_parameter_sampler():
    from sklearn.model_selection import ParameterSampler

    s = SearchSpace.from_dict(CLASSIC)
    samples = list(ParameterSampler(s.to_sklearn_distributions(), n_iter=30, random_state=0))
    assert len(samples) == 30
    for p in samples:
        q = s.full_params(p)
        assert q["n_hidden"] in (0, 1, 2, 3) and 1 <= q["n_neurons"] <= 99 and 3e-4 <= q["learning_rate"] <= 3e-2
        assert type(q["n_neurons"]) is int and type(q["learning_rate"]) is float
    # the same seed draws the same candidates
    again = list(ParameterSampler(s.to_sklearn_distributions(), n_iter=30, random_state=0))
    assert samples == again


def test_degenerate_ranges_still_sample():
    d = space(f={"float": [0.5, 0.5]}, i={"int": [3, 3]}, il={"int": [4, 4], "log": True}).to_sklearn_distributions()
    from sklearn.model_selection import ParameterSampler

    for p in ParameterSampler(d, n_iter=5, random_state=0):
        assert p["f"] == 0.5 and p["i"] == 3 and p["il"] == 4


# --------------------------------------------------------------------------------------------------
# Optuna
# --------------------------------------------------------------------------------------------------


def test_suggest_via_optuna_trial_is_seeded_and_in_range():
    s = SearchSpace.from_dict({**CLASSIC, "step": {"int": [2, 11], "step": 3}, "il": {"int": [1, 64], "log": True}},
                              fixed={"activation": "relu"})

    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(10):
            trial = study.ask()
            out.append(s.suggest(trial))
            study.tell(trial, 0.0)
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "range is not divisible by step" warning from Optuna
        a = draw(0)
    assert a == draw(0) and a != draw(1)
    for p in a:
        assert set(p) == {"n_hidden", "n_neurons", "learning_rate", "step", "il"}  # fixed are not suggested
        assert p["n_hidden"] in (0, 1, 2, 3)
        assert 1 <= p["n_neurons"] <= 99 and type(p["n_neurons"]) is int
        assert 3e-4 <= p["learning_rate"] <= 3e-2
        assert p["step"] in (2, 5, 8, 11) and 1 <= p["il"] <= 64
        assert s.full_params(p)["activation"] == "relu"


def test_to_optuna_distributions():
    s = SearchSpace.from_dict({**CLASSIC, "st": {"int": [0, 10], "step": 4}, "f": {"float": [0.0, 0.5]}})
    d = s.to_optuna_distributions()
    assert d["n_hidden"] == optuna.distributions.CategoricalDistribution([0, 1, 2, 3])
    assert d["n_neurons"] == optuna.distributions.IntDistribution(1, 99)
    assert d["learning_rate"] == optuna.distributions.FloatDistribution(3e-4, 3e-2, log=True)
    assert d["st"] == optuna.distributions.IntDistribution(0, 8, step=4)
    assert d["f"] == optuna.distributions.FloatDistribution(0.0, 0.5)


def test_sklearn_samples_record_as_optuna_trials():
    """What the sklearn engine does: externally sampled params become trials with these distributions."""
    from sklearn.model_selection import ParameterSampler

    s = SearchSpace.from_dict({**CLASSIC, "il": {"int": [1, 64], "log": True}})
    study = optuna.create_study(direction="maximize")
    for k, p in enumerate(ParameterSampler(s.to_sklearn_distributions(), n_iter=5, random_state=0)):
        study.add_trial(optuna.trial.create_trial(params=s.full_params(p), distributions=s.to_optuna_distributions(),
                                                  value=float(k)))
    assert len(study.trials) == 5
    assert study.best_trial.params.keys() == {"n_hidden", "n_neurons", "learning_rate", "il"}


def test_optuna_grid_sampler_covers_the_grid():
    s = space(a={"choice": [1, 2]}, b={"float": [0.0, 1.0], "grid": 2})
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(s.to_optuna_grid(), seed=0))
    seen = []

    def objective(trial):
        p = s.suggest(trial)
        seen.append((p["a"], p["b"]))
        return 0.0

    study.optimize(objective, n_trials=10)  # the grid sampler stops the study after 4
    assert sorted(seen) == [(1, 0.0), (1, 1.0), (2, 0.0), (2, 1.0)]


# --------------------------------------------------------------------------------------------------
# coercion
# --------------------------------------------------------------------------------------------------


def test_coerce_numpy_values():
    assert type(coerce_value(np.int64(3))) is int and coerce_value(np.int64(3)) == 3
    assert type(coerce_value(np.int32(3))) is int
    assert type(coerce_value(np.float32(0.5))) is float and coerce_value(np.float32(0.5)) == 0.5
    assert coerce_value(np.bool_(True)) is True
    assert type(coerce_value(np.str_("relu"))) is str
    assert coerce_value(np.array(7)) == 7 and type(coerce_value(np.array(7))) is int
    assert coerce_value([np.int64(1), np.float64(2.0)]) == [1, 2.0]
    t = coerce_value((np.int64(1), "a"))
    assert t == (1, "a") and type(t) is tuple and type(t[0]) is int
    assert coerce_value(None) is None and coerce_value("x") == "x"
    out = coerce_params({"n": np.int64(4), "lr": np.float64(0.1), "act": np.str_("elu")})
    assert out == {"n": 4, "lr": 0.1, "act": "elu"}
    assert [type(v) for v in out.values()] == [int, float, str]


def test_full_params_overlays_fixed_and_coerces():
    s = SearchSpace.from_dict({"n": {"int": [1, 3]}}, fixed={"act": np.str_("relu"), "units": np.int64(8)})
    assert s.fixed == {"act": "relu", "units": 8} and type(s.fixed["units"]) is int
    p = s.full_params({"n": np.int64(2)})
    assert p == {"act": "relu", "units": 8, "n": 2} and type(p["n"]) is int
