"""Cut target crops from ORIGINAL frames (never from centre-cropped or resized encoder inputs).

A crop is the box grown by a context margin, made square around the box centre (so the target keeps its
aspect ratio), cut from the full frame with constant padding where it leaves the frame, and resized to
``size x size``. :func:`tsf_crop_images` is what the model's TSF injection calls with the cached entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from sparrow.data.video_io import VideoSource, read_frames
from sparrow.errors import SparrowError

if TYPE_CHECKING:
    from sparrow.data.schema import VideoRecord
    from sparrow.tsf.cache import Key, TSFEntry, TSFRecord

Box = Sequence[float]


def crop_region(box: Box, margin: float = 0.1, square: bool = True) -> tuple[int, int, int, int]:
    """The integer region ``(x0, y0, x1, y1)`` (x1/y1 exclusive, may leave the frame) a crop of ``box`` covers.

    The box ``[x0, y0, x1, y1]`` (pixels, x1/y1 exclusive) is grown by ``margin`` times its size on each side;
    with ``square`` the shorter side is grown to the longer one around the same centre.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise SparrowError(f"crop box {list(box)} is empty (need x1 > x0 and y1 > y0)")
    w, h = x1 - x0, y1 - y0
    w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
    if square:
        w = h = max(w, h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx0, ry0 = int(np.floor(cx - w / 2)), int(np.floor(cy - h / 2))
    rx1, ry1 = max(int(np.ceil(cx + w / 2)), rx0 + 1), max(int(np.ceil(cy + h / 2)), ry0 + 1)
    return rx0, ry0, rx1, ry1


def crop_box(
    frame: np.ndarray, box: Box, size: int, margin: float = 0.1, square: bool = True, fill: int = 0
) -> np.ndarray:
    """Crop ``box`` from ``frame [H, W, 3]`` uint8 -> ``[size, size, 3]`` uint8 (see :func:`crop_region`).

    Parts of the region outside the frame are filled with ``fill``. A box entirely outside the frame raises
    :class:`SparrowError`.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise SparrowError(f"a frame must be [H, W, 3], got shape {list(frame.shape)}")
    H, W = frame.shape[:2]
    rx0, ry0, rx1, ry1 = crop_region(box, margin, square)
    ix0, iy0, ix1, iy1 = max(rx0, 0), max(ry0, 0), min(rx1, W), min(ry1, H)
    if ix1 <= ix0 or iy1 <= iy0:
        raise SparrowError(f"crop box {list(box)} lies outside the {W}x{H} frame")
    patch = np.full((ry1 - ry0, rx1 - rx0, 3), fill, dtype=np.uint8)
    patch[iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0] = frame[iy0:iy1, ix0:ix1]
    shrink = patch.shape[0] > size or patch.shape[1] > size
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def tsf_crop_images(
    frames_or_source: np.ndarray | VideoSource | VideoRecord,
    entries: Sequence[TSFEntry | tuple[int, Box]],
    size: int,
    margin: float = 0.1,
    square: bool = True,
) -> np.ndarray:
    """The TSF crops of one (video, expression): ``[K, size, size, 3]`` uint8, in the order of ``entries``.

    ``frames_or_source`` is a frame array ``[T, H, W, 3]``, any video source of :mod:`sparrow.data.video_io`
    (file, frame folder, list of frame paths), or a :class:`~sparrow.data.schema.VideoRecord`; only the frames
    the entries name are decoded. ``entries`` are cache entries (``.frame``, ``.box``) or ``(frame, box)``
    pairs with boxes in pixels of the original frame. No entries give an array ``[0, size, size, 3]``.
    """
    pairs = [(int(e.frame), list(e.box)) if hasattr(e, "frame") else (int(e[0]), list(e[1])) for e in entries]
    if not pairs:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    indices = sorted({t for t, _ in pairs})
    if isinstance(frames_or_source, np.ndarray):
        arr = frames_or_source
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise SparrowError(f"a frame array must be [T, H, W, 3], got shape {list(arr.shape)}")
        bad = [t for t in indices if not 0 <= t < arr.shape[0]]
        if bad:
            raise SparrowError(f"TSF entry frame {bad[0]} out of range for {arr.shape[0]} frames")
        frames = {t: arr[t] for t in indices}
    else:
        if hasattr(frames_or_source, "load_frames"):
            count = frames_or_source.num_frames
            bad = [t for t in indices if not 0 <= t < count]
            if bad:
                raise SparrowError(
                    f"TSF entry frame {bad[0]} out of range for {count} frames of video {frames_or_source.video_id}"
                )
            decoded = frames_or_source.load_frames(indices)
        else:
            decoded = read_frames(frames_or_source, indices)
        frames = dict(zip(indices, decoded, strict=True))
    return np.stack([crop_box(frames[t], box, size, margin, square) for t, box in pairs])


def tsf_crops_for(
    cache: dict[Key, TSFRecord], record: VideoRecord, exp_id: str, size: int, margin: float = 0.1
) -> np.ndarray:
    """The cached TSF crops of one expression of ``record``: ``[K, size, size, 3]`` uint8.

    ``cache`` is what :func:`sparrow.tsf.cache.read_tsf_cache` returns. A missing or ``failed`` record gives
    ``[0, size, size, 3]`` (the caller decides what "no crops" means, e.g. TSF off for that sample).
    """
    entry = cache.get((record.video_id, str(exp_id)))
    if entry is None or entry.status != "ok":
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return tsf_crop_images(record, entry.entries, size, margin)


class CachedCrops:
    """The TSF crops of a cache as a provider for training data: ``(record, exp_id) -> [K, size, size, 3]`` uint8,
    or None for a missing or failed entry (``ReferringVideoDataset(tsf_crops=CachedCrops(cache, 56))``)."""

    def __init__(self, cache: dict[Key, TSFRecord], size: int, margin: float = 0.1) -> None:
        self.cache, self.size, self.margin = cache, int(size), margin

    def __call__(self, record: VideoRecord, exp_id: str) -> np.ndarray | None:
        crops = tsf_crops_for(self.cache, record, exp_id, self.size, self.margin)
        return crops if len(crops) else None
