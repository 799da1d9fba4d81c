"""Packed trials: K trials of one shape trained as one compiled model. The packed model
(:mod:`.model`, :mod:`.layers`), its training (:mod:`.train`), the packed runner that finishes
each member as an ordinary trial (:mod:`.runner`) and packed cross-validation folds (:mod:`.cv`).
An accelerator under the engines, reaching the single-trial runner through its public seams.

May import: the kernel, spec, data, storage, models, trials.
"""
