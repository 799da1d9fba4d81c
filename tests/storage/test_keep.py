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


class _Counted(SimpleNamespace):
    """A trial that counts how often its state is looked at."""

    looks = 0

    def __getattribute__(self, name: str):
        if name == "state":
            _Counted.looks += 1
        return super().__getattribute__(name)


def test_the_keep_scan_reads_the_finished_prefix_once_and_agrees_with_a_full_scan():
    """At every pack end the keep rule needs the study's best and its stored models: a KeepScan kept
    from end to end scans the study's finished prefix once (before: every trial at every end, ~12 %
    of a 10,000-trial study's overhead), with the same verdicts as a scan from scratch."""
    import random

    from hpsearch.storage.keep import KeepScan

    rng = random.Random(0)
    trials: list[SimpleNamespace] = []
    scan = KeepScan("maximize")
    for end in range(40):
        for i, t in enumerate(trials):  # running ones finish (all but the last 15 by now), new ones start
            if t.state.name == "RUNNING" and (rng.random() < 0.6 or i < len(trials) - 15):
                t.state = SimpleNamespace(name=rng.choice(["COMPLETE", "COMPLETE", "PRUNED", "FAIL"]))
                t.values = [round(rng.random(), 2)] if t.state.name == "COMPLETE" else None
                t.user_attrs = {TRIAL.MODEL_ARTIFACT: "m"} if rng.random() < 0.3 else {}
        trials += [_Counted(number=len(trials) + i, values=None, state=SimpleNamespace(name="RUNNING"),
                            user_attrs={}) for i in range(rng.randint(1, 6))]
        finishing = [(round(rng.random(), 2), 10_000 + end)]
        kept = finishing_keepers(trials, "maximize", 3, finishing, scan)
        assert kept == finishing_keepers(trials, "maximize", 3, finishing)  # a scan from scratch
    _Counted.looks = 0
    finishing_keepers(trials, "maximize", 3, [(0.5, 99_999)], scan)
    assert _Counted.looks < len(trials) / 4, (_Counted.looks, len(trials))  # the prefix is not read again
