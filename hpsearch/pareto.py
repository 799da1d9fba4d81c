"""Several objectives: the Pareto front of a study and the rules that choose one trial from it.

A study of several objectives (``search.metric: [accuracy, n_params]``) has no single best trial:
its result is the Pareto front, the feasible COMPLETE trials that no other such trial dominates
(at least as good on every objective, better on one). ``hpsearch best`` / ``status`` show it,
``report`` draws it, and a *pick rule* chooses one trial of it (``load_best(name, pick=...)``).

The pick-rule language (case and extra spaces do not matter)::

    RULE   := [CHOICE] [WITHIN]
    CHOICE := ("best" | "smallest" | "largest") [OBJECTIVE]
    WITHIN := "within" NUMBER ["%"] "of" ["the"] "best" OBJECTIVE

* ``best X``: the front's best value of objective X (in its direction); ``smallest X`` /
  ``largest X``: its lowest / highest value.
* ``within D of the best Y``: first keep the trials of the front whose Y is at most D (absolute; ``D%``:
  relative to the best Y) worse than the front's best Y, then choose among them.
* An omitted OBJECTIVE after the choice is the first objective that the ``within`` part does not
  name (with no ``within`` part: the first objective). Ties go to the better first objective, then
  to the earlier trial.

The default, :data:`DEFAULT_PICK` ``"best"``, is the front's best trial on the first objective: the
trial whose model ``finalize`` stores and scores on the test split. Examples:
``"smallest n_params within 0.005 of the best accuracy"``, ``"smallest within 1% of the best accuracy"``,
``"best latency_ms"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import UserError
from hpsearch.records import STUDY, TRIAL, best_ranked

__all__ = ["DEFAULT_PICK", "PickRule", "objectives_of", "is_feasible", "dominates", "pareto_front",
           "front_rows", "parse_pick", "apply_pick", "chosen_trial", "front_ranks", "crowding", "rung_keep"]

#: the documented default: the front's best trial on the first objective
DEFAULT_PICK = "best"

_RULE = re.compile(
    r"^(?:(?P<choice>best|smallest|largest)(?:\s+(?P<obj>[a-z_]+))?)?"
    r"\s*(?:within\s+(?P<tol>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(?P<pct>%)?\s+of\s+(?:the\s+)?best\s+(?P<ref>[a-z_]+))?$"
)
_EXAMPLE = "e.g. 'smallest n_params within 0.005 of the best accuracy' or 'best'"


@dataclass(frozen=True)
class PickRule:
    """A parsed pick rule: choose ``choice`` (best | smallest | largest) of objective ``objective``
    among the front's trials within ``tolerance`` (``relative``: a fraction) of the best ``reference``."""

    choice: str
    objective: str
    reference: str | None = None
    tolerance: float = 0.0
    relative: bool = False


def objectives_of(study: Any) -> list[tuple[str, str]]:
    """(name, direction) of each objective of a stored study, in order."""
    directions = [d.name.lower() for d in study.directions]
    names = study.user_attrs.get(STUDY.OBJECTIVES) or [study.user_attrs.get(STUDY.METRIC) or "value"]
    if len(names) != len(directions):
        names = [f"value{i}" for i in range(len(directions))]
    return list(zip(names, directions))


def is_feasible(trial: Any) -> bool:
    """Within every ``search.constraints`` limit (a trial without constraint values is feasible)."""
    return all(v is None or v <= 0 for v in trial.user_attrs.get(TRIAL.CONSTRAINTS) or [])


def _better_or_equal(a: float, b: float, direction: str) -> bool:
    return a >= b if direction == "maximize" else a <= b


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Is ``a`` at least as good as ``b`` on every objective and different on one?"""
    return all(_better_or_equal(x, y, d) for x, y, d in zip(a, b, directions)) and list(a) != list(b)


def front_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Non-dominated sorting: each point's front (0: no other point dominates it; k: only points of
    fronts below k do), as NSGA-II ranks a population."""
    ranks = [-1] * len(points)
    left, rank = set(range(len(points))), 0
    while left:
        front = {i for i in left if not any(dominates(points[j], points[i], directions) for j in left if j != i)}
        for i in front:
            ranks[i] = rank
        left -= front
        rank += 1
    return ranks


def crowding(points: Sequence[Sequence[float]], ranks: Sequence[int]) -> list[float]:
    """NSGA-II's crowding distance of each point within its own front (inf at a front's ends, and for
    a front of one or two points): the spread a front keeps when it must lose members."""
    dist = [0.0] * len(points)
    for rank in set(ranks):
        members = [i for i, r in enumerate(ranks) if r == rank]
        for m in range(len(points[members[0]]) if members else 0):
            order = sorted(members, key=lambda i: points[i][m])
            lo, hi = points[order[0]][m], points[order[-1]][m]
            dist[order[0]] = dist[order[-1]] = math.inf
            for a, i, b in zip(order, order[1:], order[2:]):
                if hi > lo:
                    dist[i] += (points[b][m] - points[a][m]) / (hi - lo)
    return dist


