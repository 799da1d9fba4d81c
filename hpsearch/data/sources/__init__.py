"""Data sources, found by scheme or suffix through :data:`hpsearch.registry.SOURCES`: the source
protocol and lookup (:mod:`.base`), tables and arrays (:mod:`.tables`), image folders
(:mod:`.images`) and Keras datasets (:mod:`.kerasdata`). A source decides itself whether it
streams (:meth:`.base.DataSource.streams`).

May import: the kernel and :mod:`hpsearch.spec`.
"""
