"""MLflow: one run per trial (parameters, every per-epoch Keras metric with its step, the trial's
value(s), state, trial number and study as tags), nested under one parent run per study, in an
experiment named after the study.

Written with :class:`mlflow.MlflowClient` (no fluent, thread-local run state: a run nests under its
parent by the ``mlflow.parentRunId`` tag, which works from threads and worker processes alike). The
parent run's id is stored on the study (``STUDY.MLFLOW_RUN``: tracking URI -> run id), so every
worker nests under the same one; without it the parent is found in MLflow by its tags, so
``export-tracking`` can fill in what a run that could not reach MLflow left out.

A tracker that is down never fails the study: each lost write is one line and the trials go on.
MLflow's HTTP client retries 7 times with back-off by default (minutes per lost write): unless the
environment sets them, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` is 1, ``..._BACKOFF_FACTOR`` 1 and
``..._TIMEOUT`` 10 s here. Against a server, MLflow prints each finished run's URL on stdout (the
console's, and ``--json``'s) and reads the run back to do it: ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``
is set unless the environment says otherwise.

``tracking.log_models: true`` also logs the trial's stored model (``model/model.keras`` and
``model/preprocess.json``, copied from hpsearch's artifact store) in its run: every trial whose model
hpsearch stores, i.e. the ones the keep-best-K rule keeps when they finish (packed members too); the
study's best model goes to the best trial's run at the end when that run has none (a scikit-learn
engine refits it). A model that ``search.keep_models`` later deletes stays in MLflow.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from hpsearch.records import STUDY, TRIAL, clean_attr
from hpsearch.storage import redact_url
from hpsearch.storage.artifacts import MODEL_FILE, PREPROCESS_FILE
from hpsearch.tracking.base import Tracker

__all__ = ["MlflowTracker", "STATUS", "TAG_MODEL", "MODEL_DIR", "trial_metrics"]

#: Optuna trial state -> MLflow run status
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_BATCH = 1000  # MLflow's log_batch takes at most 1000 metrics (and 100 params) per call
_TAG_TRIAL, _TAG_STUDY, _TAG_KIND = "hpsearch.trial_number", "hpsearch.study", "hpsearch.kind"
#: the run tag of a trial whose model was logged (its path in the run's artifacts)
TAG_MODEL, MODEL_DIR = "hpsearch.model", "model"


def _ms(when: Any) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


def trial_metrics(trial: Any, objectives: list[str] | None) -> list[tuple[str, float, int]]:
    """(key, value, step) of a trial: every Keras metric per epoch (``TRIAL.HISTORY``; the
    intermediate values when it has none), then its value(s) at the last step."""
    history = trial.user_attrs.get(TRIAL.HISTORY) or {}
    if not history and trial.intermediate_values:
        history = {"intermediate_value": [trial.intermediate_values[k] for k in sorted(trial.intermediate_values)]}
    out = [(str(k), float(v), step) for k, vals in history.items() for step, v in enumerate(vals or [])
           if v is not None and math.isfinite(v)]
    last = max((s for _, _, s in out), default=0)
    values = trial.values if trial.state.name == "COMPLETE" and trial.values else []
    names = objectives if objectives and len(objectives) == len(values) > 1 else ["value"]
    out += [(n, float(v), last) for n, v in zip(names, values) if v is not None and math.isfinite(v)]
    return out


class MlflowTracker(Tracker):
    """The trial callback of ``tracking: {mlflow: URI}``."""

    def __init__(self, uri: str, study: Any, say: Callable[[str], None], announce: bool = True,
                 models: Any = None) -> None:
        """``models``: hpsearch's artifact store, to log each trial's stored model (None: no models)."""
        self.uri, self.say, self.models = uri, say, models
        self.shown = redact_url(uri)
        self.client: Any = None
        self.experiment: str | None = None
        self.parent: str | None = None
        for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                           ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"), ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")):
            os.environ.setdefault(key, value)
        if self._open(study) and announce:
            kept = "" if models is None else "; each kept trial model as an artifact of its run (tracking.log_models)"
            say(f"hpsearch: tracking: MLflow {self.shown}, experiment {study.study_name!r}, parent run {self.parent}"
                + kept)

    def _lost(self, what: str, exc: BaseException, study: Any) -> None:
        text = " ".join(str(exc).split())[:160]
        self.say(f"hpsearch: tracking: MLflow {self.shown}: {what} not logged ({type(exc).__name__}: {text});"
                 f" `hpsearch export-tracking {study.study_name} --mlflow URI` fills it in later")

    def _open(self, study: Any) -> bool:
        """The experiment and the study's parent run (found or created); False (said) when MLflow is down."""
        if self.parent is not None:
            return True
        try:
            self.experiment, self.parent = self._parent(study)
        except Exception as exc:  # noqa: BLE001 - a tracker that is down never fails the study
            self._lost("the study's parent run", exc, study)
            return False
        return True

    def _parent(self, study: Any) -> tuple[str, str]:
        from mlflow import MlflowClient

        # its "Creating initial MLflow database tables" lines go to stdout: the console's (and --json's)
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        if self.client is None:
            self.client = MlflowClient(tracking_uri=self.uri)
        c, name = self.client, study.study_name
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            exp_id = exp.experiment_id
        else:  # a local store keeps its artifacts beside the database, not in the working directory
            local = self.uri.startswith("sqlite:///") and self.uri[10:] not in ("", ":memory:")
            where = f"{os.path.dirname(os.path.abspath(self.uri[10:]))}/mlartifacts/{name}" if local else None
            exp_id = c.create_experiment(name, artifact_location=where)
        stored = dict(study.user_attrs.get(STUDY.MLFLOW_RUN) or {})
        run_id = stored.get(self.shown)
        if run_id is None:
            found = c.search_runs([exp_id], filter_string=f"tags.{_TAG_KIND} = 'study'", max_results=1,
                                  order_by=["attributes.start_time ASC"])
            run_id = found[0].info.run_id if found else c.create_run(
                exp_id, run_name=name, tags={_TAG_KIND: "study", _TAG_STUDY: name}).info.run_id
            study.set_user_attr(STUDY.MLFLOW_RUN, {**stored, self.shown: run_id})
            study.set_user_attr(STUDY.MLFLOW_EXPERIMENT, exp_id)
        return exp_id, run_id

    def logged(self) -> dict[int, Any]:
        """Trial number -> its whole run under the study's parent (for export-tracking); a run left
        RUNNING (the tracker went down while writing it) is deleted, to be written again."""
        runs = self.client.search_runs([self.experiment], filter_string=f"tags.mlflow.parentRunId = '{self.parent}'",
                                       max_results=50000)
        for r in runs:
            if r.info.status == "RUNNING":
                self.client.delete_run(r.info.run_id)
        return {int(r.data.tags[_TAG_TRIAL]): r for r in runs if _TAG_TRIAL in r.data.tags
                and r.info.status != "RUNNING"}

    def log_model(self, run_id: str, model_id: Any, preprocess_id: Any) -> bool:
        """Copy a stored model and its preprocessing from hpsearch's artifact store into the run's
        ``model/`` artifacts and tag the run; False when there is none to copy (not kept, or deleted
        by ``search.keep_models`` in the meantime)."""
        from optuna.artifacts import download_artifact
        from optuna.artifacts.exceptions import ArtifactNotFound

        if self.models is None or not model_id or not preprocess_id:
            return False
        with tempfile.TemporaryDirectory(prefix="hpsearch-mlflow-") as tmp:
            try:
                for aid, name in ((model_id, MODEL_FILE), (preprocess_id, PREPROCESS_FILE)):
                    download_artifact(artifact_store=self.models, file_path=os.path.join(tmp, name), artifact_id=aid)
            except ArtifactNotFound:
                return False
            self.client.log_artifacts(run_id, tmp, artifact_path=MODEL_DIR)
        self.client.set_tag(run_id, TAG_MODEL, f"{MODEL_DIR}/{MODEL_FILE}")
        return True

    def __call__(self, study: Any, trial: Any) -> None:
        if not self._open(study):
            return
        try:
            self.log_trial(study, trial)
        except Exception as exc:  # noqa: BLE001 - a tracker that is down never fails the study
            self._lost(f"trial {trial.number}", exc, study)

    def log_trial(self, study: Any, trial: Any) -> str:
        """One finished trial as one finished child run; returns its run id."""
        from mlflow.entities import Metric, Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        c, attrs = self.client, trial.user_attrs
        tags = {MLFLOW_PARENT_RUN_ID: self.parent, _TAG_TRIAL: str(trial.number), _TAG_STUDY: study.study_name,
                _TAG_KIND: "trial", "hpsearch.state": trial.state.name}
        for key in (TRIAL.FAILURE, TRIAL.PRUNED_AT, TRIAL.WORKER, TRIAL.ENGINE, TRIAL.PACK_SIZE, TRIAL.EPOCHS):
            if attrs.get(key) is not None:
                tags[f"hpsearch.{key}"] = str(attrs[key])[:5000]
        run = c.create_run(self.experiment, start_time=_ms(trial.datetime_start), tags=tags,
                           run_name=f"trial-{trial.number}")
        rid = run.info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, s) for k, v, s in trial_metrics(trial, study.user_attrs.get(STUDY.OBJECTIVES))]
        params = [Param(k, str(clean_attr(v))[:6000]) for k, v in trial.params.items()]
        for i in range(max(math.ceil(len(metrics) / _BATCH), math.ceil(len(params) / 100), 1)):
            c.log_batch(rid, metrics=metrics[i * _BATCH:(i + 1) * _BATCH], params=params[i * 100:(i + 1) * 100])
        if trial.state.name == "COMPLETE":
            self.log_model(rid, attrs.get(TRIAL.MODEL_ARTIFACT), attrs.get(TRIAL.PREPROCESS_ARTIFACT))
        c.set_terminated(rid, STATUS.get(trial.state.name, "FAILED"), end_time=_ms(trial.datetime_complete))
        return str(rid)

    def end_study(self, study: Any) -> None:
        """The parent run gets the best trial and its test scores (and so does the best trial's run)."""
        if not self._open(study):
            return
        from mlflow.entities import Metric, RunTag

        attrs = study.user_attrs
        try:
            now = int(time.time() * 1000)
            test = [Metric(f"test_{k}", float(v), now, 0) for k, v in (attrs.get(STUDY.TEST_METRICS) or {}).items()
                    if v is not None]
            best = attrs.get(STUDY.BEST_TRIAL)
            tags = [RunTag("hpsearch.best_trial", str(best))] if best is not None else []
            self.client.log_batch(self.parent, metrics=test, tags=tags)
            under = f"tags.mlflow.parentRunId = '{self.parent}'"
            was = self.client.search_runs([self.experiment], filter_string=f"{under} and tags.hpsearch.best = 'true'")
            for old in was:  # an earlier run's best (the study went on); its test metrics stay, as logged then
                self.client.delete_tag(old.info.run_id, "hpsearch.best")
            if best is not None:
                runs = self.client.search_runs([self.experiment], max_results=1,
                                               filter_string=f"{under} and tags.{_TAG_TRIAL} = '{best}'")
                if runs:
                    self.client.log_batch(runs[0].info.run_id, metrics=test, tags=[RunTag("hpsearch.best", "true")])
                    if TAG_MODEL not in runs[0].data.tags:  # a refit best model (scikit-learn engines)
                        self.log_model(runs[0].info.run_id, attrs.get(STUDY.BEST_MODEL_ARTIFACT),
                                       attrs.get(STUDY.BEST_PREPROCESS_ARTIFACT))
            self.client.set_terminated(self.parent, "FINISHED")
        except Exception as exc:  # noqa: BLE001 - a tracker that is down never fails the study
            self._lost("the study's result", exc, study)
