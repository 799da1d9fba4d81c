"""A study from file to result: open, check and run it (:mod:`.run`: ``run_study``, ``finalize``),
validate a file before anything is written (:mod:`.validate`), the data snapshot a study records
(:mod:`.snapshot`), and the learning-rate and batch-size finders (:mod:`.lrfind`, :mod:`.batchfind`).

May import: every package below it (kernel, spec, data, storage, models, trials, packing,
execution, engines, tracking).
"""
