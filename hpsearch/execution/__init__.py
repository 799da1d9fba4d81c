"""The one trial loop that one process and N workers share: ask / heartbeat / run / tell
(:mod:`.loop`, :mod:`.packed_loop`), signals and heartbeats (:mod:`.control`), the budget counted
in storage (:mod:`.budget`), re-queueing (:mod:`.requeue`), the stop rules (:mod:`.stoprules`)
and the trial callbacks called after each finished trial (:mod:`.callbacks`).

May import: the kernel, spec, data, storage, models, trials, packing.
"""
