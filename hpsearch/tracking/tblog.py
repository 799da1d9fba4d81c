"""TensorBoard: each finished trial's scalars (every per-epoch Keras metric, and its value) in
``DIR/<study>/trial-NNNN/``, with the HParams plugin's session summary (its parameters, its group
``<study>/<number>``), and the study's HParams experiment (every parameter's domain from the search
space, the metrics) in ``DIR/<study>/``: ``tensorboard --logdir DIR/<study>`` shows the HParams table.

Written with tensorboard's own event writer and protos (no TensorFlow summary ops), after each trial
from its stored history, so packed members and scikit-learn candidates are logged like any trial.
One HParams experiment per log folder (the plugin reads the first it finds): open a study's folder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpsearch.records import TRIAL
from hpsearch.tracking.base import Tracker
from hpsearch.tracking.mlflowlog import trial_metrics

__all__ = ["TensorBoardTracker", "trial_dir"]


def trial_dir(root: str | Path, study: str, number: int) -> Path:
    """Where one trial's events go."""
    return Path(root) / study / f"trial-{number:04d}"


def _domain(dist: Any) -> Any:
    """The HParams domain of an Optuna distribution (None: one the plugin cannot show)."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    choices = getattr(dist, "choices", None)
    if choices is not None:
        kinds = {type(c) for c in choices}
        return hp.Discrete(list(choices)) if len(kinds) == 1 and kinds <= {str, int, float, bool} else None
    if type(dist).__name__.startswith("Int"):
        return hp.IntInterval(int(dist.low), int(dist.high))
    return hp.RealInterval(float(dist.low), float(dist.high))


def _hparam_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else str(v)


class TensorBoardTracker(Tracker):
    """The trial callback of ``tracking: {tensorboard: DIR}``."""

    def __init__(self, root: str, study: Any, space: Any, metric: str, say: Callable[[str], None]) -> None:
        self.root, self.say = Path(root), say
        self.folder = self.root / study.study_name
        try:
            self._experiment(space, metric)
        except Exception as exc:  # noqa: BLE001 - a tracker never fails the study
            self._lost("the study's HParams experiment", exc, study)
        else:
            say(f"hpsearch: tracking: TensorBoard {self.folder} (tensorboard --logdir {self.folder})")

    def _lost(self, what: str, exc: BaseException, study: Any) -> None:
        self.say(f"hpsearch: tracking: TensorBoard {self.folder}: {what} not written ({type(exc).__name__}: "
                 f"{' '.join(str(exc).split())[:160]}); `hpsearch export-tracking {study.study_name} --tensorboard"
                 " DIR` writes it later")

    def _experiment(self, space: Any, metric: str) -> None:
        """The HParams experiment, once per study folder (every worker writes the same one)."""
        from tensorboard.plugins.hparams import summary_v2 as hp

        self.folder.mkdir(parents=True, exist_ok=True)
        if any(self.folder.glob("events.out.tfevents.*")):
            return
        dists = space.to_optuna_distributions()
        hparams = [hp.HParam(name, _domain(d)) for name, d in dists.items()]
        tags = dict.fromkeys([f"val_{metric}", "value", "loss", "val_loss"])
        self._write(self.folder, [(0, hp.hparams_config_pb(hparams=hparams, metrics=[hp.Metric(t) for t in tags]))])

    @staticmethod
    def _write(folder: Path, summaries: list[tuple[int, Any]]) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        w = EventFileWriter(str(folder))
        try:
            for step, summary in summaries:
                w.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        finally:
            w.close()

    def __call__(self, study: Any, trial: Any) -> None:
        try:
            self.log_trial(study, trial)
        except Exception as exc:  # noqa: BLE001 - a tracker never fails the study
            self._lost(f"trial {trial.number}", exc, study)

    def log_trial(self, study: Any, trial: Any) -> Path:
        """Write one finished trial's events; returns its folder."""
        from tensorboard.plugins.hparams import summary_v2 as hp
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb

        folder = trial_dir(self.root, study.study_name, trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("events.out.tfevents.*"):  # written again (export-tracking): one copy
            old.unlink()
        params = {k: _hparam_value(v) for k, v in trial.params.items()}
        start = trial.datetime_start.timestamp() if trial.datetime_start else None
        events = [(0, hp.hparams_pb(params, trial_id=f"{study.study_name}/{trial.number}", start_time_secs=start))]
        events += [(step, scalar_pb(key, value)) for key, value, step in trial_metrics(trial, None)
                   if math.isfinite(value)]
        if trial.user_attrs.get(TRIAL.EPOCHS) is not None:
            events.append((0, scalar_pb("epochs_trained", float(trial.user_attrs[TRIAL.EPOCHS]))))
        self._write(folder, events)
        return folder
