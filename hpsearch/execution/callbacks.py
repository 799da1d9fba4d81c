"""Trial callbacks: ``f(study, frozen_trial)`` after each finished trial, Optuna's own signature, so
Optuna's callbacks (``optuna.study.MaxTrialsCallback``...) and the study's trackers
(:mod:`hpsearch.tracking`) run unchanged, in one process and in every worker.

hpsearch runs its own trial loop, not ``Study.optimize``, so a callback gets the study behind a thin
view whose ``stop()`` ends hpsearch's search through the stop rules (the reason is stored and said
like a rule's); everything else is the Optuna study itself. A callback that raises is one line in
the run's output and the study goes on: a finished trial is already stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpsearch.execution.stoprules import REQUESTED, StopRules
from hpsearch.trials.context import RunContext

__all__ = ["CallbackStudy", "callback_name", "run_trial_callbacks"]


def callback_name(f: Callable[..., Any]) -> str:
    """``module:qualname`` of a function, or the class name of a callable object (for messages)."""
    if hasattr(f, "__qualname__"):
        return f"{getattr(f, '__module__', '?')}:{f.__qualname__}"
    return type(f).__name__


class CallbackStudy:
    """The study as a trial callback sees it: Optuna's study, whose ``stop()`` ends this search."""

    def __init__(self, study: Any, rules: StopRules, name: str) -> None:
        self._study, self._rules, self._name = study, rules, name

    def stop(self) -> None:
        """End the search once the running trials are stored (as ``search.patience`` would)."""
        self._rules.request(f"{REQUESTED}{self._name} called study.stop()")

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._study, attr)


def run_trial_callbacks(ctx: RunContext, frozen: Any, rules: StopRules) -> None:
    """Call each of ``ctx.trial_callbacks`` with the stored ``frozen`` trial (or its number: read
    back from the storage, as a trial created after the fact has no number itself), in order."""
    if not ctx.trial_callbacks:
        return
    if isinstance(frozen, int):
        st = ctx.storage
        frozen = st.get_trial(st.get_trial_id_from_study_id_trial_number(ctx.study_id, frozen))
    for f in ctx.trial_callbacks:
        name = callback_name(f)
        try:
            f(CallbackStudy(ctx.study, rules, name), frozen)
        except Exception as exc:  # noqa: BLE001 - the trial is stored; a callback's error ends nothing
            text = " ".join(str(exc).split())[:200]
            ctx.observer.message(f"hpsearch: callback {name} failed on trial {frozen.number}"
                                 f" ({type(exc).__name__}: {text}); the study goes on")
