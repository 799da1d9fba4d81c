"""One search space, three conversions: sklearn grids, scipy distributions, Optuna suggestions.

A space is declared once (study file or Python) and each engine asks it for its own form. Builders
never see any of this: they receive a plain ``dict`` of Python scalars (see :func:`coerce_params`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.errors import ConfigError
from hpsearch.spec.conditions import Conditions, layer_name, split_spec

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "IntParam",
    "FloatParam",
    "CategoricalParam",
    "Param",
    "SearchSpace",
    "coerce_value",
    "coerce_params",
]


def coerce_value(value: Any) -> Any:
    """Turn numpy scalars (and 0-d arrays) into Python scalars: Keras 3 rejects ``np.int64`` sizes."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.str_):
        return str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(coerce_value(v) for v in value)
    return value


def coerce_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce every value of a parameter dict (see :func:`coerce_value`)."""
    return {str(k): coerce_value(v) for k, v in params.items()}


_INT64_MAX = 2**63 - 1


def _kind(choice: bool | float | str) -> str:
    """The type of a choice, for "choices must be one type" (int and float are both numbers)."""
    return "booleans" if isinstance(choice, bool) else "strings" if isinstance(choice, str) else "numbers"


#: the placeholder range of a `float: auto` parameter until its range test has run
AUTO_RANGE = (1e-6, 10.0)


#: the most values one integer range may expand to in a grid (a typo like [1, 10**9] must not hang)
MAX_GRID_VALUES = 10_000


@dataclass(frozen=True)
class IntParam:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def validate(self, name: str) -> None:
        if self.low > self.high:
            raise ConfigError(f"space.{name}: low {self.low} > high {self.high}; make low <= high")
        if max(abs(self.low), abs(self.high), self.step) > _INT64_MAX:
            raise ConfigError(f"space.{name}: low, high and step must fit in 64 bits (|x| <= {_INT64_MAX});"
                              " give smaller numbers")
        if self.step < 1:
            raise ConfigError(f"space.{name}: step must be >= 1, got {self.step}; give a positive step")
        if self.log and self.low <= 0:
            raise ConfigError(f"space.{name}: a log range needs low > 0, got {self.low}; raise low or drop log")
        if self.log and self.step != 1:
            raise ConfigError(f"space.{name}: log and step cannot be combined; drop one")

    @property
    def top(self) -> int:
        """The highest value reachable from ``low`` in steps (Optuna warns when high is off-step)."""
        return self.low + (self.high - self.low) // self.step * self.step

    def grid(self, name: str) -> list[int]:
        n = (self.high - self.low) // self.step + 1
        if n > MAX_GRID_VALUES:
            raise ConfigError(
                f"space.{name}: engine grid would enumerate {n} values of [{self.low}, {self.high}];"
                f" add a larger `step:` or use `choice: [...]` (at most {MAX_GRID_VALUES} values)"
            )
        return list(range(self.low, self.high + 1, self.step))

    def distribution(self) -> Any:
        from scipy import stats

        if self.log:
            return _IntLogUniform(self.low, self.high)
        if self.step == 1:
            return stats.randint(self.low, self.high + 1)
        return self.grid("")

    def suggest(self, trial: optuna.trial.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.top, step=self.step, log=self.log)

    def optuna_distribution(self) -> Any:
        import optuna

        return optuna.distributions.IntDistribution(self.low, self.top, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        """Can this parameter take ``value`` (a whole number on the range's steps)?"""
        value = coerce_value(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            return False
        return self.low <= value <= self.top and (int(value) - self.low) % self.step == 0


@dataclass(frozen=True)
class FloatParam:
    low: float
    high: float
    log: bool = False
    grid_points: int | None = None  # how many points the grid engine takes from this range
    auto: bool = False  # `float: auto`: the range comes from a range test (hpsearch.study.lrfind) before the search

    def validate(self, name: str) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError(f"space.{name}: low and high must be finite numbers; give finite bounds")
        if self.low > self.high:
            raise ConfigError(f"space.{name}: low {self.low} > high {self.high}; make low <= high")
        if self.log and self.low <= 0:
            raise ConfigError(f"space.{name}: a log range needs low > 0, got {self.low}; raise low or drop log")
        if self.grid_points is not None and self.grid_points > MAX_GRID_VALUES:
            raise ConfigError(f"space.{name}: grid of {self.grid_points} points is too many;"
                              f" give grid: N with N <= {MAX_GRID_VALUES}")
        if self.grid_points is not None and self.grid_points < 1:
            raise ConfigError(f"space.{name}: grid must be >= 1 points, got {self.grid_points};"
                              " give grid: N with N >= 1")

    def grid(self, name: str) -> list[float]:
        if self.grid_points is None:
            raise ConfigError(
                f"space.{name}: a grid search needs a finite set; add `grid: N` (points) to this float range"
                " or use `choice: [...]`"
            )
        if self.grid_points == 1:
            return [float(self.low)]
        if self.log:
            return [float(v) for v in np.geomspace(self.low, self.high, self.grid_points)]
        return [float(v) for v in np.linspace(self.low, self.high, self.grid_points)]

    def distribution(self) -> Any:
        from scipy import stats

        if self.low == self.high:  # scipy rejects an empty interval; one value it is
            return [float(self.low)]
        if self.log:
            return stats.loguniform(self.low, self.high)  # == scipy.stats.reciprocal
        return stats.uniform(self.low, self.high - self.low)

    def suggest(self, trial: optuna.trial.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def optuna_distribution(self) -> Any:
        import optuna

        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Is ``value`` a number within the range?"""
        value = coerce_value(value)
        return not isinstance(value, bool) and isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class CategoricalParam:
    choices: tuple[Any, ...]

    def validate(self, name: str) -> None:
        if len(self.choices) == 0:
            raise ConfigError(f"space.{name}: the choice list is empty; give at least one value")
        for c in self.choices:
            if not (c is None or isinstance(c, (bool, int, float, str))):
                raise ConfigError(
                    f"space.{name}: choice {c!r} is not a number, string, boolean or null;"
                    " use scalar choices (Optuna stores only those)"
                )
        kinds = sorted({_kind(c) for c in self.choices if c is not None})
        if len(kinds) > 1:  # a builder parameter takes one type; null may stand beside it ("off")
            raise ConfigError(f"space.{name}: choices mix {' and '.join(kinds)}; give choices of one type"
                              " (null may be one of them)")

    def grid(self, name: str) -> list[Any]:
        return list(self.choices)

    def distribution(self) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial: optuna.trial.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def optuna_distribution(self) -> Any:
        import optuna

        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def contains(self, value: Any) -> bool:
        """Is ``value`` one of the choices (``True`` is not ``1``)?"""
        value = coerce_value(value)
        return any(c == value and isinstance(c, bool) == isinstance(value, bool) for c in self.choices)


Param = IntParam | FloatParam | CategoricalParam


class _IntLogUniform:
    """Integer log-uniform distribution with an ``rvs`` method, for RandomizedSearchCV."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def rvs(self, size: Any = None, random_state: Any = None) -> Any:
        from scipy import stats

        x = stats.loguniform(self.low, self.high + 1).rvs(size=size, random_state=random_state)
        return np.clip(np.floor(x).astype(int), self.low, self.high)


@dataclass
class SearchSpace:
    """Named parameters to search over (``params``) and fixed ones (``fixed``)."""

    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    conditions: Conditions = field(default_factory=Conditions)  # when: / per_layer: (hpsearch.spec.conditions)

    def __post_init__(self) -> None:
        self.validate()

    # construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, space: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> SearchSpace:
        """Build from the study-file form: ``{name: {int: [lo, hi]} | {float: [lo, hi], log: true} | {choice: [...]}}``.

        Python-side objects are accepted too: a list/``np.arange`` (choices), a scipy
        ``randint``/``loguniform``/``reciprocal``/``uniform`` frozen distribution, or a ``Param``.
        """
        params: dict[str, Param] = {}
        cond = Conditions()
        for name, spec in space.items():
            own, when, per_layer = split_spec(str(name), spec)
            params[str(name)] = _parse_param(str(name), own)
            if when:
                cond.when[str(name)] = when
            if per_layer:
                cond.per_layer[str(name)] = per_layer
        return cls(params=params, fixed=coerce_params(fixed or {}), conditions=cond)

    def validate(self) -> None:
        for name, p in self.params.items():
            p.validate(name)
        overlap = set(self.params) & set(self.fixed)
        if overlap:
            name = sorted(overlap)[0]
            raise ConfigError(f"space.{name}: is both searched and fixed; remove it from model.fixed or from space")
        self.conditions.check(self.params, self.fixed)

    @property
    def names(self) -> list[str]:
        return list(self.params)

    # conversions ---------------------------------------------------------------------------
    def _branch_spaces(self, convert: Callable[[Param, str], Any]) -> list[dict[str, Any]]:
        """A conditional space as one dict per branch of its controlling parameters: each holds
        only the parameters active there (per-layer ones as ``name_0 .. name_{n-1}``)."""
        out = []
        for branch in self.conditions.branches(self.params, self.fixed):
            values = {**self.fixed, **branch}
            sub: dict[str, Any] = {}
            for name in self.conditions.order:
                if not self.conditions.active(name, values):
                    continue
                p = self.params[name]
                if name in branch:
                    sub[name] = [branch[name]]
                elif name in self.conditions.per_layer:
                    count = values[self.conditions.per_layer[name]]
                    sub.update({layer_name(name, i): convert(p, layer_name(name, i)) for i in range(count)})
                else:
                    sub[name] = convert(p, name)
            out.append(sub)
        return out

    def to_sklearn_grid(self) -> dict[str, list[Any]] | list[dict[str, list[Any]]]:
        """For GridSearchCV: every parameter as a finite list (a conditional space: one dict per branch)."""
        if self.conditions:
            return self._branch_spaces(lambda p, n: p.grid(n))
        return {name: p.grid(name) for name, p in self.params.items()}

    def to_sklearn_distributions(self) -> dict[str, Any] | list[dict[str, Any]]:
        """For RandomizedSearchCV / HalvingRandomSearchCV: scipy distributions or lists (a
        conditional space: one dict per branch, each drawn alike)."""
        if self.conditions:
            return self._branch_spaces(lambda p, n: p.distribution())
        return {name: p.distribution() for name, p in self.params.items()}

    def suggest(self, trial: optuna.trial.Trial) -> dict[str, Any]:
        """Ask an Optuna trial for one value of every active parameter, define-by-run (parents
        first; a per-layer parameter as a list, stored as ``name_0``, ``name_1``, ...)."""
        out: dict[str, Any] = {}
        for name in self.conditions.order:
            p = self.params[name]
            values = {**self.fixed, **out}
            if not self.conditions.active(name, values):
                continue
            if name in self.conditions.per_layer:
                count = int(values[self.conditions.per_layer[name]])
                out[name] = [p.suggest(trial, layer_name(name, i)) for i in range(count)]
            else:
                out[name] = p.suggest(trial, name)
        return out

    def param_for(self, stored: str) -> Param | None:
        """The parameter a stored name belongs to (``n_neurons_1`` -> the per-layer ``n_neurons``)."""
        dists = self._stored_names()
        return self.params[dists[stored]] if stored in dists else None

    def _stored_names(self) -> dict[str, str]:
        """Stored parameter name -> parameter (per-layer ones once per layer the space can have)."""
        out: dict[str, str] = {}
        for name in self.params:
            if name in self.conditions.per_layer:
                top = max(self.conditions.counts(name, self.params, self.fixed))
                out.update({layer_name(name, i): name for i in range(top)})
            else:
                out[name] = name
        return out

    def to_optuna_distributions(self) -> dict[str, Any]:
        """Optuna distributions of every stored name, for recording externally-sampled candidates."""
        return {stored: self.params[name].optuna_distribution() for stored, name in self._stored_names().items()}

    def builder_params(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Stored (flat) params as the builder takes them: a per-layer parameter's values as one list."""
        out = {k: v for k, v in stored.items() if k not in self._stored_names() or k in self.params}
        for name in self.conditions.per_layer:
            layers = [stored[layer_name(name, i)] for i in range(len(stored)) if layer_name(name, i) in stored]
            if layers:
                out[name] = layers
        return out

    def to_optuna_grid(self) -> dict[str, list[Any]]:
        """The search space for ``optuna.samplers.GridSampler`` (not for a conditional space)."""
        if self.conditions:
            raise ConfigError("search.sampler: grid cannot walk a conditional space (when: / per_layer:);"
                              " use search.engine: grid, or another sampler")
        grid = self.to_sklearn_grid()
        assert isinstance(grid, dict)
        return grid

    def without_auto(self) -> SearchSpace:
        """This space less its ``float: auto`` parameters (they are resolved by a range test)."""
        return SearchSpace(params={n: p for n, p in self.params.items() if not getattr(p, "auto", False)},
                           fixed=dict(self.fixed))

    def full_params(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        """Fixed params overlaid with sampled ones, coerced to plain Python values."""
        out = dict(self.fixed)
        out.update(coerce_params(sampled))
        return out


def _parse_auto(name: str, spec: Mapping[str, Any]) -> FloatParam:
    """``{float: auto, log: true}``: a placeholder until the range test (hpsearch.study.lrfind) runs."""
    if name != "learning_rate":
        raise ConfigError(f"space.{name}: `float: auto` comes from a learning-rate range test, so only"
                          " learning_rate can have it; give a [low, high] range")
    if spec.get("log", True) is not True:
        raise ConfigError(f"space.{name}: `float: auto` is a log range; write `{{float: auto, log: true}}`")
    grid = spec.get("grid")
    return FloatParam(AUTO_RANGE[0], AUTO_RANGE[1], log=True, auto=True,
                      grid_points=None if grid is None else int(grid))


def _parse_param(name: str, spec: Any) -> Param:
    if isinstance(spec, (IntParam, FloatParam, CategoricalParam)):
        return spec
    if isinstance(spec, Mapping):
        keys = set(spec)
        kinds = keys & {"int", "float", "choice"}
        if len(kinds) != 1:
            raise ConfigError(
                f"space.{name}: give exactly one of `int: [low, high]`, `float: [low, high]` or `choice: [...]`"
            )
        kind = kinds.pop()
        allowed = {"int": {"int", "step", "log"}, "float": {"float", "log", "grid"}, "choice": {"choice"}}[kind]
        unknown = keys - allowed
        if unknown:
            raise ConfigError(
                f"space.{name}: unknown key {sorted(unknown)[0]!r} for"
                f" {'an' if kind == 'int' else 'a'} {kind} parameter;"
                f" remove it or use only {', '.join(sorted(allowed))}"
            )
        value = spec[kind]
        if kind == "float" and value == "auto":
            return _parse_auto(name, spec)
        if kind == "choice":
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"space.{name}: choice must be a list; write it like `choice: [relu, elu]`")
            return CategoricalParam(tuple(coerce_value(v) for v in value))
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            raise ConfigError(f"space.{name}: {kind} must be a [low, high] pair; write `{kind}: [low, high]`")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"space.{name}: log must be true or false; set `log: true` or drop it")
        try:
            if kind == "int":
                lo, hi = value
                if isinstance(lo, bool) or isinstance(hi, bool) or int(lo) != lo or int(hi) != hi:
                    raise ValueError
                step = spec.get("step", 1)
                if isinstance(step, bool) or int(step) != step:
                    raise ValueError
                return IntParam(int(lo), int(hi), step=int(step), log=log)
            lo, hi = float(value[0]), float(value[1])
            grid = spec.get("grid")
            if grid is not None and (isinstance(grid, bool) or int(grid) != grid):
                raise ValueError
            return FloatParam(lo, hi, log=log, grid_points=None if grid is None else int(grid))
        except (TypeError, ValueError):
            fix = ("use whole numbers (or `float: [low, high]` for a real-valued range)" if kind == "int"
                   else "use numbers for low and high")
            raise ConfigError(f"space.{name}: {kind} range needs {kind} numbers, got {value!r}; {fix}") from None
    # Python-side specs
    if isinstance(spec, np.ndarray):
        spec = spec.tolist()
    if isinstance(spec, (list, tuple, range)):
        return CategoricalParam(tuple(coerce_value(v) for v in spec))
    dist = getattr(spec, "dist", None)
    if dist is not None:  # a frozen scipy distribution
        dname = getattr(dist, "name", "")
        try:
            # frozen distributions keep positional and keyword arguments apart: bind them by name
            shapes = [n.strip() for n in (getattr(dist, "shapes", None) or "").split(",") if n.strip()]
            names = [*shapes, "loc", "scale"]
            bound: dict[str, float] = {"loc": 0.0, "scale": 1.0}
            bound.update({n: float(a) for n, a in zip(names, getattr(spec, "args", ()))})
            bound.update({str(k): float(v) for k, v in (getattr(spec, "kwds", None) or {}).items()})
        except (TypeError, ValueError):
            bound = {}
        loc, scale = bound.get("loc", 0.0), bound.get("scale", 1.0)
        if dname in ("loguniform", "reciprocal") and "a" in bound and "b" in bound and loc == 0.0:
            return FloatParam(bound["a"] * scale, bound["b"] * scale, log=True)
        if dname == "uniform" and bound:
            return FloatParam(loc, loc + scale)
        if dname == "randint" and "low" in bound and "high" in bound and scale == 1.0:
            return IntParam(int(bound["low"] + loc), int(bound["high"] + loc) - 1)
    raise ConfigError(
        f"space.{name}: cannot read {spec!r}; use `int: [low, high]`, `float: [low, high]` or `choice: [...]`"
    )
