"""An observer that keeps the one-line messages a run says (decisions, notes), for tests to assert."""

from __future__ import annotations

from hpsearch.trials.context import NullObserver


class Lines(NullObserver):
    """Every ``message`` of a run, in order, in :attr:`lines`."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)
