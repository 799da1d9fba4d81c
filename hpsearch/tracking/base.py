"""The tracker protocol: a trial callback that also closes the study's record (a module of its own,
so the trackers and the hooks that wire them in import it without an import cycle)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["Tracker"]


class Tracker(ABC):
    """A trial callback that also closes the study's record once the study is finalized."""

    @abstractmethod
    def __call__(self, study: Any, trial: Any) -> None:
        """One finished trial (Optuna's callback signature)."""

    def end_study(self, study: Any) -> None:  # noqa: B027 - an optional hook, a no-op by default
        """The study is finalized (best trial and test scores stored)."""
