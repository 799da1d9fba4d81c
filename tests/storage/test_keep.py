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


def test_the_keep_bar_decides_as_the_rule_does_and_reads_only_when_a_trial_can_rank():
    """KeepBar (one process's keep rule) against finishing_keepers on a fresh read, over a seeded
    study of 400 trials finishing in random groups, ties and out of order (values on a coarse grid):
    the same keepers and lead every time, and late in the study few reads (none skipped at keep 0:
    the lead is the study's best, not a stored model's)."""
    import random

    from hpsearch.storage.keep import KeepBar

    for direction, keep in (("maximize", 1), ("maximize", 3), ("minimize", 2), ("maximize", 0)):
        rnd = random.Random(f"{direction}{keep}")
        trials: list[SimpleNamespace] = []
        bar, reads, groups = KeepBar(direction, keep), [], 0
        numbers = list(range(400))
        rnd.shuffle(numbers)  # trials finish out of number order
        while numbers:
            size = rnd.randint(1, 6)
            group, numbers, groups = numbers[:size], numbers[size:], groups + 1
            finishing = [(round(rnd.random(), 2), n) for n in group]
            expect = finishing_keepers(trials, direction, keep, finishing)
            got = bar.keepers(lambda trials=trials, reads=reads: reads.append(len(trials)) or trials, finishing)
            assert got == expect, (direction, keep, finishing)
            for i, (value, number) in enumerate(finishing):
                trials.append(_trial(number, value, stored=i in expect[0]))
        late = sum(r >= 300 for r in reads)
        if keep:
            assert late <= 6, (direction, keep, late)  # ~30 groups end after trial 300: most skip the read
        else:
            assert len(reads) == groups
