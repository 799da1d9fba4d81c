"""Searches started from Python over in-memory arrays, stored like studies: ``GridSearchCV``,
``RandomizedSearchCV``, ``HalvingRandomSearchCV`` (scikit-learn's signatures plus ``storage=``,
``study_name=``, ``artifacts=``, ``pack=``) and ``OptunaSearchCV`` (:mod:`.classes`); the translation
of their arguments into a study (:mod:`.translate`); ``cv_results_`` read back from the study
(:mod:`.cvresults`).

May import: :mod:`hpsearch.results`, :mod:`hpsearch.study` and everything below them.
"""

from hpsearch.search.classes import GridSearchCV, HalvingRandomSearchCV, OptunaSearchCV, RandomizedSearchCV

__all__ = ["GridSearchCV", "HalvingRandomSearchCV", "OptunaSearchCV", "RandomizedSearchCV"]
