"""``tracking: {tensorboard: DIR}``: each trial's scalars in DIR/<study>/trial-NNNN/ with the HParams
plugin's session summary, packed members included, and the study's HParams experiment, read back
with TensorBoard's own event reader; and the report of the same study (its importance evaluator
named, the best trial's full history shown)."""

from __future__ import annotations

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata
from tensorboard.util import tensor_util

from hpsearch.records import TRIAL
from hpsearch.study.run import run_study


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    from hpsearch.study.validate import parse_study_config

    tmp = tmp_path_factory.mktemp("tb")
    cfg = parse_study_config({
        "name": "tbs", "data": {"source": "sklearn:iris", "split": {"valid": 0.2, "test": 0.2, "seed": 0}},
        "space": {"n_neurons": {"int": [4, 16]}, "learning_rate": {"float": [1e-3, 1e-1], "log": True}},
        "train": {"epochs": 2, "batch_size": 16, "pack": 4}, "search": {"n_trials": 4, "seed": 0, "pruner": "none"},
        "tracking": {"tensorboard": str(tmp / "tb")}})
    url = f"sqlite:///{tmp}/s.db"
    run_study(cfg, storage=url, artifacts=str(tmp / "art"))
    return optuna.load_study(study_name="tbs", storage=url), tmp, url


def _curve(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def test_each_packed_member_has_its_scalars_and_hparams_session(packed):
    study, tmp, _ = packed
    assert {t.user_attrs[TRIAL.PACK_SIZE] for t in study.trials} == {4}
    for t in study.trials:
        assert list(t.user_attrs[TRIAL.HISTORY]) == ["val_accuracy"]  # what a pack measures per member
        acc = EventAccumulator(str(tmp / "tb" / "tbs" / f"trial-{t.number:04d}")).Reload()
        start = metadata.parse_session_start_info_plugin_data(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        assert start.group_name == f"tbs/{t.number}"
        assert start.hparams["n_neurons"].number_value == t.params["n_neurons"]
        assert start.hparams["learning_rate"].number_value == pytest.approx(t.params["learning_rate"])
        curve = _curve(acc, "val_accuracy")
        assert [s for s, _ in curve] == [0, 1]
        assert [v for _, v in curve] == pytest.approx(t.user_attrs[TRIAL.HISTORY]["val_accuracy"], rel=1e-6)
        assert [s for s, _ in _curve(acc, "value")] == [1]
        assert _curve(acc, "value")[0][1] == pytest.approx(t.value, rel=1e-6)


def test_the_study_folder_holds_the_hparams_experiment(packed):
    _, tmp, _ = packed
    acc = EventAccumulator(str(tmp / "tb" / "tbs")).Reload()
    exp = metadata.parse_experiment_plugin_data(acc.PluginTagToContent("hparams")["_hparams_/experiment"])
    domains = {h.name: h for h in exp.hparam_infos}
    assert set(domains) == {"n_neurons", "learning_rate"}
    assert (domains["learning_rate"].domain_interval.min_value, domains["learning_rate"].domain_interval.max_value) \
        == pytest.approx((1e-3, 1e-1))
    assert [m.name.tag for m in exp.metric_infos] == ["val_accuracy", "value", "loss", "val_loss"]


def test_export_tracking_writes_tensorboard_after_the_fact(packed, tmp_path, capsys):
    import json

    from hpsearch.cli import main

    _, _, url = packed
    assert main(["export-tracking", "tbs", "--storage", url, "--tensorboard", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensorboard"]["logged"] == 4
    assert sorted(p.name for p in (tmp_path / "tbs").iterdir() if p.is_dir()) == [f"trial-000{i}" for i in range(4)]


def test_the_report_names_its_importance_evaluator_and_shows_the_history(packed, tmp_path):
    from hpsearch.results.report import write_report

    _, tmp, url = packed
    write_report("tbs", str(tmp_path / "rep"), storage=url, artifacts=str(tmp / "art"))
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "PED-ANOVA importance of each parameter" in page and "fANOVA" not in page
    assert "History of the best trial" in page and "val_accuracy" in page
