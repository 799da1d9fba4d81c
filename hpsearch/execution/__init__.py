"""The one trial loop that one process and N workers share: ask / heartbeat / run / tell
(:mod:`.loop`, :mod:`.packed_loop`), signals and heartbeats (:mod:`.control`), the budget counted
in storage (:mod:`.budget`), re-queueing (:mod:`.requeue`) and the stop rules (:mod:`.stoprules`).

May import: the kernel, spec, data, storage, models, trials, packing.
"""
