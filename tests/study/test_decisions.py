"""No silent choices (issue 20 item 6): every automatic decision is one line in the run's output and
an entry of the study attribute ``decisions``: the pack size and why, table columns, the CNN's
convolutions, streamed or in memory."""

from __future__ import annotations

import optuna
from data_fixtures import messy_frame, write_image_folder

from hpsearch.records import STUDY
from hpsearch.study.run import prepare_context, run_study
from hpsearch.study.validate import parse_study_config


class Lines:
    total, label, direction = None, "", "maximize"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def begin(self, done, best):
        pass

    def trial_done(self, number, state, value, detail=""):
        pass

    def message(self, text):
        self.lines.append(text)

    def end(self):
        pass


def _cfg(name: str, tmp_path, **sections):
    d = {"name": name, "data": {"source": "sklearn:iris", "split": {"valid": 0.25, "test": 0.2, "seed": 0}},
         "model": {"builder": "mlp", "fixed": {"optimizer": "adam"}},
         "space": {"n_neurons": {"int": [4, 12]}}, "train": {"epochs": 2, "batch_size": 16},
         "search": {"engine": "optuna", "n_trials": 4, "seed": 0, "pruner": "none"}}
    for k, v in sections.items():
        d[k] = v if k in ("space", "model") else {**d.get(k, {}), **v}
    return parse_study_config(d, base_dir=str(tmp_path))


def test_the_pack_decision_is_said_and_stored_for_each_outcome(tmp_path, sqlite_url):
    art = str(tmp_path / "art")
    seen = {}
    for name, train, search in [("tiny", {}, {}), ("packed", {}, {"n_trials": 8}), ("asked", {"pack": 1}, {})]:
        obs = Lines()
        run_study(_cfg(name, tmp_path, train=train, search=search), storage=sqlite_url, artifacts=art, observer=obs)
        pack = [line for line in obs.lines if "train.pack" in line]
        assert len(pack) == 1, obs.lines
        stored = optuna.load_study(study_name=name, storage=sqlite_url).user_attrs[STUDY.DECISIONS]["pack"]
        assert stored["line"] in pack[0]
        seen[name] = (stored["value"], pack[0])
    assert seen["tiny"][0] == 1 and "a budget of 4 trials is under two packs of 4" in seen["tiny"][1]
    assert seen["packed"][0] == 8 and "train.pack auto -> 8" in seen["packed"][1]
    assert seen["asked"] == (1, "hpsearch: train.pack 1: one trial per model")


def test_table_columns_image_memory_and_cnn_convolutions_are_said_and_stored(tmp_path, sqlite_url):
    csv = tmp_path / "messy.csv"
    messy_frame(60).to_csv(csv, index=False)
    obs = Lines()
    ctx = prepare_context(_cfg("table", tmp_path, data={"source": "messy.csv", "target": "label"}), storage=sqlite_url,
                          artifacts=str(tmp_path / "art"), observer=obs)
    decided = ctx.study.user_attrs[STUDY.DECISIONS]
    line = next(x for x in obs.lines if "columns used" in x)
    assert decided["data.columns"]["line"] in line and "one-hot" in line and "numeric" in line

    write_image_folder(tmp_path / "imgs")
    obs = Lines()
    cfg = _cfg("images", tmp_path, data={"source": "imgs/", "in_memory": "auto", "skip_bad_files": True},
               model={"builder": "cnn", "fixed": {"n_blocks": 1, "filters": 4}}, space={"dense_units": {"int": [4, 8]}})
    ctx = prepare_context(cfg, storage=sqlite_url, artifacts=str(tmp_path / "art"), observer=obs)
    decided = ctx.study.user_attrs[STUDY.DECISIONS]
    assert decided["data.in_memory"]["value"] is True and "data.in_memory auto -> in memory" in " ".join(obs.lines)
    assert decided["model.conv"]["value"] == "2d" and "model conv auto -> 2d" in " ".join(obs.lines)
    files = decided["data.source.files"]  # how the folder was hashed for the snapshot: said and stored
    assert files["value"]["fetched"] is None and files["value"]["hashed"] + files["value"]["reused"] == 25
    assert files["line"] in " ".join(obs.lines) and "files hashed" in files["line"] and "hash index" in files["line"]
