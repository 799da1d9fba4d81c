"""Worker processes on one shared study: planning (GPUs, environment), the worker entry and the
launcher of ``run --workers N``. The trial loop they run is :mod:`hpsearch.engines.loop`."""
