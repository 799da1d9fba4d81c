"""The Optuna engine: a sampler and a pruner (seeded factories, :mod:`hpsearch.engines.samplers`)
ask trials; the trial runner trains them; the one trial loop (:mod:`hpsearch.execution.loop`) keeps
the exact budget, the heartbeat and the stop handling, in one process or in N workers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from hpsearch.engines.base import Engine
from hpsearch.engines.samplers import launch_seed, make_pruner, make_sampler, pareto_rungs, pruning_steps, walks_grid
from hpsearch.engines.warmstart import check_warm_start, train_params, warm_start
from hpsearch.errors import ConfigError
from hpsearch.execution.budget import take_launch
from hpsearch.execution.control import Control, LoopSettings, control_callback
from hpsearch.execution.loop import run_trials
from hpsearch.execution.packed_loop import run_packed_trials
from hpsearch.packing.pack import refill_batch, refill_line
from hpsearch.packing.runner import PackedRunner, pack_line, pack_plan
from hpsearch.spec.space import SearchSpace
from hpsearch.trials.context import Refit, RunContext
from hpsearch.trials.runner import TrialRunner
from hpsearch.trials.seeds import trial_seeds

if TYPE_CHECKING:  # pragma: no cover
    from hpsearch.spec.config import StudyConfig

__all__ = ["OptunaEngine", "seed_launch", "several_note"]


def _grid_size(cfg: StudyConfig, space: SearchSpace) -> int | None:
    """The number of grid points when the sampler walks a grid (it stops there), else None."""
    if not walks_grid(cfg):
        return None
    return math.prod(len(v) for v in space.to_optuna_grid().values())


def seed_launch(ctx: RunContext) -> int:
    """Take this process's launch number on the study and seed its sampler from it (the rule:
    :func:`hpsearch.engines.samplers.launch_seed`). Returns the launch number; one taken already
    when the process opened the study (``ctx.launch``, a GPU slot claim) is used, not a second one."""
    launch = ctx.launch
    if launch is None:
        launch = take_launch(ctx.storage, ctx.storage_url, ctx.study_id, ctx.study.study_name)
    ctx.study.sampler = make_sampler(ctx.cfg, ctx.space, launch_seed(ctx.cfg.search.seed, launch))
    return launch


def several_note(ctx: RunContext) -> str:
    """The one line a study of several objectives says about pruning (hpsearch's Pareto rung rule,
    :mod:`hpsearch.trials.rungs`: Optuna's pruners take one value); packing is said by ``pack``."""
    return f"hpsearch: {pareto_rungs(ctx.cfg, ctx.objectives)[1]}; the result is a Pareto front"


class OptunaEngine(Engine):
    name: ClassVar[str] = "optuna"
    default_cv: ClassVar[int | None] = None  # holdout unless search.cv is set
    supports_workers: ClassVar[bool] = True
    needs_resume_flag: ClassVar[bool] = False  # a rerun continues up to the budget
    stops_gracefully: ClassVar[bool] = True

    def check(self, cfg: StudyConfig, space: SearchSpace) -> None:
        # building them is the check: e.g. gp without PyTorch, cmaes without numeric ranges or a
        # grid that is not finite are one-line ConfigErrors naming search.sampler
        make_sampler(cfg, space, cfg.search.seed)
        make_pruner(cfg)
        check_warm_start(cfg, space)
        s = cfg.search
        if len(s.trained_metrics) > 1 and s.cv:
            raise ConfigError(f"search.metric: a second trained metric ({s.trained_metrics[1]}) needs a holdout split"
                              " with engine optuna; remove search.cv or keep one trained metric")
        if s.n_trials is None and s.timeout is None and _grid_size(cfg, space) is None:
            raise ConfigError("search: give n_trials or timeout for engine optuna")

    def n_trials(self, cfg: StudyConfig) -> int | None:
        """``search.n_trials``; a grid sampler stops at the grid's size."""
        n, size = cfg.search.n_trials, _grid_size(cfg, cfg.search_space())
        if size is None:
            return n
        return size if n is None else min(n, size)

    def study_options(self, cfg: StudyConfig, space: SearchSpace, worker_index: int | None) -> dict[str, Any]:
        # the process that runs trials re-seeds it by its launch number (run); search.seed until then
        return {"sampler": make_sampler(cfg, space, cfg.search.seed), "pruner": make_pruner(cfg)}

    def is_complete(self, ctx: RunContext) -> bool:
        planned = self.n_trials(ctx.cfg)
        if planned is None:
            return False  # a timeout-only study runs again when asked
        return super().is_complete(ctx)

    def run(self, ctx: RunContext) -> None:
        ctl = ctx.control if ctx.control is not None else Control()
        ctx.control = ctl
        seed_launch(ctx)
        warm_start(ctx)  # search.warm_start and search.enqueue, once per study
        k, note = pack_plan(ctx)
        ctx.decide("pack", k, pack_line(ctx, k, note))
        if k > 1 and (line := refill_line(k)) is not None:
            ctx.decide("pack_refill", refill_batch(k), line)
        steps = pruning_steps(ctx.cfg, ctx.study.pruner)  # where the pruner decides: the runner reports there
        rungs = None
        if ctx.several:  # Optuna's pruners take one value: hpsearch's Pareto rung rule decides
            rungs = pareto_rungs(ctx.cfg, ctx.objectives)[0]
            ctx.decide("pruning", None if rungs is None else sorted(rungs.steps),
                       several_note(ctx).removeprefix("hpsearch: "))
            steps = set(rungs.steps) if rungs is not None else set()
        if k > 1:
            from hpsearch.engines.packsampling import pack_sampling  # imports Optuna's TPE internals

            drafted = pack_sampling(ctx, k)
            run_packed_trials(ctx, PackedRunner(ctx, k, extra_callbacks=[control_callback(ctl)], check_steps=steps,
                                                rungs=rungs), LoopSettings.from_env(), ctl, drafted=drafted)
            return
        runner = TrialRunner(ctx, extra_callbacks=[control_callback(ctl)], check_steps=steps, rungs=rungs)
        run_trials(ctx, runner, LoopSettings.from_env(), ctl)

    def refit(self, ctx: RunContext, params: dict[str, Any], trial: Any) -> Refit:
        """The best trial has no stored model here (a copy of ``search.warm_start``, an older study, a
        deleted artifact, a crash between its tell and its model): train its configuration once,
        seeded by the one seed rule (:mod:`hpsearch.trials.seeds`), so the study is repaired, not stuck."""
        return train_params(ctx, params, seed=trial_seeds(ctx.cfg.search.seed, [trial.number])[0])
