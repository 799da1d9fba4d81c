"""The run context every engine, loop and runner shares, the progress observer, and the one helper
that records a finished candidate as an Optuna trial (with the attribute names of
:mod:`hpsearch.records`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hpsearch.records import STUDY, TRIAL, clean_attr
from hpsearch.storage.batch import write_user_attrs

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.data.prepare import PreparedData
    from hpsearch.spec.config import StudyConfig
    from hpsearch.spec.space import SearchSpace

__all__ = ["Observer", "NullObserver", "RunContext", "Candidate", "Refit", "record_candidate"]


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
    engine: Any  # hpsearch.engines.base.Engine (engines are above this package)
    observer: Observer = field(default_factory=NullObserver)
    artifacts: str | None = None  # the artifact location given (--artifacts / study file), if any
    worker_index: int | None = None  # index under ``run --workers`` (seeds), None otherwise
    launch: int | None = None  # launch number taken already (a worker's GPU slot claim), else None
    control: Any = None  # hpsearch.execution.control.Control while trials run
    stop_rule: str | None = None  # the stop rule (timeout, patience, target) that ended this run
    #: (name, direction) of every objective; more than one: a multi-objective study (Pareto front)
    objectives: list[tuple[str, str]] = field(default_factory=list)
    #: ``f(study, frozen_trial)`` after each finished trial (Optuna's callback signature): the study's
    #: trackers, ``search.callbacks`` and ``run_study(callbacks=...)``
    trial_callbacks: list[Any] = field(default_factory=list)
    #: Keras callbacks added to every trial's fit (``run_study(keras_callbacks=...)``; no packing)
    keras_callbacks: list[Any] = field(default_factory=list)

    def decide(self, key: str, value: Any, line: str) -> None:
        """One automatic decision (no silent choices): said in one line through the observer and
        recorded on the study as ``STUDY.DECISIONS[key] = {"value", "line"}``."""
        self.observer.message(f"hpsearch: {line}")
        decisions = dict(self.study.user_attrs.get(STUDY.DECISIONS) or {})
        entry = clean_attr({"value": value, "line": line})
        if decisions.get(key) != entry:
            decisions[key] = entry
            self.study.set_user_attr(STUDY.DECISIONS, decisions)

    @property
    def several(self) -> bool:
        """Several objectives: trials tell a list of values, hpsearch's Pareto rung rule prunes
        (:mod:`hpsearch.trials.rungs`; Optuna's pruners take one value), the result is a front."""
        return len(self.objectives) > 1

    @property
    def study_id(self) -> int:
        return int(self.storage.get_study_id_from_name(self.study.study_name))


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


def finished_attrs(candidate: Candidate, engine: str, inherited_failure: bool) -> dict[str, Any]:
    """The user attributes a finished candidate is stored with: its own, the engine and its failure
    (cleared when the trial is a re-queued copy that inherited its predecessor's reason and did not
    fail: ``inherited_failure``)."""
    attrs = dict(candidate.user_attrs)
    attrs[TRIAL.ENGINE] = engine
    if candidate.failure is not None:
        attrs[TRIAL.FAILURE] = candidate.failure
    elif inherited_failure:
        attrs[TRIAL.FAILURE] = None
    return clean_attr(attrs)


def record_candidate(study: Any, candidate: Candidate, *, engine: str, distributions: dict[str, Any] | None = None,
                     trial: Any = None, storage: Any = None, trial_id: int | None = None) -> Any:
    """Store a finished candidate as an Optuna trial, with the attribute names of ``records.py``.

    ``trial`` is a running trial of ``study.ask()`` (the Optuna engine): its attributes are set and it
    is told; with ``storage`` (Optuna's RDBStorage) and its ``trial_id``, its attributes are written in
    one transaction (:func:`hpsearch.storage.batch.write_user_attrs`), not one commit each. Without it
    (the scikit-learn engines) a finished trial is created with ``distributions``
    and added. Returns the frozen trial.
    """
    import optuna
    from optuna.trial import TrialState

    attrs = finished_attrs(candidate, engine, trial is not None and bool(trial.user_attrs.get(TRIAL.FAILURE)))
    state = TrialState[candidate.state]
    if trial is not None:
        if storage is not None and trial_id is not None:
            write_user_attrs(storage, trial_id, attrs)
        else:
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