def rung_keep(points: Sequence[Sequence[float]], directions: Sequence[str], eta: int, fronts: int = 1) -> set[int]:
    """The points a Pareto-aware successive-halving rung keeps (MO-ASHA's rule): every point of the
    first ``fronts`` non-dominated fronts, and the best ``max(1, n // eta)`` by (front, larger
    crowding distance, better first objective) if that is more. A point of the first front is
    never dropped, so a trial on the front at its rung is never pruned."""
    if not points:
        return set()
    ranks = front_ranks(points, directions)
    dist = crowding(points, ranks)
    sign = -1.0 if directions[0] == "maximize" else 1.0
    order = sorted(range(len(points)), key=lambda i: (ranks[i], -dist[i], sign * points[i][0], i))
    return set(order[:max(1, len(points) // eta)]) | {i for i, r in enumerate(ranks) if r < max(1, fronts)}


def _sort_key(directions: Sequence[str]) -> Any:
    sign = -1.0 if directions[0] == "maximize" else 1.0
    return lambda t: (sign * t.values[0], t.number)


def pareto_front(trials: Iterable[Any], directions: Sequence[str]) -> list[Any]:
    """The feasible COMPLETE trials that no other one dominates, best first on the first objective
    (ties: the earlier trial). Trials with the same values are all on it."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.values and is_feasible(t)
            and all(math.isfinite(v) for v in t.values)]
    front = [t for t in done if not any(dominates(o.values, t.values, directions) for o in done)]
    return sorted(front, key=_sort_key(directions))


def front_rows(study: Any, trials: Iterable[Any] | None = None) -> list[dict[str, Any]]:
    """The Pareto front as data: trial number, each objective's value by name, params."""
    objectives = objectives_of(study)
    front = pareto_front(study.get_trials(deepcopy=False) if trials is None else trials, [d for _, d in objectives])
    return [{"number": t.number, "values": {n: v for (n, _), v in zip(objectives, t.values)},
             "params": dict(t.params)} for t in front]


def _bad(rule: str, why: str) -> UserError:
    return UserError(f"pick: {rule!r} {why}; {_EXAMPLE}")


def parse_pick(rule: str, names: Sequence[str]) -> PickRule:
    """Parse a pick rule against the study's objective ``names`` (see the module docstring); a
    one-line UserError naming ``pick`` and the fix otherwise."""
    text = " ".join(str(rule).lower().split())
    m = _RULE.match(text)
    if not text or m is None:
        raise _bad(rule, "is not a pick rule")
    for name in (m["obj"], m["ref"]):
        if name is not None and name not in names:
            raise _bad(rule, f"names {name!r}, not an objective of the study ({', '.join(names)})")
    ref = m["ref"]
    objective = m["obj"] or next((n for n in names if n != ref), names[0])
    tol = float(m["tol"]) / 100.0 if m["pct"] else float(m["tol"] or 0.0)
    return PickRule(m["choice"] or "best", objective, ref, tol, bool(m["pct"]))


def apply_pick(rule: PickRule, front: Sequence[Any], objectives: Sequence[tuple[str, str]]) -> Any:
    """The trial of ``front`` (not empty) that ``rule`` chooses."""
    names = [n for n, _ in objectives]
    directions = dict(objectives)
    pool = list(front)
    if rule.reference is not None:
        i, d = names.index(rule.reference), directions[rule.reference]
        vals = [t.values[i] for t in pool]
        best = max(vals) if d == "maximize" else min(vals)
        slack = abs(best) * rule.tolerance if rule.relative else rule.tolerance
        pool = [t for t, v in zip(pool, vals) if (best - v if d == "maximize" else v - best) <= slack + 1e-12]
    j = names.index(rule.objective)
    want = {"best": directions[rule.objective], "smallest": "minimize", "largest": "maximize"}[rule.choice]
    sign = -1.0 if want == "maximize" else 1.0
    tie = _sort_key([d for _, d in objectives])
    return min(pool, key=lambda t: (sign * t.values[j], tie(t)))


def chosen_trial(study: Any, pick: str | None = None) -> Any:
    """The study's chosen trial: for one objective the first feasible trial of
    :func:`hpsearch.records.ranked` (ties: the lower trial number; Optuna's own ``best_trial`` keeps
    whichever tied trial its storage returns first), else the trial of the Pareto front that
    ``pick`` (default :data:`DEFAULT_PICK`) chooses. ValueError when none is complete."""
    objectives = objectives_of(study)
    rule = parse_pick(pick or DEFAULT_PICK, [n for n, _ in objectives])
    if len(objectives) == 1 and rule == parse_pick(DEFAULT_PICK, [n for n, _ in objectives]):
        best = best_ranked((t for t in study.get_trials(deepcopy=False) if is_feasible(t)), objectives[0][1])
        if best is None:
            raise ValueError("no completed feasible trial")
        return best
    front = pareto_front(study.get_trials(deepcopy=False), [d for _, d in objectives])
    if not front:
        raise ValueError("no completed feasible trial")
    return apply_pick(rule, front, objectives)
