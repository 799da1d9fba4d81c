"""The bad-input helpers of the CLI tests (tests/cli/test_cli_errors.py), shared with the study
tests that drive the CLI the same way: write a study file, run the CLI in-process, assert one line
on stderr with exit 2 and nothing written."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from hpsearch.cli import main

SECRET = "s3cr3tPw0rd"
PG_UNREACHABLE = f"postgresql+psycopg://hps:{SECRET}@127.0.0.1:1/hpsearch"

#: an imperative that tells the user what to do (every user-error line must carry one)
ACTION = re.compile(
    r"\b(use|give|add|remove|make|check|set|fix|raise|drop|lower|encode|impute|start|create|write|"
    r"name|declare|put|save|choose|pass|merge|point|rename|reshape|leave|convert|change|replace)\b",
    re.IGNORECASE,
)

BASE: dict[str, Any] = {
    "name": "bad-input",
    "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
    "model": {"builder": "mlp", "fixed": {"activation": "relu"}},
    "space": {"n_neurons": {"int": [4, 8]}, "learning_rate": {"float": [1.0e-3, 1.0e-1], "log": True}},
    "train": {"epochs": 2, "batch_size": 16},
    "search": {"engine": "optuna", "sampler": "random", "pruner": "none", "n_trials": 2, "metric": "accuracy"},
}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def write_study(folder: Path, edit: Callable[[dict], Any] | None = None, name: str = "study.yaml") -> Path:
    cfg = copy.deepcopy(BASE)
    if edit is not None:
        edit(cfg)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def csv_study(folder: Path, text: str, edit: Callable[[dict], Any] | None = None, fname: str = "data.csv") -> Path:
    (folder / fname).write_text(text, encoding="utf-8")

    def _edit(c: dict) -> None:
        c["data"] = {"source": fname, "target": "y", "split": {"valid": 0.2, "test": 0.2, "seed": 0}}
        if edit is not None:
            edit(c)

    return write_study(folder, _edit)


def table(n: int = 30, n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.arange(n) % n_classes
    return X, y


def csv_text(X: np.ndarray, y: np.ndarray, cols: tuple[str, ...] = ("a", "b")) -> str:
    lines = [",".join([*cols, "y"])]
    for row, t in zip(X, y, strict=True):
        cells = (repr(float(v)) if isinstance(v, (float, np.floating)) else str(v) for v in row)
        lines.append(",".join([*cells, str(t)]))
    return "\n".join(lines) + "\n"


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def set_(c: dict, dotted: str, value: Any) -> None:
    node = c
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def del_(c: dict, dotted: str) -> None:
    node = c
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]


def assert_user_error(rc: int, capsys, names: list[str], *, folder: Path, before: set[str],
                      db: Path | None = None, secret: str | None = SECRET) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out and "Traceback" not in err, err
    assert rc == 2, (rc, out, err)
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr is not exactly one line: {err!r}"
    line = err.strip()
    assert line.startswith("hpsearch: error: "), line
    for n in names:
        assert n in line, f"{n!r} not named in: {line}"
    advice = line[len("hpsearch: error: "):].replace(str(folder), "<dir>")
    assert ACTION.search(advice), f"no advice on what to do in: {line}"
    if secret:
        assert secret not in out + err
    # nothing written
    assert snapshot(folder) == before, f"files written: {snapshot(folder) - before}"
    if db is not None and db.exists():
        assert optuna.get_all_study_summaries(storage=f"sqlite:///{db}") == []
    return line


def run_cli(kind: str, study: Path | str, folder: Path, extra: list[str] = ()) -> tuple[int, Path]:
    db = folder / "x.db"
    if kind == "run":
        argv = ["run", str(study), "--storage", f"sqlite:///{db}", "--no-progress", *extra]
    else:
        argv = ["validate", str(study), *extra]
    return main(argv), db
