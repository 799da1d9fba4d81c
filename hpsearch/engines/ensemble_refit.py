"""Ensembles of the best for the scikit-learn engines (``search.ensemble: K``).

Those engines cross-validate candidates and keep no fold model; only the best candidate is refitted
on the training split (:func:`hpsearch.study.run.finalize`). With ``search.ensemble: K`` the other
candidates of the top K are refitted the same way once the search has ended, so that
``load_best(name, top_k=K)`` and ``hpsearch best --ensemble K`` have their K models. A finished trial
cannot take new attributes, so the models are stored against the study and listed, by trial number,
in ``STUDY.ENSEMBLE_MODELS`` (:func:`hpsearch.storage.queries.top_models` reads it). Each model is recorded
as soon as it is stored: an interrupted refit keeps what it made, and the next run adds the rest.
"""

from __future__ import annotations

from hpsearch.records import STUDY, clean_attr, ranked
from hpsearch.storage.artifacts import save_model_artifacts
from hpsearch.trials.context import RunContext

__all__ = ["refit_ensemble"]


def refit_ensemble(ctx: RunContext) -> list[int]:
    """Refit and store the top-K candidates that have no model yet (engines that say
    ``refits_ensemble``: the scikit-learn engines, after
    :func:`hpsearch.study.run.finalize` stored the best); the trial numbers refitted now."""
    k = ctx.cfg.search.ensemble
    if not k or k < 2 or not ctx.engine.refits_ensemble:
        return []
    study = ctx.study
    kept = {str(n): ids for n, ids in (study.user_attrs.get(STUDY.ENSEMBLE_MODELS) or {}).items()}
    best = study.user_attrs.get(STUDY.BEST_TRIAL)
    done = []
    for t in ranked(study.get_trials(deepcopy=False), ctx.direction)[:k]:
        if t.number == best or str(t.number) in kept:
            continue
        refit = ctx.engine.refit(ctx, dict(t.params), t)
        kept[str(t.number)] = list(save_model_artifacts(ctx.artifact_store, study, refit.model, refit.preprocessor))
        study.set_user_attr(STUDY.ENSEMBLE_MODELS, clean_attr(kept))
        done.append(t.number)
    if done:
        ctx.observer.message(f"hpsearch: search.ensemble = {k}: refitted trials {', '.join(map(str, done))}"
                             " on the training split for the ensemble")
    return done
