"""Export a segmentation result to the formats other tools read: COCO instances, boxes CSV, GIF preview, mask zip.

Pure functions over a result's plain data (per target: one COCO RLE or None and one pixel box ``[x0, y0, x1, y1]``
or None per frame; the frame size), so this module needs nothing from the model or the pipeline: anything shaped
like :class:`ResultLike` works (the pipeline's ``SegmentationResult`` is). Every file is written atomically.

- :func:`write_coco`: COCO-style instance JSON (one image per frame, one annotation per target and frame with an
  RLE ``segmentation``, ``bbox`` in ``[x, y, w, h]``, ``area``, ``track_id``); pycocotools' ``COCO`` reads it.
- :func:`write_boxes_csv`: one row per frame and target (``frame, time_s, target, x0, y0, x1, y1, area``; the box
  cells are empty where the target is not visible).
- :func:`write_gif`: an animated GIF of the overlay (masks and boxes over the frames), downscaled and subsampled.
- :func:`write_masks_zip`: ``masks/<frame:05d>.png`` palette PNGs (0 background, k = target k) and ``result.json``.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from sparrow.atomic import atomic_file, atomic_path
from sparrow.data.palette import index_png, overlay
from sparrow.data.rle import RLE, decode_rle

Box = list[float]


class TargetLike(Protocol):
    """One target: ``rles[t]`` (COCO RLE or None) and ``boxes[t]`` (pixel xyxy or None) for every frame t."""

    rles: Sequence[RLE | None]
    boxes: Sequence[Box | None]


class ResultLike(Protocol):
    """What the exports read from a result."""

    query: str
    answer: str
    num_frames: int
    height: int
    width: int
    fps: float
    targets: Sequence[TargetLike]


def label_frame(result: ResultLike, t: int) -> np.ndarray:
    """Frame ``t`` as a label image uint8 ``[H, W]``: 0 background, k for target k (a later target wins overlaps)."""
    size = (result.height, result.width)
    labels = np.zeros(size, dtype=np.uint8)
    for k, target in enumerate(result.targets, start=1):
        if target.rles[t] is not None:
            labels[decode_rle(target.rles[t], expected_size=size)] = k
    return labels


def overlay_frame(result: ResultLike, t: int, frame: np.ndarray) -> np.ndarray:
    """Frame ``t`` ``[H, W, 3]`` uint8 with each target's mask blended in its palette colour and its box drawn."""
    return overlay(frame, label_frame(result, t), [target.boxes[t] for target in result.targets])


def coco_instances(result: ResultLike, video_name: str = "video") -> dict[str, Any]:
    """COCO instance dict: ``images`` (id = frame + 1, ``file_name`` ``<video>/<frame:05d>.jpg``), ``annotations``
    (one per target and frame where it is visible; ``track_id`` = target index, starting at 1) and one category
    named by the query."""
    images = [
        {
            "id": t + 1,
            "file_name": f"{video_name}/{t:05d}.jpg",
            "width": result.width,
            "height": result.height,
            "frame_index": t,
            "video": video_name,
        }
        for t in range(result.num_frames)
    ]
    annotations = []
    for k, target in enumerate(result.targets, start=1):
        for t in range(result.num_frames):
            rle, box = target.rles[t], target.boxes[t]
            if rle is None:
                continue
            mask = decode_rle(rle, expected_size=(result.height, result.width))
            x0, y0, x1, y1 = box if box is not None else _tight_box(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": t + 1,
                    "category_id": 1,
                    "track_id": k,
                    "iscrowd": 0,
                    "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
                    "area": float(mask.sum()),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                }
            )
    return {
        "info": {
            "description": "SPARROW referring segmentation",
            "video": video_name,
            "query": result.query,
            "answer": result.answer,
            "fps": result.fps,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": result.query, "supercategory": "referred"}],
    }


def _tight_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def write_coco(result: ResultLike, path: str | Path, video_name: str = "video") -> Path:
    """Write :func:`coco_instances` as JSON to ``path``."""
    with atomic_file(path) as handle:
        json.dump(coco_instances(result, video_name), handle)
    return Path(path)


CSV_COLUMNS = ["frame", "time_s", "target", "x0", "y0", "x1", "y1", "area"]


def write_boxes_csv(result: ResultLike, path: str | Path) -> Path:
    """One row per frame and target (frame-major); ``x0..y1`` are pixel edges, empty where the target is absent."""
    fps = result.fps or 30.0
    with atomic_file(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for t in range(result.num_frames):
            for k, target in enumerate(result.targets, start=1):
                box, rle = target.boxes[t], target.rles[t]
                area = "" if rle is None else int(decode_rle(rle, expected_size=(result.height, result.width)).sum())
                coords = ["", "", "", ""] if box is None else [f"{v:.2f}" for v in box]
                writer.writerow([t, f"{t / fps:.3f}", k, *coords, area])
    return Path(path)


def write_gif(
    result: ResultLike,
    frames: Iterable[tuple[int, np.ndarray]],
    path: str | Path,
    max_side: int = 320,
    max_frames: int = 150,
) -> Path:
    """Animated GIF preview of the overlay from ``(t, frame [H, W, 3] uint8)`` pairs (e.g. ``iter_frames``).

    Every ``ceil(T / max_frames)``-th frame is kept and scaled so its longer side is at most ``max_side``; the
    frame duration keeps the video's speed (to 10 ms), and the GIF loops."""
    stride = max(1, -(-result.num_frames // max_frames))
    scale = min(1.0, max_side / max(result.height, result.width))
    size = (max(1, round(result.width * scale)), max(1, round(result.height * scale)))
    images = []
    for t, frame in frames:
        if t % stride:
            continue
        img = Image.fromarray(overlay_frame(result, t, frame))
        images.append(img.resize(size, Image.BILINEAR) if scale < 1.0 else img)
    if not images:
        raise ValueError("write_gif got no frames")
    duration = 10 * round(100 * stride / (result.fps or 10.0))  # GIF stores centiseconds
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return Path(path)


def write_masks_zip(result: ResultLike, path: str | Path, result_json: dict[str, Any]) -> Path:
    """Zip of ``masks/<frame:05d>.png`` (palette PNG per frame, labels as :func:`label_frame`) and ``result.json``
    (``result_json``: the result's JSON, per target per-frame RLE and box)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for t in range(result.num_frames):
            buffer = io.BytesIO()
            index_png(label_frame(result, t)).save(buffer, format="PNG")
            archive.writestr(f"masks/{t:05d}.png", buffer.getvalue())
        archive.writestr("result.json", json.dumps(result_json))
    return Path(path)
