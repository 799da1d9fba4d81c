"""One trial: the run context every engine and loop shares and the record of a finished candidate
(:mod:`.context`), the single-trial runner (:mod:`.runner`: fit, early stopping, pruning reports,
its stored model), the one early-stopping rule of every engine (:mod:`.stopping`), a trial's seed
(:mod:`.seeds`), the Keras callbacks it uses (:mod:`.callbacks`) and ``search.constraints``
(:mod:`.constraints`).

May import: the kernel, spec, data, storage, models.
"""
