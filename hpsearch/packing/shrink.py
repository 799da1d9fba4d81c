"""Shrinking a pack (issue 25 item 2): a frozen member (early-stopped, pruned, failed, or a slot no
refill came for) still computes its forward and backward pass every step of a pack, so the tail of a
pack can run 64 slots for 4 live members. Once no refill can come and few members still train
(:func:`shrink_due`), :func:`hpsearch.packing.train.train_pack` moves them at an epoch boundary into
a smaller compiled model (a kept one that hosts them, else a new build of just them: each group as
wide as its widest live member) and trains on there.

Each moved member continues exactly as it would have in the big pack: :func:`member_states` reads
its weights (batch norm's gamma / beta and moving statistics included), its optimizer state (the
momentum / Adam moments of each of its variables, its hyperparameter row with its own step count)
and :func:`load_states` writes them into its new slot, with its optimizer step count rebased on the
new model's ``iterations`` (Adam's bias correction sees the same ``t``). The batches go on from the
same rows (the rest of the chunk of epochs already drawn, then the same generator). Dropout masks are
drawn for the whole pack's (batch, K, units) at once, so a member's masks depend on the pack's
shape: a live member with dropout is never moved (the pack trains out as before).

The rule (:func:`shrink_due`) counts, never times, so a study run twice with one seed shrinks at the
same epoch: at most one live member in :data:`SHRINK_SHARE` slots, and the slots saved times the
epochs the live members may still train (the most of any; the tail is at most that long) at least
:data:`SHRINK_MIN_SLOT_EPOCHS`. Measured with ``benchmarks/bench_shrink.py`` (digits, the anchors'
space, 2-core CPU at load 3.3-3.5): an epoch of a 64-slot pack 0.228 s, of a pack of 4 / 12 / 16
members 0.031 / 0.065 / 0.049 s; the small pack's build 0.8-2.4 s and its trace and compile 5.1-6.4 s
(one sub-graph per depth group, whatever its size; without XLA 1.4 s, but its epochs 0.13-0.24 s: no
gain). So a shrink from 64 pays after 34-45 epochs of tail, 1600-2500 slot-epochs, by the epochs
alone; a study's epoch also writes and checks each member's value (the same for any K), so less is
saved. In the anchors' 64-trial Hyperband study (bench_packing.py ``--pruner hyperband``, shrink on
vs off interleaved, load 2.5-5) a shrink of 64 -> 12 with 72 epochs left (3744 slot-epochs) cut the
tail by 1.3-5.2 s of 16-20 s in four runs, while 64 -> 16 with 50-56 left (2400-2688) lost 2-6 s in
three of four: the threshold is 3200. With no pruner 31 of 64 members train all 100 epochs, the live
members never fall to a quarter and no shrink happens (that tail is the pack itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.packing.model import MemberSpec, PackedModel

if TYPE_CHECKING:
    from hpsearch.packing.train import MemberResult

__all__ = ["SHRINK", "SHRINK_SHARE", "SHRINK_MIN_SLOT_EPOCHS", "MemberState", "shrink_due", "member_states",
           "load_states"]

#: whether packs shrink at all (a test turns it off to compare a moved member with one left in place)
SHRINK = True
#: shrink once the live members are at most one in this many slots
SHRINK_SHARE = 4
#: ... and the slots saved times the live members' most epochs left reach this (see the module doc)
SHRINK_MIN_SLOT_EPOCHS = 3200


@dataclass
class MemberState:
    """What one member carries to another pack's slot."""

    spec: MemberSpec
    weights: list[np.ndarray]  # standalone layout (:meth:`PackedModel.member_weights`)
    moments: list[list[np.ndarray]]  # per member-state variable: its optimizer moments' own part (m, v)
    hyper: dict[str, float]  # its optimizer row (learning rate, momentum, ..., active, t0)
    steps: float  # optimizer steps it has taken: ``iterations - t0`` (Adam's t is steps + 1)


def shrink_due(pm: PackedModel, res: list[MemberResult], epochs: int) -> bool:
    """Whether the running members of ``pm`` (``res``, one per slot) should move to a smaller pack,
    by the counting rule of the module doc; the caller knows that no refill is to come."""
    live = [i for i, r in enumerate(res) if r.state == "RUNNING"]
    if not SHRINK or pm.per_member or not live or len(live) * SHRINK_SHARE > len(pm.specs):
        return False
    if any(pm.specs[i].dropout for i in live):
        return False  # its masks depend on the pack's shape: it could not continue exactly
    left = max(epochs - res[i].epochs for i in live)
    return (len(pm.specs) - len(live)) * left >= SHRINK_MIN_SLOT_EPOCHS


def _moment_parts(pm: PackedModel, member: int) -> list[tuple[Any, tuple[Any, ...], list[Any]]]:
    """(variable, the member's part of it, its moment variables) per member-state variable."""
    g = pm.slot[member][0]
    out = []
    for d, var in pm.state[g]:
        moments = pm.optimizer.moments(var) if var.trainable else []
        out.append((var, pm.member_slice(member, d, np.empty((0,) * len(var.shape))), moments))
    return out


def member_states(pm: PackedModel, members: list[int]) -> list[MemberState]:
    """Each of ``members``' state, read from ``pm`` (one read of the stacked weights for all)."""
    values = pm.group_values()
    iterations = float(pm.optimizer.iterations.numpy())
    out = []
    for m in members:
        hyper = pm.optimizer.rows(pm.position[m])
        moments = [[np.asarray(mv.numpy())[part].copy() for mv in mvs] for _, part, mvs in _moment_parts(pm, m)]
        out.append(MemberState(spec=pm.specs[m], weights=pm.member_weights(m, values), moments=moments,
                               hyper=hyper, steps=iterations - hyper["t0"]))
    return out


def load_states(pm: PackedModel, slots: list[int], states: list[MemberState]) -> None:
    """Member ``k`` of ``states`` into ``slots[k]`` of ``pm`` (its spec already there: built or
    hosted for it), active, its step count rebased on ``pm``'s optimizer ``iterations``."""
    if not pm.optimizer.built:  # a new build: its moments exist once the optimizer is built
        pm.optimizer.build(pm.model.trainable_variables)
    iterations = float(pm.optimizer.iterations.numpy())
    for slot, st in zip(slots, states, strict=True):
        pm.set_member_weights(slot, st.weights)
        j = pm.slot[slot][1]
        for (_, part, mvs), saved in zip(_moment_parts(pm, slot), st.moments, strict=True):
            for mv, value in zip(mvs, saved):  # a target tracing no moment: the member needs none
                full = np.array(mv.numpy())
                full[j] = 0.0
                full[part] = value
                mv.assign(full)
    pm.optimizer.carry({pm.position[slot]: {**st.hyper, "active": 1.0, "t0": iterations - st.steps}
                        for slot, st in zip(slots, states)})
