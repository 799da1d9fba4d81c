"""A study's data: the splits and per-fold preprocessing (:mod:`.prepare`, :mod:`.preprocess`,
:mod:`.foldstep`), image batches streamed from disk (:mod:`.stream`), and the data sources, one
module per kind (:mod:`.sources`), and the fingerprinted snapshot of a study's data that every
worker trains on (:mod:`.snapshot`).

May import: the kernel and :mod:`hpsearch.spec`.
"""
