"""Identity classes of SynthRef objects: one class per (colour, shape), for identity prompts and attribute probes.

The segmenter stage can learn one prompt per identity (``stage.identity_prompts``): "segment every red star in this
frame". The target of identity ``i`` on a frame is the union of the visible masks of the objects whose colour and
shape are identity ``i`` (look-alikes are segmented together, as a multi-object expression is); it is empty on a
frame where no such object is visible, which teaches the decoder to answer "none" as well.

Identity index: ``COLOUR_ORDER.index(colour) * len(SHAPES) + SHAPES.index(shape)``, ``NUM_IDENTITIES = 36``.
Records without SynthRef attributes (e.g. MeViS) have no identities.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from sparrow.data.dataset import ReferringSample, ReferringVideoDataset
from sparrow.data.schema import ObjectTrack, VideoRecord
from sparrow.data.synthref.scene import COLOURS, SHAPES

__all__ = [
    "COLOUR_ORDER",
    "NUM_IDENTITIES",
    "IdentityDataset",
    "IdentitySample",
    "expression_identity",
    "identity_index",
    "identity_targets",
    "object_identity",
    "with_identity",
]

COLOUR_ORDER: tuple[str, ...] = tuple(COLOURS)
NUM_IDENTITIES = len(COLOUR_ORDER) * len(SHAPES)


def identity_index(colour: str, shape: str) -> int:
    """Index in ``[0, NUM_IDENTITIES)`` of a (colour, shape) pair; ValueError for an unknown colour or shape."""
    if colour not in COLOUR_ORDER or shape not in SHAPES:
        raise ValueError(f"not a SynthRef identity: colour {colour!r}, shape {shape!r}")
    return COLOUR_ORDER.index(colour) * len(SHAPES) + SHAPES.index(shape)


def object_identity(track: ObjectTrack) -> int | None:
    """The identity of an annotated object, or None when it has no SynthRef colour/shape attributes."""
    colour, shape = track.attributes.get("colour"), track.attributes.get("shape")
    if colour not in COLOUR_ORDER or shape not in SHAPES:
        return None
    return identity_index(colour, shape)


def identity_targets(record: VideoRecord, frames: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The identities of a video and their masks on ``frames``.

    Returns ``ids`` int64 ``[M]`` (the distinct identities of the video's objects, ascending) and ``masks`` bool
    ``[M, len(frames), H, W]`` (union of the visible masks of that identity's objects; empty where none is visible).
    ``M = 0`` for a record without SynthRef attributes.
    """
    groups: dict[int, list[ObjectTrack]] = {}
    for track in record.objects.values():
        ident = object_identity(track)
        if ident is not None:
            groups.setdefault(ident, []).append(track)
    ids = np.array(sorted(groups), dtype=np.int64)
    masks = np.zeros((len(ids), len(frames), record.height, record.width), dtype=bool)
    for m, ident in enumerate(ids):
        for track in groups[int(ident)]:
            for i, t in enumerate(frames):
                if track.masks[t] is not None:
                    masks[m, i] |= track.mask(t, record.size)
    return ids, masks


def expression_identity(record: VideoRecord, exp_id: str) -> int:
    """The one identity shared by every target of expression ``exp_id`` of ``record``; -1 when its targets have
    different identities or none (e.g. "the two shapes moving up" over a red star and a blue circle)."""
    expression = next((e for e in record.expressions if e.exp_id == exp_id), None)
    if expression is None:
        raise KeyError(f"{record.video_id}: no expression {exp_id!r}")
    ids = {object_identity(record.objects[o]) for o in expression.obj_ids if o in record.objects}
    return int(next(iter(ids))) if len(ids) == 1 and None not in ids else -1


@dataclass
class IdentitySample(ReferringSample):
    """A :class:`ReferringSample` that also carries the identities of its video on the SAM frames:
    ``identity_ids`` int64 ``[M]`` and ``identity_masks`` bool ``[M, Ts, H, W]`` (see :func:`identity_targets`),
    and ``target_identity``, the identity of the expression's targets (-1: mixed, see :func:`expression_identity`)."""

    identity_ids: np.ndarray | None = None
    identity_masks: np.ndarray | None = None
    target_identity: int = -1


def with_identity(sample: ReferringSample, record: VideoRecord) -> IdentitySample:
    """``sample`` (drawn from ``record``) plus the identity targets on its SAM frames and its target's identity."""
    ids, masks = identity_targets(record, list(sample.sam_indices))
    fields = {f.name: getattr(sample, f.name) for f in dataclasses.fields(ReferringSample)}
    target = expression_identity(record, sample.exp_id)
    return IdentitySample(**fields, identity_ids=ids, identity_masks=masks, target_identity=target)


class IdentityDataset(Dataset):
    """A :class:`ReferringVideoDataset` whose samples carry identity targets (same samples, same seeding)."""

    def __init__(self, base: ReferringVideoDataset) -> None:
        self.base = base

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> IdentitySample:
        sample = self.base[index]
        return with_identity(sample, self.base.records[self.base.items[index][0]])
