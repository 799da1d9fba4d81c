"""Experiment tracking and trial callbacks: MLflow (:mod:`.mlflowlog`), TensorBoard with the HParams
plugin (:mod:`.tblog`), ``search.callbacks`` and ``run_study(callbacks=..., keras_callbacks=...)``
(:mod:`.hooks`), and ``hpsearch export-tracking`` (:mod:`.export`).

Every tracker is a trial callback ``f(study, frozen_trial)`` that the one trial loop and the
scikit-learn engines call after each finished trial (:mod:`hpsearch.execution.callbacks`), so it
works in one process and in every worker alike. A tracker that is down never fails a study: each
lost write is one line, and ``export-tracking`` fills it in later.

May import: every package below it (kernel, spec, data, storage, models, trials, packing,
execution, engines); it sits below study, which wires it in. It uses trials and storage.
"""
