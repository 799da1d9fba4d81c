"""Worker processes on one shared study: planning (GPUs, environment), the worker entry, joining a
study by name with no study file (:mod:`.join`) and the launcher of ``run --workers N``. The trial
loop they run is :mod:`hpsearch.execution.loop`.

May import: every package below it, up to :mod:`hpsearch.results`.
"""
