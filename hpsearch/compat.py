"""The private hooks of other packages that hpsearch still uses, and the versions it supports.

hpsearch uses the public APIs of scikit-learn, scikeras, Optuna and Keras, except for the hooks
listed in :data:`PRIVATE_HOOKS`: each is a private name (or a patch of a third-party class) that
no public API replaces today, with the reason. ``tests/test_compat.py`` checks every entry on the
installed versions (run it at the lowest and the highest of :data:`SUPPORTED`) and fails, naming
the hook and the versions it was checked on, when one disappears or changes; it also fails when
hpsearch's code uses a private name of these packages that is not listed here.

This module imports nothing (it is read by tests and by people, not at run time).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PrivateHook", "PRIVATE_HOOKS", "SUPPORTED"]


class PrivateHook(NamedTuple):
    """One private name hpsearch relies on: the package, its dotted name, and why."""

    package: str
    name: str
    why: str


PRIVATE_HOOKS: tuple[PrivateHook, ...] = (
    PrivateHook(
        "keras", "keras.optimizers.Optimizer._get_variable_index",
        "hpsearch.packing.model.PackedOptimizer.update_step finds a variable's optimizer slots with it, as "
        "Keras' own optimizers and its documented subclassing example do; there is no public lookup",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._build_keras_model",
        "overridden by hpsearch.models.estimators: clear_session first, numpy scalars coerced, builder "
        "arguments with a default routed like user parameters (so set_params reaches them), a seeded "
        "build; scikeras has no public build hook",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._check_model_param",
        "extended by hpsearch.models.estimators: the default MLP when there is no model, build_fn or "
        "_keras_build_fn, and builder names ('mlp', 'pkg.mod:fn'); scikeras' choice otherwise",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._ensure_compiled_model",
        "extended by hpsearch.models.estimators: an uncompiled model with loss=None gets the loss that fits "
        "the task before scikeras' own compile and checks",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._user_params",
        "instance attribute (the **kwargs names given to __init__) that scikeras routes to the "
        "builder; hpsearch.models.estimators routes exactly those, plus the builder's own arguments",
    ),
    PrivateHook(
        "scikeras", "scikeras._utils.route_params",
        "scikeras' routing of model__ / fit__ / ... prefixes: hpsearch.models.estimators feeds it instead "
        "of re-implementing it",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._fit_keras_model",
        "overridden by hpsearch.models.estimators: callbacks given to fit() reach Keras (scikeras drops "
        "them), validation_data is encoded like y",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._fit_callbacks",
        "instance attribute (set by fit) that _fit_keras_model passes to Keras: extended for one "
        "fit with the callbacks given to fit()",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._get_metadata",
        "called by hpsearch.models.estimators for builders that take meta (as scikeras does); the built-in "
        "builders get the 'multiclass-onehot' target type on top",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper._get_compile_kwargs",
        "called for a builder that declares compile_kwargs (or **kwargs), which scikeras passes to "
        "such builders the same way, and to compile an uncompiled model",
    ),
    PrivateHook(
        "scikeras", "scikeras.utils.transformers._is_categorical_crossentropy",
        "the test scikeras' target encoder uses to one-hot encode y: meta must say so exactly when "
        "the encoder does",
    ),
    PrivateHook(
        "scikeras", "scikeras.wrappers.BaseWrapper.__sklearn_tags__",
        "absent in scikeras (it defines the removed _more_tags only); hpsearch.models.estimators adds it "
        "to BaseWrapper, returning BaseEstimator's tags, so sklearn's check_estimator_tags_renamed "
        "passes; dead (and to be removed) once scikeras defines it",
    ),
    PrivateHook(
        "optuna", "optuna.storages.RDBStorage._get_stale_trial_ids",
        "hpsearch.execution.requeue.fail_stale: the ids of trials whose heartbeat is older than the grace "
        "period, so that their failure reason is written before they are failed (a finished trial's "
        "attributes are frozen; the public fail_stale_trials gives no reason)",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe.sampler._split_trials",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): splits the fitted trials into TPE's "
        "below / above sets exactly as TPESampler does (running trials above)",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe.sampler._RELATIVE_PARAMS_KEY",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the system attribute a proposal is "
        "written to, so other workers' constant liar reads it as TPESampler's own",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe.sampler._SYSTEM_ATTR_MAX_LENGTH",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the chunk length of that attribute, "
        "as TPESampler writes it",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._build_parzen_estimator",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): builds l and g with TPESampler's own"
        " settings, so the pack's fit is TPE's fit",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._parzen_estimator_parameters",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the kernel settings (weights, prior "
        "weight, endpoints, magic clip) the liar kernel follows",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._gamma",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the split size function of the "
        "wrapped sampler (None: Optuna's default_gamma)",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._n_ei_candidates",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): candidates per proposal, as in a "
        "sequential ask",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._n_startup_trials",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): random trials before the first fit, "
        "as TPESampler counts them",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._constant_liar",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): whether proposals are shared with "
        "other workers through the relative-params attribute",
    ),
    PrivateHook(
        "optuna", "optuna.samplers.TPESampler._rng",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the sampler's seeded stream "
        "(LazyRandomState.rng): one seeded sequence for the pack's candidates",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe.parzen_estimator._ParzenEstimator._mixture_distribution",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the fitted kernels of g: their count"
        " (the liar weights) and sorted centres (the liar bandwidth)",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe.probability_distributions._MixtureOfProductDistribution",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): a one-kernel mixture per liar, "
        "scored with TPE's own log_pdf",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe.probability_distributions._BatchedCategoricalDistributions",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): tells a categorical kernel from a "
        "numeric one when building a liar kernel",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe._truncnorm._log_ndtr",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): swapped for SciPy's vectorised log_ndtr"
        " while hpsearch's sampler fits and proposes (Optuna's evaluates each element in Python); restored after",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe._truncnorm._ndtri_exp",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): swapped for SciPy's ndtri_exp, as above",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe._truncnorm._ndtr",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): swapped for SciPy's ndtr, as above",
    ),
    PrivateHook(
        "optuna", "optuna.samplers._tpe._truncnorm._log_diff",
        "hpsearch.engines.parzen (issue 26): log(p - q) from log p and log q, one of the three functions "
        "(with _log_ndtr and _ndtr) of Optuna's log Gaussian mass, which hpsearch.engines.parzen.log_gauss_mass "
        "writes into a float array (Optuna's fills a complex one) for its fewer-pass mixture density",
    ),

    PrivateHook(
        "optuna", "optuna.study.Study._storage",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): writes the relative-params attribute"
        " of the asked trial, as TPESampler does; hpsearch.execution.drafts: a drafted trial is created through"
        " it (create_new_trial with a template), as study.ask creates, so Optuna's cache of the storage knows it",
    ),
    PrivateHook(
        "optuna", "optuna.pruners._filter_study",
        "hpsearch.execution.drafts (a pack's trials created with their params, issue 26): the study view a "
        "sampler gets for a trial (HyperbandPruner: the bracket of its number), as Trial hands it to the "
        "sampler; there is no public way to get it",
    ),
    PrivateHook(
        "optuna", "optuna.trial.FrozenTrial._trial_id",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): the storage id of the asked trial "
        "that attribute is written to",
    ),
    PrivateHook(
        "optuna", "optuna.study.Study._bracket_id",
        "hpsearch.engines.packsampling (one TPE fit per pack, issue 26): set on the study view "
        "HyperbandPruner passes samplers (_BracketStudy): one fit per bracket",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialIntermediateValueModel",
        "hpsearch.storage.batch.write_intermediate_values (issue 23): a pack epoch's values of every member "
        "in ONE transaction of a constant number of statements, in Optuna's table with its inf / NaN "
        "encoding (intermediate_value_to_stored_repr); the public set_trial_intermediate_value commits "
        "once per trial",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialHeartbeatModel",
        "hpsearch.storage.batch.beat_and_check (issue 23): the heartbeats of a pack's trials in one "
        "transaction, in the table record_heartbeat writes (the public call commits once per trial); "
        "running_without_heartbeat: the RUNNING trials with no row there, which _get_stale_trial_ids skips",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialModel",
        "hpsearch.storage.batch (issue 23): the states of a pack's trials read in one query inside the "
        "batched write and the batched heartbeat (not one get_trial per member)",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialModel._datetime_complete_utc",
        "hpsearch.storage.batch.finish_trials (issues 23, 26): the completion time of a pack's ending "
        "members, written in the column set_trial_state_values writes (UTC; the public property converts)",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialValueModel",
        "hpsearch.storage.batch.finish_trials (issues 23, 26): the values of a pack's ending members in one "
        "transaction, with Optuna's inf encoding (value_to_stored_repr); tell commits once per trial",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.StudyModel",
        "hpsearch.storage.batch.create_trials (issues 23, 26): the study's row locked before a pack's "
        "trials are created, as RDBStorage._create_new_trial locks it (consecutive numbers)",
    ),
    PrivateHook(
        "optuna", "optuna.study.Study._thread_local",
        "hpsearch.execution.drafts.resync: its cached_all_trials dropped, as ask and tell drop it, when a "
        "pack's trials are drafted and told in batches (samplers read trials through it, use_cache=True)",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialParamModel",
        "hpsearch.storage.batch.create_trials (issues 23, 26): a pack's drafted trials created with their "
        "params in ONE transaction (Optuna's create_new_trial: a transaction, a read back and a query per "
        "param, per trial)",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialSystemAttributeModel",
        "hpsearch.storage.batch.create_trials: a template's system attributes, as create_new_trial writes them",
    ),
    PrivateHook(
        "optuna", "optuna.storages._rdb.models.TrialUserAttributeModel",
        "hpsearch.storage.batch.write_user_attrs (issue 23): the attributes a trial is recorded with in one "
        "transaction, in the table set_trial_user_attr writes (JSON); the public call commits once per key",
    ),
    PrivateHook(
        "optuna", "optuna.trial.Trial._cached_frozen_trial",
        "hpsearch.packing.pack.Reports (issue 23): after the batched write, each member's cached "
        "intermediate values are updated as Trial.report updates them, so should_prune hands the pruner "
        "the values just stored; hpsearch.execution.packed_loop: a pack's ending members' attributes as "
        "created (a re-queued copy's inherited failure) and the trial after_trial is given, without a read,"
        " and a drafted member's stored trial once ended (told together, not read back); "
        "hpsearch.execution.drafts.created_trial sets it from the template, as Trial.__init__ sets it from a read",
    ),
    PrivateHook(
        "optuna", "optuna.trial.Trial._relative_params",
        "hpsearch.execution.drafts.created_trial (issue 26): a drafted trial's Trial built from its template "
        "as Trial.__init__ builds it from a read (relative params not drawn yet), without reading it back",
    ),
    PrivateHook(
        "optuna", "optuna.trial.Trial._fixed_params",
        "hpsearch.execution.drafts.created_trial (issue 26): as Trial.__init__ sets it, from the template's "
        "system attribute fixed_params",
    ),
    PrivateHook(
        "optuna", "optuna.trial.Trial._trial_id",
        "hpsearch.packing.pack.Reports (issue 23): the storage id a member's batched values are "
        "written to (Trial has no public id); hpsearch.execution.drafts.created_trial sets it as Trial.__init__ does",
    ),
)

#: package -> (lowest version declared in pyproject.toml, highest version the hooks were checked on).
SUPPORTED: dict[str, tuple[str, str]] = {
    "scikit-learn": ("1.6", "1.9"),
    "scikeras": ("0.13", "0.13"),
    "keras": ("3.8", "3.15"),
    "optuna": ("5.0", "5.1"),
}
