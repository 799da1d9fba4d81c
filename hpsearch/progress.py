"""Progress display for long searches: candidates done, best so far, elapsed (rich, on stderr)."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

__all__ = ["SearchProgress"]


class SearchProgress:
    """A progress bar when stderr is a terminal; otherwise one line per finished trial (for logs)."""

    def __init__(self, total: Optional[int], label: str, enabled: bool = True, direction: str = "maximize") -> None:
        self.total = total
        self.label = label
        self.enabled = enabled
        self.direction = direction
        self.done = 0
        self.best: Optional[float] = None
        self.start = time.monotonic()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> "SearchProgress":
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("best {task.fields[best]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=self.total, best="-")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def skip(self, n: int, best: Optional[float] = None) -> None:
        """Account for trials finished in an earlier run (resume)."""
        self.done += n
        if best is not None:
            self._update_best(best)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, best=self._best_text())

    def _update_best(self, value: Optional[float]) -> None:
        if value is None or value != value:
            return
        if self.best is None or (value > self.best if self.direction == "maximize" else value < self.best):
            self.best = value

    def _best_text(self) -> str:
        return "-" if self.best is None else f"{self.best:.4f}"

    def trial_done(self, number: int, state: str, value: Optional[float], detail: str = "") -> None:
        self.done += 1
        self._update_best(value if state == "COMPLETE" else None)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, best=self._best_text())
        elif self.enabled:
            elapsed = time.monotonic() - self.start
            total = f"/{self.total}" if self.total else ""
            val = "-" if value is None else f"{value:.4f}"
            print(
                f"[{self.label}] trial {number} {state} value={val} ({self.done}{total} done,"
                f" best {self._best_text()}, {elapsed:.0f}s){' ' + detail if detail else ''}",
                file=sys.stderr, flush=True,
            )
