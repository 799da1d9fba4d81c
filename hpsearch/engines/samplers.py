"""Optuna samplers and pruners as seeded factories, registered by name in
:data:`hpsearch.registry.SAMPLERS` / :data:`hpsearch.registry.PRUNERS`.

A sampler factory takes ``(cfg, space, seed)``: the seed is given explicitly so that each process of
a shared study gets a random stream of its own through the factory itself (no reseeding of a
sampler's internals; see :func:`launch_seed` for the rule). A pruner factory takes ``(cfg)``.
Adding a sampler: a function here, its line in the registry, the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch.engines.base import min_resource
from hpsearch.errors import ConfigError
from hpsearch.registry import PRUNERS, SAMPLERS
from hpsearch.spec.space import CategoricalParam, SearchSpace
from hpsearch.trials.constraints import MEASURED
from hpsearch.trials.rungs import ParetoRungs

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["make_sampler", "make_pruner", "pruning_steps", "pareto_rungs", "launch_seed", "walks_grid",
           "FirstDirection", "first_direction", "tpe", "cmaes", "random", "grid", "qmc", "gp", "nsga2", "nsga3",
           "hyperband", "sha", "median", "nop"]


def _startup_trials(cfg: StudyConfig) -> int:
    """Random trials before a model-based sampler (TPE, GP) takes over: a fifth of the budget, 3 to 10."""
    return min(10, max(3, (cfg.search.n_trials or 30) // 5))


class FirstDirection:
    """A view of a study of several objectives whose ``direction`` is the first objective's.

    Optuna's TPE ranks PRUNED trials by their last intermediate value in ``study.direction``, which
    raises for a study of several objectives: hpsearch prunes such studies on the first objective
    (:mod:`hpsearch.trials.rungs`), so that is the direction their intermediate values have.
    Everything else is the study's own."""

    def __init__(self, study: Any) -> None:
        self._study = study

    @property
    def direction(self) -> Any:
        return self._study.directions[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def first_direction(study: Any) -> Any:
    """``study`` seen through :class:`FirstDirection` (typed as the study it stands for)."""
    return FirstDirection(study)


def tpe(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    import optuna

    class ParetoTPESampler(optuna.samplers.TPESampler):
        """TPE on a study of several objectives whose pruned trials rank on the first objective."""

        def sample_relative(self, study: Any, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
            return super().sample_relative(first_direction(study), trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return super().sample_independent(first_direction(study), trial, name, dist)

    kind = ParetoTPESampler if len(cfg.search.metrics or []) > 1 else optuna.samplers.TPESampler
    # a pack asks K trials before telling any: constant_liar keeps them from drawing one point K times
    return kind(seed=seed, multivariate=True, group=False, n_startup_trials=_startup_trials(cfg),
                constant_liar=cfg.train.pack != 1)


def cmaes(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    import optuna

    if all(isinstance(p, CategoricalParam) for p in space.params.values()):
        raise ConfigError("search.sampler: cmaes needs numeric ranges in space; use tpe")
    if len(cfg.search.metrics or []) > 1:
        raise ConfigError("search.sampler: cmaes optimises one objective; use tpe, nsga2 or nsga3 for several")

    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def random(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def qmc(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    import optuna

    # QMC's scrambling seed is shared on purpose: its workers walk one sequence through the storage
    return optuna.samplers.QMCSampler(seed=cfg.search.seed, warn_independent_sampling=False)


def grid(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    import optuna

    class LoopGridSampler(optuna.samplers.GridSampler):
        """GridSampler whose end is the trial loop's budget (capped at the grid's size): its own
        ``study.stop()`` after the last point works only inside ``study.optimize``."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return LoopGridSampler(space.to_optuna_grid(), seed=seed)


def gp(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    """Gaussian-process Bayesian optimisation (Optuna's GPSampler); needs PyTorch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ConfigError("search.sampler: gp needs PyTorch; install it with pip install 'hpsearch[gp]'"
                          " or choose another sampler (tpe)")
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=_startup_trials(cfg))


def _population(cfg: StudyConfig) -> int:
    """NSGA's generation size: a quarter of the budget, 4 to 50 (Optuna's default, 50, would leave a
    small study all random)."""
    return min(50, max(4, (cfg.search.n_trials or 200) // 4))


def nsga2(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    """NSGA-II, the evolutionary sampler for several objectives (infeasible trials: constraints)."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(cfg))


def nsga3(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    """NSGA-III: NSGA-II with reference points, for three or more objectives."""
    import optuna

    return optuna.samplers.NSGAIIISampler(seed=seed, population_size=_population(cfg))


def hyperband(cfg: StudyConfig) -> Any:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=min_resource(cfg), max_resource=cfg.train.epochs,
                                          reduction_factor=cfg.search.factor)


def sha(cfg: StudyConfig) -> Any:
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource(cfg),
                                                  reduction_factor=cfg.search.factor)


def median(cfg: StudyConfig) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min_resource(cfg))


def nop(cfg: StudyConfig) -> Any:
    import optuna

    return optuna.pruners.NopPruner()


def make_sampler(cfg: StudyConfig, space: SearchSpace, seed: int | None) -> Any:
    """The configured sampler, seeded with ``seed`` (see :func:`launch_seed`)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    try:
        factory = SAMPLERS.get(cfg.search.sampler)
    except KeyError:
        raise ConfigError(SAMPLERS.unknown(cfg.search.sampler)) from None
    with warnings.catch_warnings():  # e.g. QMCSampler, GPSampler: stable enough for us, noisy for users
        warnings.simplefilter("ignore", ExperimentalWarning)
        return factory(cfg, space, seed)


def walks_grid(cfg: StudyConfig) -> bool:
    """Does the configured sampler walk a finite grid (and stop at its end)?"""
    return SAMPLERS.get(cfg.search.sampler) is grid


def make_pruner(cfg: StudyConfig) -> Any:
    """The configured Optuna pruner; none for several objectives (Optuna prunes on one reported value:
    hpsearch's Pareto rung rule decides there, :func:`pareto_rungs`)."""
    if len(cfg.search.metrics or []) > 1:
        import optuna

        return optuna.pruners.NopPruner()
    try:
        factory = PRUNERS.get(cfg.search.pruner)
    except KeyError:
        raise ConfigError(PRUNERS.unknown(cfg.search.pruner)) from None
    return factory(cfg)


def pruning_steps(cfg: StudyConfig, pruner: Any) -> set[int] | None:
    """The reported steps at which ``pruner`` can prune (None: any step).

    Successive halving and Hyperband decide only at rung steps ``min_resource * factor**k`` (every
    Hyperband bracket's rungs are among them); between rungs ``should_prune()`` is always False, so
    the trial runner does not ask (each ask reads the trial back from storage).
    """
    import optuna

    if isinstance(pruner, optuna.pruners.NopPruner):
        return set()
    if not isinstance(pruner, (optuna.pruners.HyperbandPruner, optuna.pruners.SuccessiveHalvingPruner)):
        return None
    steps, r = set(), min_resource(cfg)
    while r < cfg.train.epochs:
        steps.add(r)
        r *= cfg.search.factor
    return steps


def pareto_rungs(cfg: StudyConfig, objectives: list[tuple[str, str]]) -> tuple[ParetoRungs | None, str]:
    """How a study of several objectives prunes (:mod:`hpsearch.trials.rungs`) and the one line that
    says so: ``hyperband`` and ``sha`` at their rungs ``min_resource * factor**k`` keeping 1/factor
    (Hyperband's brackets are not used), ``median`` at ``min_resource * 2**k`` keeping half; none
    for ``search.pruner: none`` or when an objective after the first is trained (not known at a rung)."""
    names = [n for n, _ in objectives]
    head = f"{len(names)} objectives ({', '.join(names)})"
    trained = [n for n in names[1:] if n not in MEASURED.values()]
    if cfg.search.pruner == "none":
        return None, f"{head}: no pruning (search.pruner none)"
    if trained:
        return None, (f"{head}: pruning is off: objective {trained[0]} is trained, its value is not known at a rung"
                      f" (prunable: a trained first objective with {' / '.join(MEASURED.values())} after it)")
    eta = 2 if cfg.search.pruner == "median" else int(cfg.search.factor)
    steps, r = set(), min_resource(cfg)
    while r < cfg.train.epochs - 1:  # not at the last epoch: its training is done by then
        steps.add(r)
        r *= eta
    rungs = ParetoRungs(frozenset(steps), eta, tuple(d for _, d in objectives), tuple(names[1:]))
    at = ", ".join(str(s + 1) for s in sorted(steps)) or "none (fewer epochs than min_resource)"
    return rungs, (f"{head}: search.pruner {cfg.search.pruner} -> Pareto successive halving on {names[0]} after"
                   f" epochs {at}: a trial is kept at a rung when it is on the first {rungs.fronts} non-dominated"
                   f" fronts of ({', '.join(names)}) among the trials that reached it, or in the best 1/{eta} by front"
                   " then crowding (Optuna's pruners take one value)")


def launch_seed(seed: int | None, launch: int) -> int | None:
    """The sampler seed of the ``launch``-th process that runs trials of a study (0, 1, 2, ...; the
    counter is stored on the study, :func:`hpsearch.execution.budget.take_launch`).

    The rule: launch 0 (the first process ever, e.g. a one-process ``hpsearch run``) keeps
    ``search.seed``, so a study run from scratch in one process is reproducible; every later process
    (each worker of ``run --workers``, a second launch after a stop or a crash, a concurrent
    ``hpsearch run``) gets ``SeedSequence([search.seed, launch])``: different from every other launch,
    yet the same for the same history. With the same seed, workers would draw the same sequence
    (random) or the same startup trials (TPE), and a continued study would repeat its first draws.
    Without ``search.seed``: ``None`` (fresh entropy).
    """
    if seed is None:
        return None
    if launch == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([int(seed) % (1 << 64), int(launch)]).generate_state(1)[0])
