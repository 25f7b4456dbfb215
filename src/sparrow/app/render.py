"""What the app shows and offers for download after a run: overlay video, exports, frame views with boxes.

A run folder holds ``overlay.mp4`` (H.264, plays in browsers), ``masks.zip`` (palette PNGs + ``result.json``),
``result.json``, ``coco.json``, ``boxes.csv`` and ``preview.gif`` (formats in :mod:`sparrow.data.exports`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sparrow.app.session import VideoView
from sparrow.atomic import atomic_file
from sparrow.data.exports import (
    ResultLike,
    label_frame,
    overlay_frame,
    write_boxes_csv,
    write_coco,
    write_gif,
    write_masks_zip,
)
from sparrow.data.palette import overlay
from sparrow.data.video_io import iter_frames, write_video

SELECTED = (255, 255, 255)  # the box the model selected on the key frame
USER = (255, 215, 0)  # boxes the user drew for TSF


@dataclass
class RunFiles:
    """The files of one run (all inside ``folder``)."""

    folder: Path
    overlay: Path
    masks_zip: Path
    downloads: list[Path]  # masks.zip first, then result.json, coco.json, boxes.csv, preview.gif


def write_run(result: Any, video: Path, folder: Path, name: str = "video") -> RunFiles:
    """Write the overlay video and every export of ``result`` (a SegmentationResult) for ``video`` into ``folder``.

    Frames are decoded twice, streamed (overlay, then the subsampled GIF); masks come from the result's RLEs."""
    doc = result.to_json()
    overlay_path = write_video(
        folder / "overlay.mp4", (overlay_frame(result, t, f) for t, f in iter_frames(video)), fps=result.fps or 10.0
    )
    masks_zip = write_masks_zip(result, folder / "masks.zip", doc)
    with atomic_file(folder / "result.json") as handle:
        json.dump(doc, handle)
    coco = write_coco(result, folder / "coco.json", video_name=name)
    boxes = write_boxes_csv(result, folder / "boxes.csv")
    gif = write_gif(result, iter_frames(video), folder / "preview.gif")
    return RunFiles(folder, overlay_path, masks_zip, [masks_zip, folder / "result.json", coco, boxes, gif])


def _scaled(box: Sequence[float], scale: float) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    return x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)


def frame_view(
    view: VideoView,
    t: int,
    result: ResultLike | None = None,
    user_boxes: Mapping[int, Sequence[float]] | None = None,
    corner: tuple[float, float] | None = None,
) -> np.ndarray:
    """Display frame ``t`` ``[h, w, 3]`` uint8 with the masks and per-frame boxes of ``result``, the box the model
    selected (white, thick) when ``t`` is a target's key frame, the user's TSF box on this frame (gold) and a
    pending first corner (gold dot). Boxes are in original pixels."""
    frame = view.frame(t).copy()  # drawn on below (the decoded JPEG is read-only)
    h, w = frame.shape[:2]
    if result is not None:
        labels = cv2.resize(label_frame(result, t), (w, h), interpolation=cv2.INTER_NEAREST)
        boxes = [None if tr.boxes[t] is None else [v * view.scale for v in tr.boxes[t]] for tr in result.targets]
        frame = overlay(frame, labels, boxes)
        for target in result.targets:
            if target.key_frame == t and target.key_box is not None:
                x0, y0, x1, y1 = _scaled(target.key_box, view.scale)
                cv2.rectangle(frame, (x0, y0), (x1, y1), SELECTED, 2)
    if user_boxes and t in user_boxes:
        x0, y0, x1, y1 = _scaled(user_boxes[t], view.scale)
        cv2.rectangle(frame, (x0, y0), (x1, y1), USER, 2)
    if corner is not None:
        cv2.circle(frame, (round(corner[0] * view.scale), round(corner[1] * view.scale)), 3, USER, -1)
    return frame


def describe(result: Any) -> str:
    """Markdown: per target, the key frame, the selected box and its score; notes on forced prompts and TSF."""
    lines = []
    for k, target in enumerate(result.targets, start=1):
        score = "no [BOX]" if target.selection_score is None else f"selection score {target.selection_score:.3f}"
        box = "" if target.key_box is None else " · box " + ", ".join(f"{v:.0f}" for v in target.key_box)
        visible = sum(r is not None for r in target.rles)
        lines.append(
            f"**target {k}**: key frame **{target.key_frame}** · {score}{box} · visible in {visible}/{result.num_frames} frames"
        )
    if not result.targets:
        lines.append("no target: the answer has no [SEG]")
    if getattr(result, "forced_prompt", False):
        lines.append("the answer had no [SEG]; `[BOX] [SEG]` was appended and read by teacher forcing")
    tsf = getattr(result, "extra", {}).get("tsf")
    if tsf:
        lines.append(f"TSF from {tsf['source']}: {len(tsf['entries'])} crops")
    return "  \n".join(lines)


def format_boxes(boxes: Mapping[int, Sequence[float]]) -> str:
    """``{3: [10, 20, 50, 60]}`` -> ``"3:10,20,50,60"`` lines (the ``--tsf-box`` syntax), sorted by frame."""
    return "\n".join(f"{t}:" + ",".join(f"{v:.0f}" for v in box) for t, box in sorted(boxes.items()))
