"""The read side of a stored study, data first, files second: test evaluation (:mod:`.evaluation`),
the best model and ``load_best`` (:mod:`.best`), ensembles, export, prediction, uncertainty, the
report, the dashboard and output formats.

May import: every package below it, up to :mod:`hpsearch.study`.
"""
