"""Trial callbacks referenced from study files by the tracking tests ("trk_user_callbacks:<name>"),
and their small helpers."""

import socket

SEEN: list[tuple[int, str, dict]] = []


def record(study, trial) -> None:
    """Remember each finished trial: its number, state and history."""
    SEEN.append((trial.number, trial.state.name, dict(trial.user_attrs.get("history") or {})))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Messages:
    """An observer that keeps the run's lines."""

    total = None
    label = ""
    direction = "maximize"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def begin(self, done, best) -> None:
        pass

    def trial_done(self, number, state, value, detail="") -> None:
        pass

    def message(self, text: str) -> None:
        self.lines.append(text)

    def end(self) -> None:
        pass
