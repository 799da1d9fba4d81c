"""Proposals for a whole pack from one TPE fit, and a bounded history for long studies (issue 26).

Optuna's TPE refits on every finished trial at every ``ask``: a pack of K trials pays K fits, and
each fit grows with the study. :class:`PackTPESampler` wraps the study's ``TPESampler``: the first
``sample_relative`` after a tell in this process fits TPE once (one storage read, one split, the two
Parzen estimators l and g, as TPE itself builds them) and the next asks draw from that fit until a
trial is told. Each proposal is the best of its own block of ``n_ei_candidates`` candidates drawn
from l, as a sequential ask is, scored by l / g_j, where g_j is g with a kernel added for every
proposal already made (the kernel a refit of g would give that point): the constant liar's effect
without a refit, so a pack spreads as a sequential constant-liar pack does. Candidates are scored
in lazy chunks (1, 1, 2, 4, ... blocks), so a refill that needs one proposal costs one TPE ask; a
reservation that says how many proposals follow (:meth:`PackTPESampler.expect`: a pack's drafts)
gets all their candidates drawn and scored in one batch, and its read of the study (made under the
budget lock) is the fit's history: no read of its own.
Trials stay ordinary: ``study.ask()`` and ``suggest_*`` record them, and each proposal is written
to the trial's ``tpe:relative_params`` attribute, as TPE does, so other workers' TPE sees it.

Bounded history (:data:`HISTORY`): above ``above`` finished trials, TPE is fitted on the best
``n_best`` complete trials, the ``n_recent`` most recent finished ones and every running one
(:func:`bounded_history`). With ``n_best`` at least TPE's 25 "good" trials, l is the same as with
the whole history; g loses old poor trials, which TPE's weights already discount.

The private Optuna names used here are listed, with their reasons, in :mod:`hpsearch.compat`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import scipy.special
from optuna.samplers import BaseSampler, TPESampler
from optuna.samplers._tpe import _truncnorm
from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator
from optuna.samplers._tpe.probability_distributions import (
    _BatchedCategoricalDistributions,
    _MixtureOfProductDistribution,
)
from optuna.samplers._tpe.sampler import (
    _RELATIVE_PARAMS_KEY,
    _SYSTEM_ATTR_MAX_LENGTH,
    _split_trials,
    default_gamma,
    default_gamma_multiobjective,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpsearch.engines.parzen import distinct_values, kernel_log_pdf, mixture_log_pdf
from hpsearch.engines.samplers import first_direction
from hpsearch.storage.view import Snapshot, trial_columns

__all__ = ["HistoryCap", "HISTORY", "PackPlan", "PackTPESampler", "bounded_history",
           "history_index"]

_FIT_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
_FINISHED = frozenset((TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
_COMPLETE, _PRUNED, _WAITING = TrialState.COMPLETE.value, TrialState.PRUNED.value, TrialState.WAITING.value
_FINISHED_CODES = np.array([s.value for s in _FINISHED], dtype=np.int8)
_FIT_CODES = np.array([s.value for s in _FIT_STATES], dtype=np.int8)


class HistoryCap(NamedTuple):
    """Fit on the best ``n_best`` + the ``n_recent`` most recent finished trials, once more than
    ``above`` trials have finished."""

    n_best: int
    n_recent: int
    above: int

    def line(self) -> str:
        return (f"hpsearch: sampler tpe: {self.above}+ finished trials: TPE now fits on the best {self.n_best}"
                f" + the {self.n_recent} most recent finished trials + the running ones (bounded history)")


#: The cap, chosen by measurement (benchmarks/bench_sampling.py): no quality drop on the anchors' space
#: (a history capped to half its trials from the start: best validation accuracy 0.9593 over 3 seeds,
#: uncapped 0.9574, sequential TPE 0.9556); from 500 finished trials (was 1,000) because a fit's cost
#: grows with its history (TPE's split and Parzen estimators, per trial): reservations of 2 at 900
#: trials cost 9.9 ms CPU per trial with it, 14.0 ms without (7 ms at 200 trials).
HISTORY = HistoryCap(n_best=250, n_recent=250, above=500)


def history_index(states: np.ndarray, values: np.ndarray, directions: list[StudyDirection], n_best: int,
                  n_recent: int, above: int = -1) -> np.ndarray | None:
    """The positions (ascending) of :func:`bounded_history`'s trials in a study given as columns
    (:class:`hpsearch.storage.view.Snapshot`'s ``states`` and ``values``); None when no more than
    ``above`` trials have finished. NumPy over the columns: no pass over the trials in Python."""
    finished = np.flatnonzero((states == _COMPLETE) | (states == _PRUNED))  # COMPLETE or PRUNED
    if len(finished) <= above:
        return None
    done = np.flatnonzero((states == _COMPLETE) & ~np.isnan(values))  # COMPLETE with a value
    sign = -1.0 if directions[0] == StudyDirection.MAXIMIZE else 1.0
    best = done[np.argsort(sign * values[done], kind="stable")[:n_best]]  # ties: the earlier trial
    recent = finished[-n_recent:] if n_recent > 0 else finished[:0]
    unfinished = np.flatnonzero(~np.isin(states, _FINISHED_CODES))  # the running liars
    return np.union1d(np.union1d(best, recent), unfinished)


def bounded_history(trials: list[FrozenTrial], directions: list[StudyDirection], n_best: int,
                    n_recent: int, above: int = -1) -> list[FrozenTrial]:
    """The best ``n_best`` COMPLETE trials (first objective), the ``n_recent`` most recent finished
    ones (COMPLETE or PRUNED) and every unfinished one (the running liars), in trial-number order
    (TPE's weights rank by recency); ``trials`` itself when no more than ``above`` have finished.
    ``trials``: in number order (as ``get_trials`` returns them)."""
    idx = history_index(*trial_columns(trials), directions, n_best, n_recent, above)
    return trials if idx is None else [trials[i] for i in idx]


_PYTHON_TRUNCNORM = (_truncnorm._log_ndtr, _truncnorm._ndtri_exp, _truncnorm._ndtr)


def _log_ndtr(a: Any) -> np.ndarray:
    return np.asarray(scipy.special.log_ndtr(np.asarray(a, dtype=float)))


def _ndtri_exp(y: Any) -> np.ndarray:
    return np.asarray(scipy.special.ndtri_exp(np.asarray(y, dtype=float)))


def _ndtr(a: Any) -> np.ndarray:
    return np.asarray(scipy.special.ndtr(np.asarray(a, dtype=float)))


@contextlib.contextmanager
def _vectorised_truncnorm() -> Iterator[None]:
    """TPE's truncated normal with SciPy's ``log_ndtr``, ``ndtri_exp`` and ``ndtr`` while this sampler
    fits and proposes. Optuna's (optuna.samplers._tpe._truncnorm, written without SciPy) evaluates
    log Phi one element at a time in Python: a fit of g on a discrete parameter made ~14,000 such
    calls; a quarter of the sampler's time at 10,000 trials (1.8 -> 1.4 ms a trial at 1,000). The same
    functions (SciPy's more exact: relative difference 6e-8 at x = 6, where Optuna's series is off;
    Optuna's ``_ndtr``, 0.5 + 0.5 erf(x / sqrt 2) with a NumPy-wrapped erf, is 0 below x = -8.37 where
    SciPy's is not, an absolute difference under 1e-16: it only enters ``log1p`` of a central mass,
    the ``1 - ...`` in it, and 8 % of the sampler's time at 1,000 trials); restored after, so Optuna
    elsewhere in the process is unchanged."""
    _truncnorm._log_ndtr, _truncnorm._ndtri_exp, _truncnorm._ndtr = _log_ndtr, _ndtri_exp, _ndtr
    try:
        yield
    finally:
        _truncnorm._log_ndtr, _truncnorm._ndtri_exp, _truncnorm._ndtr = _PYTHON_TRUNCNORM


class PackPlan:
    """One TPE fit; :meth:`next` returns proposals (external values) one at a time."""

    def __init__(self, tpe: TPESampler, study: Any, space: dict[str, Any], k: int,
                 trials: list[FrozenTrial]) -> None:
        self.tpe, self.space, self.k = tpe, space, max(1, k)
        n_fit = sum(t.state != TrialState.RUNNING for t in trials)
        gamma = tpe._gamma or (default_gamma if len(study.directions) <= 1 else default_gamma_multiobjective)
        below, above = _split_trials(first_direction(study), trials, gamma(n_fit))  # pruned: first objective
        self.mpe_below: _ParzenEstimator = tpe._build_parzen_estimator(study, space, below, handle_below=True)
        self.mpe_above: _ParzenEstimator = tpe._build_parzen_estimator(study, space, above, handle_below=False)
        par = tpe._parzen_estimator_parameters
        n_obs = len(self.mpe_above._mixture_distribution.weights) - 1  # the last kernel is the prior
        self.s_above = float(np.asarray(par.weights(n_obs))[:n_obs].sum()) + par.prior_weight  # g's mass
        self.n_ei, self.rng = tpe._n_ei_candidates, tpe._rng.rng
        self.picks: set[tuple[float, ...]] = set()  # the proposals made (no exact repeat)
        self.kernels: list[_MixtureOfProductDistribution] = []
        self.sorted_mu: list[np.ndarray] = [  # g's kernel centres per numeric parameter (no prior)
            np.empty(0) if isinstance(d, _BatchedCategoricalDistributions) else np.sort(d.mu[:-1])
            for d in self.mpe_above._mixture_distribution.distributions]
        self.cand = np.empty((0, len(space)))
        self.distinct: list[Any] = []  # the candidates' distinct values per discrete parameter (parzen.py)
        self.log_l = self.log_g = self.liar_sum = np.empty(0)
        self.block = 0
        self.coming = 0  # proposals known to follow (set by PackTPESampler.expect's hint)

    def _extend(self, m: int) -> None:
        """``m`` more candidates from l with log l, log g (one batched evaluation each) and the liars."""
        cand = self.mpe_below.sample(self.rng, m)
        arr = np.array([cand[p] for p in self.space]).T
        liar = np.full(m, -np.inf)
        distinct = distinct_values(self.mpe_above._mixture_distribution, arr) if self.kernels else []
        for kern in self.kernels:
            liar = np.logaddexp(liar, kernel_log_pdf(kern, arr, distinct))
        self.cand = np.vstack([self.cand, arr])
        self.distinct = distinct_values(self.mpe_above._mixture_distribution, self.cand)  # for the liars
        self.log_l = np.concatenate([self.log_l, mixture_log_pdf(self.mpe_below._mixture_distribution, arr)])
        self.log_g = np.concatenate([self.log_g, mixture_log_pdf(self.mpe_above._mixture_distribution, arr)])
        self.liar_sum = np.concatenate([self.liar_sum, liar])

    def _liar_kernel(self, row: np.ndarray) -> _MixtureOfProductDistribution:
        """The kernel a refit of g on (its trials + this point) gives the point, by TPE's bandwidth
        rule (the larger gap to the sorted neighbours, the inner gap at the ends without
        consider_endpoints, clipped to [range / min(100, kernels + 1), range]) in O(log N)."""
        par = self.tpe._parzen_estimator_parameters
        n_obs = len(self.mpe_above._mixture_distribution.weights)  # g's observations + this point
        dists: list[Any] = []
        for i, d in enumerate(self.mpe_above._mixture_distribution.distributions):
            if isinstance(d, _BatchedCategoricalDistributions):
                w = np.full((1, d.weights.shape[1]), par.prior_weight / (n_obs + 1))
                w[0, int(row[i])] += 1
                dists.append(d._replace(weights=w / w.sum()))
                continue
            v = math.log(row[i]) if d.is_log else float(row[i])
            lo, hi, srt = d.adapted_low, d.adapted_high, self.sorted_mu[i]
            j = int(np.searchsorted(srt, v))
            left, right = (srt[j - 1] if j > 0 else lo), (srt[j] if j < len(srt) else hi)
            if not par.consider_endpoints and len(srt) >= 2 and j in (0, len(srt)):
                sigma = right - v if j == 0 else v - left
            else:
                sigma = max(v - left, right - v)
            minsigma = (hi - lo) / min(100.0, 1.0 + n_obs + 1) if par.consider_magic_clip else 1e-12
            dists.append(d._replace(mu=np.array([v]), sigma=np.array([min(max(sigma, minsigma), hi - lo)])))
        return _MixtureOfProductDistribution(weights=np.array([1.0]), distributions=dists)

    def next(self) -> dict[str, Any]:
        """The next proposal: the best of its own block of candidates under l / g_j, no exact repeat.
        When more blocks are needed, :attr:`coming` of them (the proposals known to follow, this one
        included: a reservation's drafts) are drawn and scored in one batch: one evaluation of l and g
        for all of them, whose cost is mostly per distinct value of a discrete parameter, not per
        candidate; else 1, 1, 2, 4, ... blocks (at most K)."""
        have = len(self.cand) // self.n_ei
        if self.block >= have:
            self._extend(self.n_ei * max(1, self.coming, min(have, self.k)))
        idx = np.arange(self.block * self.n_ei, (self.block + 1) * self.n_ei)
        self.block += 1
        score = self.log_l[idx] - self.log_g[idx]
        j = len(self.kernels)  # the liars so far (one per proposal, a repeat included)
        if j:
            log_gj = np.logaddexp(np.log(self.s_above) + self.log_g[idx], self.liar_sum[idx]) - np.log(self.s_above + j)
            score = self.log_l[idx] - log_gj
        order = np.argsort(-score, kind="stable")
        best = next((idx[i] for i in order if tuple(self.cand[idx[i]]) not in self.picks), idx[order[0]])
        row = self.cand[best].copy()
        self.picks.add(tuple(row))
        kern = self._liar_kernel(row)
        self.kernels.append(kern)
        rest = self.block * self.n_ei  # the liar only matters to the blocks not used yet
        if rest < len(self.cand):
            self.liar_sum[rest:] = np.logaddexp(self.liar_sum[rest:],
                                                kernel_log_pdf(kern, self.cand[rest:], self.distinct))
        return {p: dist.to_external_repr(row[n]) for n, (p, dist) in enumerate(self.space.items())}


class PackTPESampler(BaseSampler):
    """A ``TPESampler`` that fits once per pack (see the module docstring): ``sample_relative``
    serves proposals from one :class:`PackPlan` until a trial of this process is told, then the
    next ask refits. Startup random trials, independent sampling and search-space inference are the
    wrapped sampler's. Under Hyperband each bracket's study view gets a plan of its own. ``say``
    receives the one line said when the bounded history starts applying."""

    def __init__(self, tpe: TPESampler, pack_size: int, history: HistoryCap | None = HISTORY,
                 say: Callable[[str], None] | None = None) -> None:
        self.tpe, self.k, self.history, self.say = tpe, pack_size, history, say
        # one plan per study view: Hyperband passes each trial its bracket's view (``_bracket_id``)
        self.plans: dict[Any, PackPlan] = {}
        self.fits, self.bounded = 0, False
        self.coming = 0  # proposals announced by :meth:`expect` and not made yet
        self.known: Snapshot | None = None  # the study's trials as read by the reservation

    def expect(self, n: int, snap: Snapshot | None = None) -> None:
        """The next ``n`` proposals belong to one reservation (a pack's drafts): their candidates are
        drawn and scored in one batch (:attr:`PackPlan.coming`), not in blocks of 1, 1, 2, 4, ...
        A hint: the same rule picks each proposal; only the batches the seeded candidates are drawn in
        differ. ``snap``: the study's trials as the reservation just read them (what a read now would
        return), with their columns: the next fit on the whole study (not a Hyperband bracket's view)
        uses them."""
        self.coming, self.known = max(0, int(n)), snap

    def reseed_rng(self) -> None:
        self.tpe.reseed_rng()

    def infer_relative_search_space(self, study: Any, trial: FrozenTrial) -> dict[str, Any]:
        plan = self.plans.get(getattr(study, "_bracket_id", None))
        if plan is not None:
            return plan.space  # no storage read inside a pack
        return self.tpe.infer_relative_search_space(study, trial)

    def _fit_trials(self, study: Any) -> list[FrozenTrial]:
        known, self.known = self.known, None
        whole = known is not None and getattr(study, "_bracket_id", None) is None  # every state, no read
        if whole and known is not None:  # (``known``: for the type checker)
            trials, states, values = known.trials, known.states, known.values  # as read by the reservation
        else:
            trials = study.get_trials(deepcopy=False, states=_FIT_STATES)
            states, values = trial_columns(trials)
        cap = self.history
        idx = None if cap is None else history_index(states, values, study.directions, cap.n_best, cap.n_recent,
                                                    cap.above)
        if idx is None:
            return [trials[i] for i in np.flatnonzero(np.isin(states, _FIT_CODES))] if whole else trials
        if not self.bounded:
            self.bounded = True
            if self.say is not None:
                self.say(cap.line())  # type: ignore[union-attr]
        return [trials[i] for i in idx if states[i] != _WAITING]  # the running liars, not the queued

    def sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if not search_space:
            return {}
        key = getattr(study, "_bracket_id", None)
        plan = self.plans.get(key)
        coming, self.coming = self.coming, max(0, self.coming - 1)
        if plan is None or plan.space != search_space:
            trials = self._fit_trials(study)
            if sum(t.state != TrialState.RUNNING for t in trials) < self.tpe._n_startup_trials:
                return {}  # random startup: the wrapped TPE's independent sampling
            with _vectorised_truncnorm():
                plan = self.plans[key] = PackPlan(self.tpe, study, search_space, self.k, trials)
            self.fits += 1
        plan.coming = coming
        with _vectorised_truncnorm():
            params = plan.next()
        # as TPESampler does: other workers' constant liar sees it (a draft, not stored yet, is created
        # with its params: hpsearch.execution.drafts)
        if self.tpe._constant_liar and trial.state == TrialState.RUNNING:
            text = json.dumps(params)
            step = _SYSTEM_ATTR_MAX_LENGTH
            for i in range(0, len(text), step):
                study._storage.set_trial_system_attr(trial._trial_id, f"{_RELATIVE_PARAMS_KEY}:{i // step}",
                                                     text[i:i + step])
        return params

    def sample_independent(self, study: Any, trial: FrozenTrial, name: str, dist: Any) -> Any:
        return self.tpe.sample_independent(study, trial, name, dist)

    def before_trial(self, study: Any, trial: FrozenTrial) -> None:
        self.tpe.before_trial(study, trial)

    def after_trial(self, study: Any, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self.plans.clear()  # a tell: the next ask refits on the new result
        self.known = None  # and reads the study again
        self.tpe.after_trial(study, trial, state, values)


def pack_sampling(ctx: Any, k: int) -> bool:
    """Give the packed loop of ``ctx`` one sampler fit per pack of ``k`` where the sampler allows it
    (TPE), and say in one line (run output and study attribute) which way proposals are made.
    Returns whether the pack's new trials may be drafted (:mod:`hpsearch.execution.drafts`: created
    with their params in one transaction each): TPE and random, whose proposals need nothing of the
    stored trial; the others (GP, CMA-ES, QMC, grid, NSGA, ...) get one ``study.ask()`` per trial."""
    from optuna.samplers import RandomSampler

    from hpsearch.records import STUDY

    study, name = ctx.study, ctx.cfg.search.sampler

    def decide(text: str, attr: str = STUDY.SAMPLING) -> None:
        ctx.decide(attr, name, text.removeprefix("hpsearch: "))  # one line, and in STUDY.DECISIONS
        study.set_user_attr(attr, text)

    if isinstance(study.sampler, TPESampler):  # several objectives: its subclass (engines.samplers.tpe)
        study.sampler = PackTPESampler(study.sampler, k, HISTORY,
                                       say=lambda text: decide(text, STUDY.SAMPLING_HISTORY))
        decide(f"hpsearch: sampler tpe: one fit per pack of {k} (constant-liar spread inside the pack); above"
               f" {HISTORY.above} finished trials it fits on the best {HISTORY.n_best}"
               f" + {HISTORY.n_recent} most recent")
    elif name in ("gp", "cmaes"):
        decide(f"hpsearch: sampler {name}: one ask per trial of the pack of {k} (no batched proposals for {name})")
    drafted = isinstance(study.sampler, PackTPESampler) or type(study.sampler) is RandomSampler
    how = ("each new trial is created with its params in one transaction (drafted)" if drafted else
           "each new trial is asked and suggested one by one (this sampler's proposals need the stored trial)")
    decide(f"hpsearch: sampler {name}: {how}", STUDY.TRIAL_CREATION)
    return drafted
