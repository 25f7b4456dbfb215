"""Training samples for referring video segmentation, from any schema source (MeViS layout, SynthRef, ...).

One sample per (video, expression) pair. Frame sampling is explicit and seeded:

- **VLM frames** (``num_vlm_frames``): ``uniform`` takes evenly spaced frames over the whole video; ``random``
  cuts the video into ``num_vlm_frames`` equal segments and takes one random frame in each (sorted, covers the
  clip). Videos shorter than the count repeat frames, so the count is always exact.
- A target with boxes but no mask on any frame (box-only sources such as LaSOT, GOT-10k, HC-STVG) is an error: its
  mask targets would be empty; ``sparrow curate`` makes masks from the boxes (docs/data.md).
- **SAM frames** (``num_sam_frames``): the **first SAM frame is the key frame**, the one the dual prompt
  (``[BOX]`` then ``[SEG]``) is decoded on. ``uniform``: the key frame is the first frame where a target is
  visible, followed by evenly spaced frames from there to the end. ``random``: the key frame is a random frame
  where a target is visible, followed by random other frames of the video in increasing order. A target never
  visible falls back to frame 0.
- ``key_box`` is the box of the targets' union on the key frame (NaN when nothing is visible there, which
  happens only when the target is never visible).
- With ``sampling="random"`` sample ``i`` in epoch ``e`` depends only on ``(seed, e, i)`` (call
  :meth:`ReferringVideoDataset.set_epoch`); the question/answer template choice is drawn the same way in both
  modes.

Only the sampled frames are decoded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from sparrow.data.readers import read_dataset
from sparrow.data.schema import Expression, VideoRecord
from sparrow.data.templates import ReferringTemplates
from sparrow.errors import SparrowError

SAMPLING_MODES = ("uniform", "random")


@dataclass
class ReferringSample:
    """One training sample. Shapes: ``vlm_frames [Tv, H, W, 3]`` and ``sam_frames [Ts, H, W, 3]`` uint8;
    ``masks [N_slots, Ts, H, W]`` bool; ``boxes [N_slots, Ts, 4]`` float xyxy pixels (NaN where absent);
    ``key_box [N_slots, 4]``. ``N_slots`` is 1 for a referring expression (the union of its targets)."""

    video_id: str
    exp_id: str
    vlm_indices: list[int]
    vlm_frames: np.ndarray
    sam_indices: list[int]
    sam_frames: np.ndarray
    question: str
    answer: str
    masks: np.ndarray
    boxes: np.ndarray
    key_box: np.ndarray
    text: str
    kind: str | None = None
    tags: list[str] = field(default_factory=list)
    object_boxes: list[np.ndarray] = field(
        default_factory=list
    )  # per SAM frame: [M, 4] pixel boxes of every visible object
    seconds_per_frame: float = 1.0  # time between consecutive VLM frames (fps from the record, 10 if unknown)
    tsf_crops: np.ndarray | None = None  # [K, s, s, 3] uint8 target crops (TSF) when a TSF cache is given
    vlm_boxes: np.ndarray | None = None  # [N_slots, Tv, 4] pixel xyxy of the targets on the VLM frames, NaN absent


def load_records(path: str | Path, format: str = "mevis", split: str | None = None) -> list[VideoRecord]:
    """Read one split of a dataset in any layout into schema records, through
    :func:`sparrow.data.readers.read_dataset` (``format``: ``mevis`` (MeViS, SynthRef), ``refytvos``, ``revos``,
    ``lasot``, ... see ``sparrow.data.readers.FORMATS``; ``split`` None: the only split present, e.g. a MeViS-layout
    split folder)."""
    return read_dataset(path, format, split)


def _even(start: int, stop: int, count: int) -> list[int]:
    """``count`` evenly spaced indices in ``[start, stop)`` (repeats when the range is shorter)."""
    return [int(round(x)) for x in np.linspace(start, stop - 1, count)]


class ReferringVideoDataset(Dataset):
    """A ``torch.utils.data.Dataset`` of :class:`ReferringSample` over all (video, expression) pairs."""

    def __init__(
        self,
        records: list[VideoRecord],
        num_vlm_frames: int = 8,
        num_sam_frames: int = 4,
        sampling: str = "uniform",
        seed: int = 0,
        templates: ReferringTemplates | None = None,
        tsf_crops: Callable[[VideoRecord, str], np.ndarray | None] | None = None,
    ) -> None:
        if sampling not in SAMPLING_MODES:
            raise SparrowError(f"sampling must be one of {list(SAMPLING_MODES)}, got {sampling!r}")
        if num_vlm_frames < 1 or num_sam_frames < 1:
            raise SparrowError(f"frame counts must be >= 1, got vlm={num_vlm_frames}, sam={num_sam_frames}")
        self.records = records
        self.num_vlm_frames = num_vlm_frames
        self.num_sam_frames = num_sam_frames
        self.sampling = sampling
        self.seed = int(seed)
        self.templates = templates or ReferringTemplates()
        self.epoch = 0
        self.tsf_crops = tsf_crops  # (record, exp_id) -> TSF crops [K, s, s, 3] or None (e.g. sparrow.tsf.CachedCrops)
        self.items = [(r, e) for r, rec in enumerate(records) for e in range(len(rec.expressions))]
        if not self.items:
            raise SparrowError(f"no (video, expression) pairs in {len(records)} records")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, int(index)]))

    def frame_indices(
        self, record: VideoRecord, expression: Expression, rng: np.random.Generator
    ) -> tuple[list[int], list[int]]:
        """``(vlm_indices, sam_indices)``; ``sam_indices[0]`` is the key frame (see the module docstring)."""
        T = record.num_frames
        visible = [t for t in range(T) if any(record.objects[o].masks[t] is not None for o in expression.obj_ids)]
        if not visible and any(record.objects[o].boxes[t] is not None for o in expression.obj_ids for t in range(T)):
            raise SparrowError(
                f"video {record.video_id!r}, expression {expression.exp_id!r}: the target has boxes but no masks "
                "(a box-only source); make its masks with `sparrow curate` (SAM2 from boxes) and train on the result"
            )
        if self.sampling == "uniform":
            vlm = _even(0, T, self.num_vlm_frames)
            key = visible[0] if visible else 0
            sam = [key] + _even(key, T, self.num_sam_frames)[1:] if self.num_sam_frames > 1 else [key]
            return vlm, sam
        edges = np.linspace(0, T, self.num_vlm_frames + 1)
        vlm = [int(rng.integers(int(a), max(int(a) + 1, int(np.ceil(b))))) for a, b in itertools.pairwise(edges)]
        vlm = [min(t, T - 1) for t in vlm]
        key = int(visible[int(rng.integers(0, len(visible)))]) if visible else 0
        others = [t for t in range(T) if t != key]
        n_other = self.num_sam_frames - 1
        if n_other > 0:
            if others:
                picked = rng.choice(others, size=n_other, replace=len(others) < n_other)
            else:
                picked = np.full(n_other, key)
            return vlm, [key] + sorted(int(t) for t in picked)
        return vlm, [key]

    def __getitem__(self, index: int) -> ReferringSample:
        if not 0 <= index < len(self.items):
            raise IndexError(f"sample {index} out of range for {len(self.items)} samples")
        r, e = self.items[index]
        record, expression = self.records[r], self.records[r].expressions[e]
        rng = self._rng(index)
        vlm_idx, sam_idx = self.frame_indices(record, expression, rng)
        wanted = sorted(set(vlm_idx) | set(sam_idx))
        decoded = record.load_frames(wanted)
        position = {t: i for i, t in enumerate(wanted)}
        masks = record.target_masks(expression, sam_idx)[None]
        boxes = np.array(
            [[np.nan] * 4 if b is None else b for b in record.target_boxes(expression, sam_idx)], dtype=np.float32
        )[None]
        return ReferringSample(
            video_id=record.video_id,
            exp_id=expression.exp_id,
            vlm_indices=vlm_idx,
            vlm_frames=decoded[[position[t] for t in vlm_idx]],
            sam_indices=sam_idx,
            sam_frames=decoded[[position[t] for t in sam_idx]],
            question=self.templates.question(expression.text, rng),
            answer=self.templates.answer(1, rng),
            masks=masks,
            boxes=boxes,
            key_box=boxes[:, 0].copy(),
            text=expression.text,
            kind=expression.kind,
            tags=list(expression.tags),
            object_boxes=[
                np.array(
                    [o.boxes[t] for o in record.objects.values() if o.boxes[t] is not None], dtype=np.float32
                ).reshape(-1, 4)
                for t in sam_idx
            ],
            seconds_per_frame=(vlm_idx[-1] - vlm_idx[0]) / max(len(vlm_idx) - 1, 1) / (record.fps or 10.0),
            tsf_crops=self._tsf_crops(record, expression),
            vlm_boxes=np.array(
                [[np.nan] * 4 if b is None else b for b in record.target_boxes(expression, vlm_idx)], dtype=np.float32
            )[None],
        )

    def _tsf_crops(self, record: VideoRecord, expression: Expression) -> np.ndarray | None:
        """The K crops of the expression's target from the ``tsf_crops`` provider, or None (none given or found)."""
        if self.tsf_crops is None:
            return None
        crops = self.tsf_crops(record, expression.exp_id)
        return crops if crops is not None and len(crops) else None
