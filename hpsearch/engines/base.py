"""What every engine shares: the run context, the engine protocol and its registry lookup, the
failure-streak rule, the progress observer and the one helper that records a finished candidate as
an Optuna trial.

An engine is a class behind :class:`Engine`, found by name through
:data:`hpsearch.registry.ENGINES`. ``study.py`` drives any engine through this protocol and never
names one.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from hpsearch.errors import ConfigError, StudyFailedError
from hpsearch.records import STUDY, TRIAL, clean_attr, counts_toward_budget
from hpsearch.registry import ENGINES

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.config import StudyConfig
    from hpsearch.data import PreparedData
    from hpsearch.space import SearchSpace

__all__ = [
    "Observer",
    "NullObserver",
    "RunContext",
    "Engine",
    "get_engine",
    "FailureStreak",
    "Candidate",
    "Refit",
    "record_candidate",
    "min_resource",
]


class Observer(Protocol):
    """Receives a run's progress (the CLI renders it; library code never prints). The run sets
    ``total`` (candidates planned), ``label`` (the study name) and ``direction`` before ``begin``."""

    total: int | None
    label: str
    direction: str

    def begin(self, done: int, best: float | None) -> None: ...

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None: ...

    def message(self, text: str) -> None: ...

    def end(self) -> None: ...


class NullObserver:
    """Progress goes nowhere (the default for Python callers)."""

    total: int | None = None
    label: str = ""
    direction: str = "maximize"

    def begin(self, done: int, best: float | None) -> None:
        pass

    def trial_done(self, number: int, state: str, value: float | None, detail: str = "") -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass
class RunContext:
    """Everything one process needs to run trials of one study (built once by ``study.py``)."""

    cfg: StudyConfig
    space: SearchSpace
    data: PreparedData
    study: Any  # optuna.Study
    storage: Any  # optuna.storages.RDBStorage
    storage_url: str
    artifact_store: Any
    builder: Any  # the model builder function
    builder_extra: dict[str, Any]
    metric: str  # the first objective's metric (a trained one)
    direction: str  # the first objective's direction
    engine: Engine
    observer: Observer = field(default_factory=NullObserver)
    artifacts: str | None = None  # the artifact location given (--artifacts / study file), if any
    worker_index: int | None = None  # index under ``run --workers`` (seeds), None otherwise
    control: Any = None  # hpsearch.engines.control.Control while trials run
    stop_rule: str | None = None  # the stop rule (timeout, patience, target) that ended this run
    #: (name, direction) of every objective; more than one: a multi-objective study (Pareto front)
    objectives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def several(self) -> bool:
        """Several objectives: trials tell a list of values, nothing is pruned, no best trial."""
        return len(self.objectives) > 1

    @property
    def study_id(self) -> int:
        return int(self.storage.get_study_id_from_name(self.study.study_name))


def min_resource(cfg: StudyConfig) -> int:
    """Fewest epochs a candidate gets under halving, Hyperband or SHA (one default for every
    engine): ``search.min_resource``, else ``train.epochs // factor**3`` (at least 1), which gives
    four rungs (e.g. 3, 9, 27, 81 of 100 epochs with factor 3)."""
    s = cfg.search
    return int(s.min_resource or max(1, cfg.train.epochs // (s.factor ** 3)))


class Engine(ABC):
    """Base class and protocol of an engine. Subclasses set the class attributes and implement
    :meth:`run`; the defaults suit an engine that trains one model per trial."""

    name: ClassVar[str] = ""
    #: k for k-fold CV when ``search.cv`` is not set (None: a holdout validation split)
    default_cv: ClassVar[int | None] = None
    #: can several processes share a study (``run --workers``, ``hpsearch worker``)?
    supports_workers: ClassVar[bool] = False
    #: does an interrupted study need ``--resume`` to continue (False: it always continues)?
    needs_resume_flag: ClassVar[bool] = True
    #: does run() stop at the next batch on ``ctx.control.request_stop`` (SIGINT / SIGTERM)?
    stops_gracefully: ClassVar[bool] = False

    def check(self, cfg: StudyConfig, space: SearchSpace) -> None:  # noqa: B027 - optional hook
        """Engine-specific checks of a study file; raise ConfigError with ``field: problem; fix``."""

    def n_trials(self, cfg: StudyConfig) -> int | None:
        """The trial budget (``search.n_trials`` with this engine's default)."""
        return cfg.search.n_trials

    def cv_folds(self, cfg: StudyConfig) -> int:
        """Folds the data must allow (1: holdout)."""
        return cfg.search.cv or self.default_cv or 1

    def study_options(self, cfg: StudyConfig, space: SearchSpace, worker_index: int | None) -> dict[str, Any]:
        """Keyword arguments for ``optuna.create_study`` (sampler, pruner) for the process with
        ``worker_index`` (0: one process; None: a worker started by hand)."""
        return {}

    def plan(self, ctx: RunContext) -> int | None:
        """How many candidates the search evaluates in all (None: not known in advance)."""
        return self.n_trials(ctx.cfg)

    def is_complete(self, ctx: RunContext) -> bool:
        """Has the study reached its budget (counted in storage: across runs and workers)?"""
        planned = self.plan(ctx)
        if planned is None:
            return bool(ctx.study.user_attrs.get(STUDY.COMPLETE))
        done = sum(1 for t in ctx.study.get_trials(deepcopy=False) if counts_toward_budget(t))
        return done >= planned

    @abstractmethod
    def run(self, ctx: RunContext) -> None:
        """Run the search until its budget; record every finished candidate."""

    def refit(self, ctx: RunContext, params: dict[str, Any], trial: Any) -> Refit:
        """The best candidate trained once more when no model of it was stored (CV engines keep no
        fold model)."""
        raise StudyFailedError(f"study {ctx.study.study_name!r}: the best trial {trial.number} has no stored model")


def get_engine(name: str) -> Engine:
    """The engine registered as ``name`` (a ConfigError naming search.engine otherwise)."""
    try:
        cls = ENGINES.get(name)
    except KeyError:
        raise ConfigError(ENGINES.unknown(name)) from None
    engine: Engine = cls()
    return engine


class FailureStreak:
    """The one "N failed trials in a row stop the study" rule, for every engine and worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.streak = 0
        self.last_reason: str | None = None

    @property
    def tripped(self) -> bool:
        return self.streak >= self.limit

    def update(self, state: str, reason: str | None = None) -> bool:
        """Count one finished trial (state name); returns whether the streak tripped."""
        if state == "FAIL":
            self.streak += 1
            self.last_reason = reason
        else:
            self.streak = 0
        return self.tripped

    def error(self, study_name: str, what: str = "trials") -> StudyFailedError:
        return StudyFailedError(
            f"study {study_name!r} stopped: {self.streak} {what} failed in a row (last: {self.last_reason});"
            f" check the space ranges and the data (search.max_failures_in_row = {self.limit})"
        )


@dataclass
class Refit:
    """A model trained after the search for the best candidate, with the preprocessing fitted on the
    rows it was trained on."""

    model: Any
    preprocessor: Any
    epochs: int


@dataclass
class Candidate:
    """A finished candidate: what gets stored as one Optuna trial."""

    params: dict[str, Any]
    state: str  # "COMPLETE" | "PRUNED" | "FAIL"
    value: float | None = None
    #: every objective's value (several objectives), the first being ``value``; None: one objective
    values: list[float] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    intermediate_values: dict[int, float] = field(default_factory=dict)
    duration: float | None = None  # seconds, for trials recorded after the fact
    failure: str | None = None


def record_candidate(study: Any, candidate: Candidate, *, engine: str, distributions: dict[str, Any] | None = None,
                     trial: Any = None) -> Any:
    """Store a finished candidate as an Optuna trial, with the attribute names of ``records.py``.

    ``trial`` is a running trial of ``study.ask()`` (the Optuna engine): its attributes are set and it
    is told. Without it (the scikit-learn engines) a finished trial is created with ``distributions``
    and added. Returns the frozen trial.
    """
    import optuna
    from optuna.trial import TrialState

    attrs = dict(candidate.user_attrs)
    attrs[TRIAL.ENGINE] = engine
    if candidate.failure is not None:
        attrs[TRIAL.FAILURE] = candidate.failure
    elif trial is not None and trial.user_attrs.get(TRIAL.FAILURE):
        attrs[TRIAL.FAILURE] = None  # a re-queued copy inherits its predecessor's reason; it did not fail
    attrs = clean_attr(attrs)
    state = TrialState[candidate.state]
    if trial is not None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if state == TrialState.COMPLETE:
            return study.tell(trial, candidate.values or candidate.value, skip_if_finished=True)
        return study.tell(trial, state=state, skip_if_finished=True)
    dists = distributions or {}
    params = {k: v for k, v in candidate.params.items() if k in dists}
    complete = state == TrialState.COMPLETE
    frozen = optuna.trial.create_trial(
        state=state, value=candidate.value if complete and not candidate.values else None,
        values=candidate.values if complete and candidate.values else None, params=params,
        distributions={k: dists[k] for k in params}, user_attrs=attrs,
        intermediate_values=dict(candidate.intermediate_values),
    )
    if candidate.duration is not None and frozen.datetime_complete is not None:  # the real span
        frozen.datetime_start = frozen.datetime_complete - datetime.timedelta(seconds=candidate.duration)
    study.add_trial(frozen)
    return frozen
