"""The engine protocol and its registry lookup. The run context, the observer and the record of a
finished candidate are :mod:`hpsearch.trials.context`; the failure-streak rule is
:mod:`hpsearch.execution.stoprules`.

An engine is a class behind :class:`Engine`, found by name through
:data:`hpsearch.registry.ENGINES`. ``study.py`` drives any engine through this protocol and never
names one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from hpsearch.errors import ConfigError, StudyFailedError
from hpsearch.records import STUDY, counts_toward_budget
from hpsearch.registry import ENGINES
from hpsearch.trials.context import Refit, RunContext

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig
    from hpsearch.spec.space import SearchSpace

__all__ = [
    "Engine",
    "get_engine",
    "min_resource",
    "unused_search_fields",
]


def min_resource(cfg: StudyConfig) -> int:
    """Fewest epochs a candidate gets under halving, Hyperband or SHA (one default for every
    engine): ``search.min_resource``, else ``train.epochs // factor**3`` (at least 1), which gives
    four rungs (e.g. 3, 9, 27, 81 of 100 epochs with factor 3)."""
    s = cfg.search
    return int(s.min_resource or max(1, cfg.train.epochs // (s.factor ** 3)))


def unused_search_fields(cfg: StudyConfig, engine: str) -> str | None:
    """The one line an engine without a sampler or pruner says when the study file gives
    ``search.sampler`` or a ``search.pruner`` (the Optuna engine's): not used, never silently."""
    s = cfg.search
    given = [f"search.{f} {getattr(s, f)}" for f in ("sampler", "pruner")
             if f in s.model_fields_set and not (f == "pruner" and s.pruner == "none")]
    if not given:
        return None
    return (f"hpsearch: {' and '.join(given)} not used: engine {engine} draws its candidates as scikit-learn"
            " does and has no sampler or pruner (engine optuna's); remove them or set search.engine: optuna")


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
    #: does the engine keep no model per trial (cross-validated candidates), so that
    #: ``search.ensemble: K`` refits the top K after the search (:mod:`hpsearch.engines.ensemble_refit`)?
    refits_ensemble: ClassVar[bool] = False

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


