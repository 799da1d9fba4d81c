"""What to try next, never how to train: the engine protocol and lookup (:mod:`.base`), the Optuna
engine and its samplers / pruners (:mod:`.optuna`, :mod:`.samplers`), the scikit-learn engines
(:mod:`.sklearn`, :mod:`.halving`, :mod:`.multiscore`), warm starts and enqueued trials
(:mod:`.warmstart`) and the ensemble refit after a search (:mod:`.ensemble_refit`). Found through
:data:`hpsearch.registry.ENGINES`.

May import: the kernel, spec, data, storage, models, trials, packing, execution.
"""
