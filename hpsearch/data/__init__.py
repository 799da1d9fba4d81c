"""A study's data: the splits and per-fold preprocessing (:mod:`.prepare`, :mod:`.preprocess`,
:mod:`.foldstep`), image batches streamed from disk (:mod:`.stream`), and the data sources, one
module per kind (:mod:`.sources`).

May import: the kernel and :mod:`hpsearch.spec`.
"""
