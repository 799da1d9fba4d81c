"""The type and range of a builder parameter, checked over every value a study can give it.

A built-in builder declares one :class:`Spec` per parameter (``n_neurons``: an integer in
[1, 65536]; ``dropout``: a number in [0, 1); ``activation``: one of a list). :func:`check_specs`
checks, before any training, each fixed value, each choice and both ends of each searched range
(a range lies inside an interval exactly when its ends do), so that a value that would fail every
trial at build time, or train a model no machine holds, is one line naming the field instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import ConfigError

__all__ = ["ParamValues", "Spec", "named_choice", "check_choices", "check_specs", "check_value", "value_bounds"]

#: For each parameter name, the ``(field, value)`` pairs a study gives it (a searched range gives
#: its two ends), e.g. ``{"activation": [("space.activation", "relu"), ("space.activation", "elu")]}``.
ParamValues = Mapping[str, Sequence[tuple[str, Any]]]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True)
class Spec:
    """One parameter: ``kind`` is ``int``, ``float`` (a number), ``bool``, ``name`` (one of
    ``allowed``, case-insensitive), ``names`` (a name or a list of names) or ``literal`` (one of
    ``allowed`` exactly). Numbers lie between ``low`` and ``high`` (open ends when ``*_open``)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    allowed: tuple[Any, ...] = ()
    nullable: bool = False
    shown: str = ""  # the allowed names as messages list them (default: all of them)

    @classmethod
    def integer(cls, low: int, high: int | None = None) -> Spec:
        return cls("int", low, high)

    @classmethod
    def number(cls, low: float | None = None, high: float | None = None, *, low_open: bool = False,
               high_open: bool = False, null: bool = False) -> Spec:
        return cls("float", low, high, low_open, high_open, nullable=null)

    @classmethod
    def one_of(cls, allowed: Iterable[str], *, null: bool = False, many: bool = False, shown: str = "") -> Spec:
        return cls("names" if many else "name", allowed=tuple(allowed), nullable=null, shown=shown)

    @classmethod
    def flag(cls) -> Spec:
        return cls("bool")

    @classmethod
    def literal(cls, *allowed: Any) -> Spec:
        return cls("literal", allowed=allowed)

    def interval(self) -> str:
        """``>= 0``, ``> 0`` or ``in [0, 1)``."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_num(self.low or 0)}"
        lo = "-inf" if self.low is None else _num(self.low)
        return f"in {'(' if self.low_open else '['}{lo}, {_num(self.high)}{')' if self.high_open else ']'}"

    def describe(self) -> str:
        """What the parameter takes, for messages."""
        if self.kind == "bool":
            return "true or false"
        if self.kind in ("name", "names", "literal"):
            text = "one of " + (self.shown or ", ".join(_show(a) for a in self.allowed))
        else:
            text = f"{'an integer' if self.kind == 'int' else 'a number'} {self.interval()}"
        return text + (" or null" if self.nullable else "")

    def inside(self, x: float) -> bool:
        """Whether the number ``x`` lies in the interval."""
        try:
            if not math.isfinite(x):
                return False
        except OverflowError:  # an integer too large for a float
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or (x < self.high if self.high_open else x <= self.high)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (a fixed value or one choice) does not fit, and the fix; None when it fits."""
        if self.kind in ("name", "names") and value is not None:
            names = value if self.kind == "names" and isinstance(value, (list, tuple)) else [value]
            for name in names:
                if not isinstance(name, str) or name.lower() not in self.allowed:
                    return f"unknown value {name!r}; use one of {self.shown or ', '.join(self.allowed)}"
            return None
        return None if self._fits(value) else f"must be {self.describe()}, got {value!r}; change the value to fit"

    def _fits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "literal":
            return any(type(value) is type(a) and value == a for a in self.allowed)
        whole = isinstance(value, int) and not isinstance(value, bool)
        return (whole or (self.kind == "float" and isinstance(value, float))) and self.inside(value)


def _show(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def check_value(field: str, value: Any, spec: Spec) -> None:
    """A one-line ConfigError naming ``field`` when ``value`` does not fit ``spec``."""
    problem = spec.problem(value)
    if problem is not None:
        raise ConfigError(f"{field}: {problem}")


def check_specs(values: ParamValues, specs: Mapping[str, Spec]) -> None:
    """Check every ``(field, value)`` a study gives each parameter of ``specs`` (for a searched
    range, its two ends: see :func:`hpsearch.models.builders.check_builder_params`)."""
    for name, spec in specs.items():
        for field, value in values.get(name, ()):
            check_value(field, value, spec)


def value_bounds(values: ParamValues, name: str, default: float) -> tuple[float, str]:
    """The largest number a study gives ``name`` (``default`` when it gives none) and the field
    that gives it, for checks across parameters (e.g. the widest layer a candidate can reach)."""
    best, where = float(default), ""
    for field, value in values.get(name, ()):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > best:
            best, where = float(value), field
    return best, where


def named_choice(field: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` lower-cased if it is one of ``allowed``; else a ConfigError naming ``field``."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ConfigError(f"{field}: unknown value {value!r}; use one of {', '.join(allowed)}")
    return value.lower()


def check_choices(values: ParamValues, choices: Mapping[str, tuple[str, ...]],
                  optional: Iterable[str] = ()) -> None:
    """Check each value of the parameters in ``choices``; None passes for the ``optional`` ones."""
    nullable = frozenset(optional)
    check_specs(values, {name: Spec.one_of(allowed, null=name in nullable) for name, allowed in choices.items()})
