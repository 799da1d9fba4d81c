"""The budget line of the fault scenarios and the scale benchmark, measured from the stored trials
and a build log (tests/workers/test_faults.py's docstring says what each figure means)::

    budget 6, finished 6, distinct 6, RUNNING 0, run twice 0, lost 0
"""

from __future__ import annotations

import datetime
from collections import Counter

__all__ = ["summary_line", "expected"]


def summary_line(trials: list, builds: list[dict], budget: int, key: str = "tag") -> str:
    """The scenario's one line, from the stored trials and the build log (see the module docstring);
    ``key``: the parameter that names a configuration."""
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    attempts = Counter(t.params.get(key) for t in trials if t.state.name != "WAITING")
    done_at: dict[float, datetime.datetime] = {}
    for t in finished:
        done_at[t.params[key]] = min(t.datetime_complete, done_at.get(t.params[key], t.datetime_complete))
    built = Counter(b["tag"] for b in builds)
    late = {b["tag"] for b in builds if b["tag"] in done_at
            and datetime.datetime.fromtimestamp(b["t"]) > done_at[b["tag"]] + datetime.timedelta(seconds=0.5)}
    finished_tags = Counter(t.params[key] for t in finished)
    twice = {tag for tag, n in built.items() if n > attempts.get(tag, 0)}
    twice |= {tag for tag, n in finished_tags.items() if n > 1} | late
    # a trial interrupted before it was sampled (a pack reserves its trials first) is no configuration
    interrupted = {t.params[key] for t in trials if t.state.name == "FAIL" and key in t.params}
    lost = interrupted - set(finished_tags)
    running = sum(1 for t in trials if t.state.name == "RUNNING")
    return (f"budget {budget}, finished {len(finished)}, distinct {len(finished_tags)}, RUNNING {running}, "
            f"run twice {len(twice)}, lost {len(lost)}")


def expected(budget: int) -> str:
    return f"budget {budget}, finished {budget}, distinct {budget}, RUNNING 0, run twice 0, lost 0"
