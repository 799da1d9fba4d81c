"""Full validation of a study before anything is written: the schema, then cross-section checks.

:mod:`hpsearch.spec.config` checks the shape of a study file; this module checks what needs the other
layers: the search space parses, the engine accepts the study (``Engine.check``: budget, sampler,
finite grid...), the data source accepts ``data:``, the metric fits a declared task, the builder
takes the parameters (and its named choices are known), and ``storage:`` / ``artifacts:`` are
well-formed. Reachability of storage and the data itself are checked later by ``run`` (they may
live on another machine).

Every problem is one :class:`~hpsearch.errors.ConfigError` line ``WHERE: field: problem; fix``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hpsearch.data.fixed import check_fixed_parts
from hpsearch.data.sources.base import source_for
from hpsearch.engines.base import get_engine
from hpsearch.errors import ConfigError, StorageError
from hpsearch.metrics import metric_problem
from hpsearch.models.builders import check_builder_params, resolve_builder
from hpsearch.registry import BUILDERS
from hpsearch.spec.config import StudyConfig, one_line, schema_from_mapping
from hpsearch.spec.studyfile import read_study_yaml
from hpsearch.storage import normalize_storage_url, redact_url
from hpsearch.tracking.hooks import check_tracking

__all__ = ["apply_overrides", "check_study", "load_study_config", "parse_study_config", "study_dir_on_path"]


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Prefix the ConfigError of a check with the file (or study) it concerns."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(one_line(f"{where}: {e}")) from None


def parse_study_config(data: Any, *, where: str = "<study>", base_dir: str | None = None,
                       source_text: str | None = None, overridden: frozenset[str] | set[str] = frozenset()
                       ) -> StudyConfig:
    """Validate a study given as a mapping (the schema, then :func:`check_study`).

    ``base_dir`` is where relative data paths start; ``source_text`` the file's text, stored with
    the study; ``overridden`` the dotted keys that came from the command line.
    """
    cfg = schema_from_mapping(data, where=where, base_dir=base_dir, source_text=source_text, overridden=overridden)
    check_study(cfg, where)
    return cfg


def check_study(cfg: StudyConfig, where: str) -> None:
    """The checks that span sections or need builders, engines, data sources or storage."""
    with _at(where):
        space = cfg.search_space()
        study_dir_on_path(cfg)
        check_builder_params(resolve_builder(cfg.model.builder), space)  # cheap: before engines load sklearn
        get_engine(cfg.search.engine).check(cfg, space)
        source = source_for(cfg.data.source)
        source.check(cfg)
        check_fixed_parts(cfg)  # data.valid / data.test given as their own files
        for metric in cfg.search.trained_metrics if cfg.data.task != "auto" else []:
            problem = metric_problem(metric, cfg.data.task, None, source.redacted(cfg))
            if problem:
                raise ConfigError(problem)
        _check_locations(cfg)
        check_tracking(cfg)  # tracking:'s packages installed, search.callbacks importable


def study_dir_on_path(cfg: StudyConfig) -> None:
    """A ``model.builder: module:function`` is imported with the study file's folder on the import
    path (appended, after the installed packages, and kept for the process, as pytest does with its
    rootdir), so a builder module beside the study file is found without ``PYTHONPATH``."""
    if cfg.base_dir is None or cfg.model.builder in BUILDERS or ":" not in cfg.model.builder:
        return
    folder = str(Path(cfg.base_dir).resolve())
    if folder not in sys.path:
        sys.path.append(folder)


def _check_locations(cfg: StudyConfig) -> None:
    """``storage:`` and ``artifacts:`` must at least be well-formed (reachability is checked by ``run``)."""
    if cfg.storage is not None and cfg.storage.strip():
        try:
            normalize_storage_url(cfg.storage)
        except StorageError as e:  # already redacted, names the fix
            raise ConfigError(str(e)) from None
    art = cfg.artifacts
    if art is not None and "://" in art and not art.lower().startswith("s3://"):
        raise ConfigError(
            f"artifacts: {redact_url(art)!r} has an unsupported scheme; give a folder path or s3://bucket/prefix"
        )


#: overrides of the run's budget: the stored study file keeps its own text (the budget is the run's)
BUDGET_KEYS = frozenset({"search.n_trials", "train.epochs"})


def _set_dotted(data: dict[str, Any], overrides: dict[str, Any] | None) -> set[str]:
    """Write ``{"search.n_trials": 2}``-style overrides into ``data``; returns the keys applied.

    ``None`` is a value, YAML's ``null`` (``--set train.early_stopping=null`` turns early stopping
    off, as the same line in the file does): callers leave out the options not given. A top-level
    section that is not a mapping is left alone: validation names it. A key that goes through a value
    (``train.epochs.x``) is a ConfigError naming it.
    """
    applied: set[str] = set()
    for dotted, value in (overrides or {}).items():
        node: Any = data
        keys = dotted.split(".")
        if not all(keys):
            raise ConfigError(f"{dotted}: an empty part in the key; write it dotted, e.g. train.epochs")
        for depth, k in enumerate(keys[:-1]):
            if node.get(k) is None:
                node[k] = {}
            node = node[k]
            if not isinstance(node, dict):
                if depth:
                    raise ConfigError(f"{dotted}: {'.'.join(keys[:depth + 1])} holds {node!r}, not a section;"
                                      f" set {'.'.join(keys[:depth + 1])} itself")
                break
        else:
            node[keys[-1]] = value
            applied.add(dotted)
    return applied


def apply_overrides(cfg: StudyConfig, overrides: dict[str, Any] | None, *, where: str | None = None) -> StudyConfig:
    """A validated copy of ``cfg`` with dotted overrides (``search.n_trials``) applied.

    The original is left as it is (a validated study is frozen); the copy keeps its file's folder
    and text.
    """
    data = cfg.model_dump(exclude_unset=True)  # what the file left out stays unset (model_fields_set)
    applied = _set_dotted(data, overrides)
    return parse_study_config(data, where=where or f"study {cfg.name}", base_dir=cfg.base_dir,
                              source_text=cfg.source_text, overridden=applied)


def load_study_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate a study file. ``overrides`` maps dotted keys (``search.n_trials``) to values.

    The file is read with bounds on its size, depth and alias expansion (:mod:`hpsearch.spec.studyfile`)."""
    p = Path(path)
    where = str(path)
    data, text = read_study_yaml(p, where)
    overridden = _set_dotted(data, overrides) if isinstance(data, dict) else set()
    changed = sorted(overridden - BUDGET_KEYS)
    if changed:  # the stored study file (STUDY.CONFIG) is what ran: load_split, report and workers re-read it
        text = (f"# {p.name} with --set {', '.join(changed)}\n"
                + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return parse_study_config(data, where=where, base_dir=str(p.resolve().parent), source_text=text,
                              overridden=overridden)
