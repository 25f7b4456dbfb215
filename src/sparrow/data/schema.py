"""The internal data schema: one record type for every benchmark and for SynthRef.

Every reader (MeViS layout, Ref-YouTube-VOS, ReVOS, SynthRef, ... see ``sparrow.data.readers``) converts its
files to :class:`VideoRecord`; every writer converts from it. Masks are held as COCO RLE (``sparrow.data.rle``) so
that a record of a long video stays small; they are decoded on demand. Readers stream: their tracks are
:class:`LazyObjectTrack` s that read an object's annotation (RLEs, PNGs, boxes) only when first asked for it.

Conventions:
- frame indices are positions in ``VideoRecord.frames`` (0-based);
- boxes are ``[x0, y0, x1, y1]`` in pixels of the original frame, x1/y1 exclusive (``rle.mask_to_box``);
- an object absent from a frame has ``None`` for both its mask and its box there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparrow.data.rle import RLE, decode_rle, encode_mask, mask_to_box
from sparrow.errors import SparrowError


@dataclass
class ObjectTrack:
    """One annotated object of a video: a mask and a box per frame (``None`` where absent).

    ``masks[t]`` is a COCO RLE of size ``[H, W]`` or None; ``boxes[t]`` is ``[x0, y0, x1, y1]`` or None.
    ``full_boxes[t]`` (optional) is the box of the whole object including occluded parts (SynthRef knows it).
    """

    obj_id: int
    masks: list[RLE | None]
    boxes: list[list[float] | None]
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    full_boxes: list[list[float] | None] | None = None

    @classmethod
    def from_masks(cls, obj_id: int, masks: np.ndarray | list[np.ndarray | None], **kwargs: Any) -> ObjectTrack:
        """Build a track from boolean masks ``[T, H, W]`` (or a list with None for absent frames)."""
        rles: list[RLE | None] = []
        boxes: list[list[float] | None] = []
        for m in masks:
            if m is None or not np.any(m):
                rles.append(None)
                boxes.append(None)
            else:
                rles.append(encode_mask(np.asarray(m, dtype=bool)))
                boxes.append(mask_to_box(np.asarray(m, dtype=bool)))
        return cls(obj_id=obj_id, masks=rles, boxes=boxes, **kwargs)

    def mask(self, t: int, size: tuple[int, int]) -> np.ndarray:
        """Boolean mask ``[H, W]`` of frame ``t`` (all False where the object is absent)."""
        rle = self.masks[t]
        if rle is None:
            return np.zeros(size, dtype=bool)
        return decode_rle(rle, expected_size=size, source=f"object {self.obj_id}, frame {t}")

    def present_frames(self) -> list[int]:
        """Indices of the frames where the object is visible."""
        return [t for t, rle in enumerate(self.masks) if rle is not None]


TrackData = tuple[list[RLE | None], list[list[float] | None], list[list[float] | None] | None]


class LazyObjectTrack(ObjectTrack):
    """An :class:`ObjectTrack` whose ``masks``, ``boxes`` and ``full_boxes`` come from ``load()`` on first access.

    ``load() -> (masks, boxes, full_boxes)``, each a list of ``num_frames`` entries (``full_boxes`` may be None);
    the loader validates what it reads and raises :class:`SparrowError` naming the file. Until then the track
    holds no annotation data, so opening a split costs nothing per mask.
    """

    def __init__(
        self,
        obj_id: int,
        num_frames: int,
        load: Callable[[], TrackData],
        category: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.obj_id = obj_id
        self.category = category
        self.attributes = dict(attributes or {})
        self.num_frames = num_frames
        self._load: Callable[[], TrackData] | None = load
        self._data: TrackData | None = None

    @property
    def loaded(self) -> bool:
        return self._data is not None

    def _get(self) -> TrackData:
        if self._data is None:
            assert self._load is not None
            masks, boxes, full = self._load()
            masks, boxes = list(masks), list(boxes)
            if len(masks) != self.num_frames or len(boxes) != self.num_frames:
                raise ValueError(f"loader of object {self.obj_id} gave {len(masks)} masks for {self.num_frames} frames")
            self._data, self._load = (masks, boxes, None if full is None else list(full)), None
        return self._data

    @property  # type: ignore[override]
    def masks(self) -> list[RLE | None]:
        return self._get()[0]

    @masks.setter
    def masks(self, value: list[RLE | None]) -> None:
        self._data = (list(value), *self._get()[1:])  # type: ignore[assignment]

    @property  # type: ignore[override]
    def boxes(self) -> list[list[float] | None]:
        return self._get()[1]

    @boxes.setter
    def boxes(self, value: list[list[float] | None]) -> None:
        data = self._get()
        self._data = (data[0], list(value), data[2])

    @property  # type: ignore[override]
    def full_boxes(self) -> list[list[float] | None] | None:
        return self._get()[2]

    @full_boxes.setter
    def full_boxes(self, value: list[list[float] | None] | None) -> None:
        data = self._get()
        self._data = (data[0], data[1], None if value is None else list(value))

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"LazyObjectTrack(obj_id={self.obj_id}, frames={self.num_frames}, {state})"


def boxes_from_rles(rles: Sequence[RLE | None]) -> list[list[float] | None]:
    """Tight boxes ``[x0, y0, x1, y1]`` (x1/y1 exclusive) of validated RLEs, without decoding them (None where
    the RLE is None or empty)."""
    from sparrow.data.rle import rle_box

    return [None if r is None else rle_box(r) for r in rles]


@dataclass
class Expression:
    """A referring expression and the objects it refers to (several for multi-target expressions)."""

    exp_id: str
    text: str
    obj_ids: list[int]
    tags: list[str] = field(default_factory=list)  # e.g. occlusion, reentry, distractor, fast, late, multi
    kind: str | None = None  # e.g. appearance, motion, position (SynthRef); free-form for other sources
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific fields kept for round trips


@dataclass
class VideoRecord:
    """A video with its objects and expressions.

    Frames live either in ``frame_dir`` as ``<name><frame_ext>`` for each name in ``frames`` (the MeViS and
    DAVIS layouts) or in the video file ``video_path`` (then ``frames`` names the decoded frames in order, and
    ``frame_indices[t]``, when set, is the position in the file of record frame ``t``: annotated frames of a
    longer video, e.g. SA-V's every fourth frame). ``foreground`` (ReVOS) is one RLE per frame of all foreground.
    """

    video_id: str
    frames: list[str]
    height: int
    width: int
    objects: dict[int, ObjectTrack] = field(default_factory=dict)
    expressions: list[Expression] = field(default_factory=list)
    frame_dir: Path | None = None
    frame_ext: str = ".jpg"
    video_path: Path | None = None
    fps: float | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    frame_indices: list[int] | None = None
    foreground: Sequence[RLE | None] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (self.height, self.width)

    def frame_path(self, t: int) -> Path:
        if self.frame_dir is None:
            raise SparrowError(f"video {self.video_id} has no frame folder (frames come from {self.video_path})")
        return self.frame_dir / f"{self.frames[t]}{self.frame_ext}"

    def load_frames(self, indices: list[int] | None = None) -> np.ndarray:
        """Decode frames ``[T, H, W, 3]`` uint8 (all frames when ``indices`` is None)."""
        from sparrow.data.video_io import read_frames

        idx = list(range(self.num_frames)) if indices is None else list(indices)
        if self.frame_dir is not None:
            frames = read_frames([self.frame_path(t) for t in idx])
        elif self.video_path is not None:
            frames = read_frames(
                self.video_path, idx if self.frame_indices is None else [self.frame_indices[t] for t in idx]
            )
        else:
            raise SparrowError(f"video {self.video_id} has neither a frame folder nor a video file")
        if frames.shape[1:3] != (self.height, self.width):
            raise SparrowError(
                f"frames are {frames.shape[2]}x{frames.shape[1]} but the annotation says {self.width}x{self.height}",
                self.frame_dir or self.video_path,
            )
        return frames

    def target_masks(self, expression: Expression, indices: list[int] | None = None) -> np.ndarray:
        """Union of the masks of the expression's objects, boolean ``[T, H, W]``."""
        idx = list(range(self.num_frames)) if indices is None else list(indices)
        out = np.zeros((len(idx), self.height, self.width), dtype=bool)
        for obj_id in expression.obj_ids:
            track = self.objects.get(obj_id)
            if track is None:
                raise SparrowError(
                    f"expression {expression.exp_id} of video {self.video_id} names unknown object {obj_id}"
                )
            for i, t in enumerate(idx):
                out[i] |= track.mask(t, self.size)
        return out

    def target_boxes(self, expression: Expression, indices: list[int] | None = None) -> list[list[float] | None]:
        """Per frame, the box enclosing all of the expression's objects there (None where none is visible)."""
        idx = list(range(self.num_frames)) if indices is None else list(indices)
        out: list[list[float] | None] = []
        for t in idx:
            boxes = [self.objects[o].boxes[t] for o in expression.obj_ids if self.objects[o].boxes[t] is not None]
            if not boxes:
                out.append(None)
            else:
                b = np.asarray(boxes, dtype=float)
                out.append([float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), float(b[:, 3].max())])
        return out

    def validate(self, source: str | Path | None = None) -> None:
        """Check internal consistency; raise :class:`SparrowError` naming ``source`` on the first problem.

        Tracks not loaded yet (:class:`LazyObjectTrack`) are not loaded here: their loader checks them.
        """
        src = source or self.frame_dir or self.video_path or self.video_id
        if self.num_frames == 0:
            raise SparrowError(f"video {self.video_id} has no frames", src)
        if self.frame_indices is not None and len(self.frame_indices) != self.num_frames:
            raise SparrowError(
                f"video {self.video_id}: {len(self.frame_indices)} frame indices for {self.num_frames} frames", src
            )
        for obj in self.objects.values():
            if isinstance(obj, LazyObjectTrack) and not obj.loaded:
                if obj.num_frames != self.num_frames:
                    raise SparrowError(
                        f"object {obj.obj_id} of video {self.video_id} spans {obj.num_frames} frames, not {self.num_frames}",
                        src,
                    )
                continue
            if len(obj.masks) != self.num_frames or len(obj.boxes) != self.num_frames:
                raise SparrowError(
                    f"object {obj.obj_id} of video {self.video_id} has {len(obj.masks)} masks and "
                    f"{len(obj.boxes)} boxes for {self.num_frames} frames",
                    src,
                )
            for t, rle in enumerate(obj.masks):
                if rle is not None and list(rle.get("size", [])) != [self.height, self.width]:
                    raise SparrowError(
                        f"object {obj.obj_id} of video {self.video_id}, frame {t}: RLE of size {rle.get('size')} "
                        f"where the frames are {[self.height, self.width]}",
                        src,
                    )
        for exp in self.expressions:
            if not exp.text.strip():
                raise SparrowError(f"expression {exp.exp_id} of video {self.video_id} is empty", src)
            missing = [o for o in exp.obj_ids if o not in self.objects]
            if missing:
                raise SparrowError(
                    f"expression {exp.exp_id} of video {self.video_id} names unknown objects {missing}", src
                )
