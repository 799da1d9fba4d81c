"""No silent choices: the automatic decisions a study's preparation made, each said in one line and
recorded on the study (:meth:`hpsearch.trials.context.RunContext.decide`, ``STUDY.DECISIONS``).

Said here, once the run context exists: whether an image folder streams from disk or sits in
memory, how each table column is encoded, the CNN's convolutions under ``conv: auto``, a
``batch_size: auto`` and a ``float: auto`` range found by the finders. The pack size is said by the
engine that plans packs (:func:`hpsearch.packing.runner.pack_line`).
"""

from __future__ import annotations

from hpsearch.models.cnn import build_cnn
from hpsearch.study.batchfind import BATCH_FIND_ATTR
from hpsearch.study.lrfind import LR_FIND_ATTR
from hpsearch.trials.context import RunContext

__all__ = ["announce_decisions"]


def _memory(ctx: RunContext) -> None:
    summary, mode = ctx.data.summary, ctx.cfg.data.in_memory
    if not (ctx.data.streamed or "images" in summary) or (mode is not True and mode is not False and mode != "auto"):
        return
    n = summary.get("images") or summary.get("rows")
    if ctx.data.streamed:
        ctx.decide("data.in_memory", False, f"data.in_memory {mode} -> streamed from disk: {n} images decoded batch"
                   " by batch (auto streams above 1 GiB of float32 inputs)")
    else:
        ctx.decide("data.in_memory", True, f"data.in_memory {mode} -> in memory: {n} images")


def _columns(ctx: RunContext) -> None:
    cols = ctx.data.preprocessor.columns
    if not cols:
        return
    kinds: dict[str, list[str]] = {}
    for c in cols:
        kind = {"number": "numeric", "onehot": "one-hot", "lookup": "integer lookup"}.get(c["kind"], c["kind"])
        if c.get("indicator"):
            kind += " + missing indicator"
        kinds.setdefault(kind, []).append(str(c["name"]))
    parts = [f"{kind} ({len(names)}): {', '.join(names)}" for kind, names in kinds.items()]
    line = (f"data: {len(cols)} columns used, none dropped; " + "; ".join(parts)
            + f" (text columns of more than data.max_categories = {ctx.cfg.data.max_categories} values:"
            " integer lookup)")
    ctx.decide("data.columns", kinds, line)


def _conv(ctx: RunContext) -> None:
    conv = ctx.space.fixed.get("conv", "auto")
    if ctx.builder is not build_cnn or "conv" in ctx.space.params or conv != "auto":
        return
    row = tuple(ctx.data.meta().get("X_shape_", ())[1:])
    how = "images with a channel axis added inside the model" if len(row) == 2 else "images"
    ctx.decide("model.conv", "2d", f"model conv auto -> 2d: rows of shape {row} are read as {how} (Conv2D);"
               " set model.fixed.conv: 1d for sequences (steps, features)")


def _finders(ctx: RunContext, auto_batch: bool, auto_ranges: list[str]) -> None:
    attrs = ctx.study.user_attrs
    found = attrs.get(BATCH_FIND_ATTR)
    if auto_batch and found:
        ctx.decide("train.batch_size", found["batch_size"], f"train.batch_size auto -> {found['batch_size']}"
                   f" (batch-find on {found.get('device', 'this device')}: {found.get('reason')})")
    lr = attrs.get(LR_FIND_ATTR)
    if auto_ranges and lr:
        for name in auto_ranges:
            ctx.decide(f"space.{name}", [lr["low"], lr["high"]],
                       f"space.{name} auto -> [{lr['low']:.3g}, {lr['high']:.3g}] (learning-rate range test)")


def announce_decisions(ctx: RunContext, auto_batch: bool = False, auto_ranges: list[str] | None = None) -> None:
    """Say and record every automatic decision of the study's preparation (see the module doc)."""
    _memory(ctx)
    _columns(ctx)
    _conv(ctx)
    _finders(ctx, auto_batch, auto_ranges or [])
