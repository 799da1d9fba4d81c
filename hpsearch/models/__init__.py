"""Keras models from a plain dict of parameters: the builder protocol and routing
(:mod:`.builders`, :mod:`.paramspec`), the built-in :mod:`.mlp` and :mod:`.cnn`, learning-rate
schedules, frozen and transferred layers (:mod:`.schedules`, :mod:`.freeze`, :mod:`.transfer`),
the scikeras-compatible estimators (:mod:`.estimators`) and scoring a model on data
(:mod:`.scoring`).

May import: the kernel, :mod:`hpsearch.spec`, :mod:`hpsearch.data`, :mod:`hpsearch.storage`.
"""
