"""Worker processes on one shared study: planning (GPUs, environment), the worker entry and the
launcher of ``run --workers N``. The trial loop they run is :mod:`hpsearch.execution.loop`.

May import: every package below it, up to :mod:`hpsearch.results`.
"""
