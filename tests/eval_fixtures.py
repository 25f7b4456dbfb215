"""Small on-disk fixtures for the evaluation tests (MeViS layout via the data writers, DAVIS index PNGs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sparrow.data.mevis import write_frames, write_mevis_annotations
from sparrow.data.schema import Expression, ObjectTrack, VideoRecord

T, H, W = 6, 24, 40


def two_boxes() -> tuple[np.ndarray, np.ndarray]:
    """Object a (6x8, moving right by 1 px per frame) and object b (8x10, still), disjoint, ``[T, H, W]`` bool."""
    a = np.zeros((T, H, W), dtype=bool)
    b = np.zeros((T, H, W), dtype=bool)
    for t in range(T):
        a[t, 4:10, 2 + t : 10 + t] = True
        b[t, 12:20, 20:30] = True
    return a, b


def write_pngs(folder: Path, masks: np.ndarray, names: list[str], scale: int = 255) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in zip(names, masks):
        Image.fromarray((np.asarray(m) * scale).astype(np.uint8)).save(folder / f"{name}.png")


def mevis_split(
    root: Path, expressions: list[Expression] | None = None, extra_objects: dict | None = None
) -> VideoRecord:
    """Write a one-video MeViS-layout split ``root/gt`` and return its record (objects 1 = a, 2 = b)."""
    a, b = two_boxes()
    objects = {1: ObjectTrack.from_masks(1, a), 2: ObjectTrack.from_masks(2, b)}
    for oid, m in (extra_objects or {}).items():
        objects[oid] = ObjectTrack.from_masks(oid, m)
    if expressions is None:
        expressions = [
            Expression("0", "the box moving right", [1], tags=["fast"], kind="motion"),
            Expression("1", "both boxes", [1, 2], tags=["multi"], kind="position"),
        ]
    rec = VideoRecord("v1", [f"{i:05d}" for i in range(T)], H, W, objects=objects, expressions=expressions)
    split = root / "gt"
    write_mevis_annotations([rec], split)
    write_frames(split / "JPEGImages" / "v1", rec.frames, np.zeros((T, H, W, 3), np.uint8))
    return rec


def write_index_sequence(folder: Path, frames: np.ndarray, palette: bool = True) -> list[str]:
    """Write index frames ``[T, H, W]`` uint8 as ``%05d.png`` ("P" with a palette, or "L")."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for t, f in enumerate(frames):
        f = np.ascontiguousarray(f, dtype=np.uint8)
        img = Image.frombytes("P" if palette else "L", (f.shape[1], f.shape[0]), f.tobytes())
        if palette:
            img.putpalette([v for i in range(256) for v in (i * 37 % 256, i * 91 % 256, i * 53 % 256)])
        img.save(folder / f"{t:05d}.png")
        names.append(f"{t:05d}")
    return names
