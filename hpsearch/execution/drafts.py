"""A pack's new trials written whole: each drafted (its params sampled) before it is stored, then
created in one transaction with its params and attributes (issue 26; issue 23 item 4).

Optuna's ``study.ask()`` per trial costs a scan for WAITING trials (re-reading every running trial),
a new trial, a read of it back, and then one transaction per ``suggest_*`` (and per attribute); on
PostgreSQL each is a round trip, and a pack pays them K times. A :class:`Draft` runs the study's own
search space (``space.suggest(draft)``) against the study's sampler as ``Trial._suggest`` does (a
single-valued range its one value, the sampler's relative proposal where it holds the parameter,
else ``sample_independent``), on the study view the sampler would get (the Hyperband bracket of the
trial's number), and :func:`hpsearch.storage.batch.create_trials` stores a reservation's drafts
with Optuna's own creation code in one transaction: params, distributions, user attributes and the
first heartbeats of all of them. The trial is an ordinary RUNNING trial from its first
commit (the dashboard, other workers' constant liar and every reader see its params at once), and
``suggest_*`` on it later reads the stored values without a write.

Only samplers whose proposals need nothing of the stored trial are drafted (the engine decides:
``hpsearch.engines.packsampling.pack_sampling``); the others get one ``study.ask()`` per trial. A
trial is drafted with the number it will get (the study's trial count, read under the study lock,
where every hpsearch process creates its trials), so a sampler that depends on the number (the
Hyperband bracket) sees what an ``ask`` would show it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

__all__ = ["Draft", "draft_trial", "resync", "created_trial"]


def _inside(dist: Any, value: Any) -> bool:
    """Is ``value`` (external) a value of ``dist``? (Optuna's check on a relative proposal.)"""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    try:
        internal = dist.to_internal_repr(value)
    except (ValueError, TypeError):
        return False
    if isinstance(dist, CategoricalDistribution):
        return True
    if not dist.low <= internal <= dist.high:
        return False
    return not isinstance(dist, IntDistribution) or dist.log or (internal - dist.low) % dist.step == 0


class Draft:
    """A trial not yet stored: ``suggest_*`` draw from the study's sampler into :attr:`frozen` (state
    WAITING: not a stored trial; the template :func:`draft_trial` returns)."""

    def __init__(self, study: Any, number: int) -> None:
        import optuna
        from optuna import pruners
        from optuna.trial import TrialState

        self.study = study
        self.frozen = optuna.trial.FrozenTrial(
            number=number, state=TrialState.WAITING, value=None, datetime_start=None, datetime_complete=None,
            params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=-1)
        # the sampler's view of the study for this trial (HyperbandPruner: the bracket of its number)
        self.view = pruners._filter_study(study, self.frozen)  # compat.PRIVATE_HOOKS
        self.relative_space: dict[str, Any] | None = None
        self.relative: dict[str, Any] = {}

    def _relative(self) -> dict[str, Any]:
        if self.relative_space is None:  # lazily, as Trial.relative_params
            sampler = self.study.sampler
            self.relative_space = sampler.infer_relative_search_space(self.view, self.frozen)
            self.relative = sampler.sample_relative(self.view, self.frozen, self.relative_space)
        return self.relative

    def draw(self, name: str, dist: Any) -> Any:
        from optuna.distributions import CategoricalDistribution, check_distribution_compatibility

        frozen = self.frozen
        if name in frozen.distributions:  # suggested twice: the first value, as Trial does
            check_distribution_compatibility(frozen.distributions[name], dist)
            return frozen.params[name]
        if dist.single():
            value = dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low
        elif name in self._relative() and self.relative_space is not None and name in self.relative_space \
                and _inside(dist, self.relative[name]):
            check_distribution_compatibility(self.relative_space[name], dist)
            value = self.relative[name]
        else:
            value = self.study.sampler.sample_independent(self.view, frozen, name, dist)
        dist.to_internal_repr(value)  # an invalid value raises here, as in Trial._suggest
        frozen.params[name], frozen.distributions[name] = value, dist
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        from optuna.distributions import FloatDistribution

        return float(self.draw(name, FloatDistribution(low, high, log=log, step=step)))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        from optuna.distributions import IntDistribution

        return int(self.draw(name, IntDistribution(low, high, log=log, step=step)))

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        from optuna.distributions import CategoricalDistribution

        return self.draw(name, CategoricalDistribution(list(choices)))


def resync(study: Any, trials: list[Any] | None = None) -> None:
    """Drop the study's per-thread copy of its trials, as ``study.ask()`` and ``study.tell()`` drop it
    ("sync storage once every trial"): samplers read the trials through it (``_get_trials(use_cache=
    True)``), so trials drafted or told without ``ask`` / ``tell`` would otherwise stay unseen. With
    ``trials`` (the study's trials as just read, ``get_trials(deepcopy=False)``: what the samplers'
    next read would return) the copy is set to them instead: one read less."""
    study._thread_local.cached_all_trials = trials  # compat.PRIVATE_HOOKS


def draft_trial(study: Any, number: int, suggest: Callable[[Any], Any], user_attrs: dict[str, Any]) -> Any:
    """Draft trial ``number`` (``suggest(draft)``: the study's search space): the template of a
    RUNNING trial with its params and ``user_attrs``, for
    :func:`hpsearch.storage.batch.create_trials` (a pack's drafts in one transaction)."""
    from optuna.trial import TrialState

    draft = Draft(study, number)
    suggest(draft)
    template = draft.frozen
    template.state, template.datetime_start = TrialState.RUNNING, datetime.datetime.now()
    template.user_attrs = dict(user_attrs)
    return template


def created_trial(study: Any, template: Any, trial_id: int) -> Any:
    """The ``optuna.trial.Trial`` of a drafted trial just created from ``template`` (numbered as
    stored: :func:`hpsearch.storage.batch.create_trials`) with storage id ``trial_id``, without reading
    it back: what ``Trial(study, trial_id)`` builds from its read (the trial as stored, the sampler's
    ``before_trial``, relative params not drawn yet, fixed params from the system attributes), the
    stored trial being exactly the template (state RUNNING, no values or intermediate values yet)."""
    import optuna
    from optuna import pruners

    frozen = optuna.trial.FrozenTrial(
        number=template.number, state=template.state, value=None, datetime_start=template.datetime_start,
        datetime_complete=None, params=dict(template.params), distributions=dict(template.distributions),
        user_attrs=dict(template.user_attrs), system_attrs=dict(template.system_attrs), intermediate_values={},
        trial_id=trial_id)
    trial = optuna.trial.Trial.__new__(optuna.trial.Trial)
    # the attributes Trial.__init__ sets (compat.PRIVATE_HOOKS; tests/kernel/test_compat.py compares them)
    trial.study, trial._trial_id, trial.storage = study, trial_id, study._storage
    trial._cached_frozen_trial = frozen
    study.sampler.before_trial(pruners._filter_study(study, frozen), frozen)
    trial.relative_search_space, trial._relative_params = None, None
    trial._fixed_params = frozen.system_attrs.get("fixed_params", {})
    return trial
