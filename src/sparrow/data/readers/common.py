"""Helpers shared by the readers: files read with errors that name them, box text files, PNG mask tracks.

Every loader here is meant to run lazily (inside a :class:`~sparrow.data.schema.LazyObjectTrack`), so that a
reader only lists files and parses small metadata when a split is opened.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sparrow.data.rle import RLE, encode_mask, mask_to_box, rle_box
from sparrow.data.schema import LazyObjectTrack, TrackData
from sparrow.errors import SparrowError

Box = list[float]


def load_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file raises :class:`SparrowError` naming it."""
    if not path.is_file():
        raise SparrowError("missing annotation file", path)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise SparrowError(f"not valid JSON ({exc.msg} at line {exc.lineno})", path) from exc
    except UnicodeDecodeError as exc:
        raise SparrowError(f"not UTF-8 text ({exc.reason})", path) from exc


def read_text(path: Path) -> str:
    """The text of a UTF-8 file (missing or undecodable: :class:`SparrowError` naming it)."""
    if not path.is_file():
        raise SparrowError("missing annotation file", path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SparrowError(f"not UTF-8 text ({exc.reason})", path) from exc


def read_lines(path: Path) -> list[str]:
    """Non-empty stripped lines of a text file."""
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (no decode)."""
    if not path.is_file():
        raise SparrowError("missing frame", path)
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as exc:
        raise SparrowError(f"not a readable image ({exc})", path) from exc


def frame_names(folder: Path, exts: Sequence[str] = (".jpg", ".jpeg", ".png", ".JPEG")) -> tuple[list[str], str]:
    """Sorted frame names (stems) of the images in ``folder`` and their extension (the most common one)."""
    if not folder.is_dir():
        raise SparrowError("missing frame folder", folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in exts and p.is_file())
    if not files:
        raise SparrowError("frame folder holds no images", folder)
    suffixes = [p.suffix for p in files]
    ext = max(set(suffixes), key=suffixes.count)
    return [p.stem for p in files if p.suffix == ext], ext


def parse_xywh_lines(path: Path, num_frames: int | None = None) -> list[Box | None]:
    """Boxes from a tracking ``groundtruth.txt`` (one ``x,y,w,h`` per line; comma, tab or space separated) as
    ``[x0, y0, x1, y1]``; a line with NaN or a non-positive side is None (target absent)."""
    boxes: list[Box | None] = []
    for n, line in enumerate(read_lines(path), start=1):
        parts = [p for p in re.split(r"[,\s]+", line) if p]
        try:
            x, y, w, h = (float(v) for v in parts[:4])
        except ValueError as exc:
            raise SparrowError(f"line {n}: expected x,y,w,h numbers, got {line[:60]!r}", path) from exc
        if len(parts) < 4:
            raise SparrowError(f"line {n}: expected x,y,w,h numbers, got {line[:60]!r}", path)
        bad = any(math.isnan(v) for v in (x, y, w, h)) or w <= 0 or h <= 0
        boxes.append(None if bad else [x, y, x + w, y + h])
    if num_frames is not None and len(boxes) != num_frames:
        raise SparrowError(f"{len(boxes)} boxes for {num_frames} frames", path)
    return boxes


def parse_flags(path: Path, num_frames: int) -> list[bool]:
    """Per-frame 0/1 flags (LaSOT ``full_occlusion.txt``: comma separated; GOT-10k ``absence.label``: one a
    line); all False when the file does not exist."""
    if not path.is_file():
        return [False] * num_frames
    values = [v for v in re.split(r"[,\s]+", read_text(path)) if v]
    try:
        flags = [bool(int(float(v))) for v in values]
    except ValueError as exc:
        raise SparrowError("expected 0/1 flags", path) from exc
    if len(flags) != num_frames:
        raise SparrowError(f"{len(flags)} flags for {num_frames} frames", path)
    return flags


def box_track(
    obj_id: int, num_frames: int, load_boxes: Callable[[], list[Box | None]], **kwargs: Any
) -> LazyObjectTrack:
    """A lazy track of a box-only source (tracking, grounding): masks None in every frame."""
    return LazyObjectTrack(obj_id, num_frames, lambda: ([None] * num_frames, load_boxes(), None), **kwargs)


def read_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An annotation PNG as an index array ``[H, W]`` (palette index, or grey value); wrong size or unreadable
    file: :class:`SparrowError` naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.array(img.convert("L") if img.mode not in ("P", "L", "1", "I", "I;16") else img)
    except OSError as exc:
        raise SparrowError(f"not a readable PNG ({exc})", path) from exc
    if arr.shape[:2] != tuple(size):
        raise SparrowError(f"mask is {arr.shape[1]}x{arr.shape[0]} where the frames are {size[1]}x{size[0]}", path)
    return arr


class IndexPngMasks:
    """The index PNGs of one video (``Annotations/<video>/<frame>.png``: pixel value k = object k, 0 background,
    255 void in DAVIS), read once for all its objects on the first request and kept as RLEs.

    ``paths[t]`` is None for a frame without an annotation PNG (the object counts as absent there).
    """

    def __init__(self, paths: Sequence[Path | None], size: tuple[int, int]) -> None:
        self.paths = list(paths)
        self.size = size
        self._rles: list[dict[int, RLE]] | None = None

    def _decode(self) -> list[dict[int, RLE]]:
        if self._rles is None:
            out: list[dict[int, RLE]] = []
            for path in self.paths:
                if path is None:
                    out.append({})
                    continue
                arr = read_png(path, self.size)
                out.append({int(v): encode_mask(arr == v) for v in np.unique(arr) if 0 < int(v) < 255})
            self._rles = out
        return self._rles

    def values(self) -> list[int]:
        """Object values present in any frame (reads the PNGs)."""
        return sorted({v for frame in self._decode() for v in frame})

    def track(self, value: int) -> TrackData:
        rles = [frame.get(value) for frame in self._decode()]
        return rles, [None if r is None else rle_box(r) for r in rles], None


def binary_png_track(paths: Sequence[Path | None], size: tuple[int, int], threshold: int = 127) -> TrackData:
    """One object's track from per-frame binary PNGs (value > ``threshold`` = object); None paths are absent."""
    rles: list[RLE | None] = []
    boxes: list[Box | None] = []
    for path in paths:
        if path is None:
            rles.append(None)
            boxes.append(None)
            continue
        mask = read_png(path, size) > threshold
        box = mask_to_box(mask)
        rles.append(None if box is None else encode_mask(mask))
        boxes.append(box)
    return rles, boxes, None


class LazyList(Sequence):
    """A list of known length whose items come from ``load()`` on first access (e.g. ReVOS foreground RLEs)."""

    def __init__(self, length: int, load: Callable[[], list]) -> None:
        self._length = length
        self._load: Callable[[], list] | None = load
        self._items: list | None = None

    def _get(self) -> list:
        if self._items is None:
            assert self._load is not None
            self._items, self._load = list(self._load()), None
        return self._items

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):  # type: ignore[override]
        return self._get()[index]

    def __iter__(self) -> Iterator:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, LazyList)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LazyList(length={self._length}, {'loaded' if self._items is not None else 'not loaded'})"
