"""The one keep rule (hpsearch.storage.keep.finishing_keepers) that the one-trial runner and the
packed runner share: a finishing trial's model is stored when it ranks in the best K stored models
(ties: the lower trial number), and the curve goes to the trial that leads the study."""

from __future__ import annotations

from types import SimpleNamespace

from hpsearch.records import TRIAL
from hpsearch.storage.keep import finishing_keepers


def _trial(number: int, value: float, stored: bool = True) -> SimpleNamespace:
    return SimpleNamespace(number=number, values=[value], state=SimpleNamespace(name="COMPLETE"),
                           user_attrs={TRIAL.MODEL_ARTIFACT: f"m{number}"} if stored else {})


def test_one_finishing_trial_is_kept_only_inside_the_best_k():
    done = [_trial(0, 0.9), _trial(1, 0.8), _trial(2, 0.7, stored=False)]
    assert finishing_keepers(done, "maximize", 2, [(0.85, 5)]) == ({0}, None)  # second: kept, not the lead
    assert finishing_keepers(done, "maximize", 2, [(0.8, 5)]) == (set(), None)  # tied with 1, later number: out
    assert finishing_keepers(done, "maximize", 2, [(0.95, 5)]) == ({0}, 0)  # the new best
    assert finishing_keepers([], "minimize", 1, [(3.0, 0)]) == ({0}, 0)  # a study's first trial


def test_tied_pack_members_are_placed_by_trial_number_whatever_order_they_finish_in():
    done = [_trial(7, 0.5)]  # stored already, tied, a later number than the pack's members
    keep, lead = finishing_keepers(done, "maximize", 2, [(0.5, 6), (0.5, 4), (0.5, 5)])
    assert keep == {1, 2} and lead == 1  # trials 4 and 5 rank before 6 and 7; 4 leads the study
