"""Conditional search spaces: ``when:`` (a parameter exists only for some values of others) and
``per_layer:`` (one parameter per layer: ``n_neurons_0``, ``n_neurons_1``, ...).

A study file says::

    optimizer: {choice: [adam, sgd]}
    momentum:  {float: [0.0, 0.99], when: {optimizer: sgd}}       # a list of values works too
    n_hidden:  {int: [1, 3]}
    n_neurons: {int: [16, 256], per_layer: n_hidden}

This module checks the conditions (unknown parent, a value the parent never takes, a cycle: one
line each), orders the parameters parents first, and enumerates the branches of the controlling
parameters, from which :class:`hpsearch.spec.space.SearchSpace` makes scikit-learn's list-of-dict grids
and distributions. It knows parameters only through ``contains`` and ``grid``, so it sits below
:mod:`hpsearch.spec.space`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import ConfigError

__all__ = ["Conditions", "split_spec", "layer_name"]

_MISSING = object()


def layer_name(name: str, index: int) -> str:
    """The stored name of layer ``index``'s value of a per-layer parameter."""
    return f"{name}_{index}"


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def split_spec(name: str, spec: Any) -> tuple[Any, dict[str, tuple[Any, ...]] | None, str | None]:
    """(the parameter's own spec, its ``when`` condition, its ``per_layer`` count parameter)."""
    if not isinstance(spec, Mapping) or not ({"when", "per_layer"} & set(spec)):
        return spec, None, None
    rest = {k: v for k, v in spec.items() if k not in ("when", "per_layer")}
    when, per_layer = spec.get("when"), spec.get("per_layer")
    cond: dict[str, tuple[Any, ...]] | None = None
    if when is not None:
        if not isinstance(when, Mapping) or not when:
            raise ConfigError(f"space.{name}.when: must be a mapping like `when: {{optimizer: sgd}}`")
        cond = {str(k): tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in when.items()}
    if per_layer is not None and not isinstance(per_layer, str):
        raise ConfigError(f"space.{name}.per_layer: must name the layer-count parameter, like `per_layer: n_hidden`")
    return rest, cond, per_layer


@dataclass
class Conditions:
    """The ``when`` conditions and ``per_layer`` counts of a space, checked and ordered."""

    when: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)
    per_layer: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # parents before the parameters they control

    def __bool__(self) -> bool:
        return bool(self.when or self.per_layer)

    def parents(self, name: str) -> list[str]:
        out = list(self.when.get(name, {}))
        if name in self.per_layer:
            out.append(self.per_layer[name])
        return out

    def check(self, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> None:
        """One-line ConfigErrors for an unknown parent, a value it never takes or a cycle; sets ``order``."""
        known = sorted(set(params) | set(fixed))
        for name in params:
            for parent in self.parents(name):
                key = f"space.{name}.{'per_layer' if parent == self.per_layer.get(name) else 'when'}"
                if parent not in params and parent not in fixed:
                    raise ConfigError(f"{key}: unknown parameter {parent!r}; use one of {', '.join(known)}")
                if parent in self.per_layer:
                    raise ConfigError(f"{key}: {parent} is a per-layer parameter; depend on its layer count instead")
            for parent, values in self.when.get(name, {}).items():
                for v in values:
                    if not self._takes(parent, v, params, fixed):
                        raise ConfigError(f"space.{name}.when.{parent}: {v!r} is a value {parent} never takes;"
                                          f" use a value of {'space' if parent in params else 'model.fixed'}.{parent}")
            if name in self.per_layer and any(n < 0 for n in self.counts(name, params, fixed)):
                raise ConfigError(f"space.{name}.per_layer: {self.per_layer[name]} must take whole numbers >= 0")
        self.order = self._sorted(list(params))

    @staticmethod
    def _takes(parent: str, value: Any, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> bool:
        if parent in params:
            return bool(params[parent].contains(value))
        return _same(fixed[parent], value)

    def _sorted(self, names: list[str]) -> list[str]:
        """Parents first (depth-first, keeping the study file's order otherwise); a cycle is an error."""
        done: list[str] = []
        path: list[str] = []

        def visit(name: str) -> None:
            if name in done or name not in names:
                return
            if name in path:
                cycle = " -> ".join([*path[path.index(name):], name])
                raise ConfigError(f"space.{name}.when: the conditions form a cycle ({cycle}); remove one of them")
            path.append(name)
            for parent in self.parents(name):
                visit(parent)
            path.pop()
            done.append(name)

        for n in names:
            visit(n)
        return done

    def counts(self, name: str, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> list[int]:
        """The layer counts a per-layer parameter can see (a ConfigError if they are not whole numbers)."""
        parent = self.per_layer[name]
        try:
            values = params[parent].grid(parent) if parent in params else [fixed[parent]]
        except ConfigError:  # a float range: not a count
            values = [None]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise ConfigError(f"space.{name}.per_layer: {parent} must be an integer parameter (a layer count)")
        return [int(v) for v in values]

    def active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Does ``name`` exist given the values of its parents (a missing parent is inactive)?"""
        for parent, allowed in self.when.get(name, {}).items():
            got = values.get(parent, _MISSING)
            if got is _MISSING or not any(_same(got, a) for a in allowed):
                return False
        return True

    def branches(self, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every assignment of the searched parameters that others depend on (inactive ones left out)."""
        controlling = {p for n in params for p in self.parents(n) if p in params}
        out: list[dict[str, Any]] = [{}]
        for name in self.order:
            if name not in controlling:
                continue
            grown = []
            for branch in out:
                if not self.active(name, {**fixed, **branch}):
                    grown.append(branch)
                    continue
                grown.extend({**branch, name: v} for v in params[name].grid(name))
            out = grown
        return out
