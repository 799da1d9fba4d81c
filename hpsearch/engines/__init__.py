"""Search engines behind one protocol (:mod:`hpsearch.engines.base`), found through
:data:`hpsearch.registry.ENGINES`."""
