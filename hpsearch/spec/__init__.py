"""The study file's shape: the pydantic schema (:mod:`.config`), the bounded YAML reader
(:mod:`.studyfile`), the one search space with its three conversions (:mod:`.space`) and
conditional parameters (:mod:`.conditions`).

May import: the kernel (errors, registry, records, metrics). Nothing here trains or stores.
"""
