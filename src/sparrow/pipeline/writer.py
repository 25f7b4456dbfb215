"""Write a segmentation result: indexed PNG masks, a JSON with COCO RLE masks, and an overlay MP4.

Output folder (written under a temporary name and renamed at the end, so a failure leaves nothing)::

    <out>/masks/<frame:05d>.png   palette PNG, 0 = background, k = target k (DAVIS palette)
    <out>/result.json             answer, frames the VLM saw, per target: key frame, box, score, per-frame RLE + box
    <out>/overlay.mp4             the video with coloured masks and boxes
    <out>/.sparrow-output.json    the marker listing these files (a later run may replace this folder, see
                                  sparrow.output)
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from sparrow.atomic import atomic_dir
from sparrow.data.rle import decode_rle
from sparrow.data.video_io import Video, VideoSource, write_video
from sparrow.output import write_marker
from sparrow.pipeline.results import SegmentationResult


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC / DAVIS colour map ``[n, 3]`` uint8 (bit-interleaved label colours)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for label in range(n):
        c, r, g, b = label, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


PALETTE = voc_palette()


def index_png(index_mask: np.ndarray) -> Image.Image:
    """uint8 label image ``[H, W]`` -> palette PNG image."""
    img = Image.fromarray(index_mask.astype(np.uint8), mode="P")
    img.putpalette(PALETTE.flatten().tolist())
    return img


def overlay(frame: np.ndarray, index_mask: np.ndarray, boxes: list[list[float] | None], alpha: float = 0.5) -> np.ndarray:
    """Blend target colours over ``frame`` ``[H, W, 3]`` and draw each target's box."""
    out = frame.astype(np.float32)
    for k in range(1, int(index_mask.max()) + 1):
        sel = index_mask == k
        out[sel] = (1 - alpha) * out[sel] + alpha * PALETTE[k]
    out = out.astype(np.uint8)
    for k, box in enumerate(boxes, start=1):
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), tuple(int(c) for c in PALETTE[k]), 1)
    return out


def write_segmentation(
    result: SegmentationResult, video: VideoSource | Video, out_dir: str | Path, progress: bool = False
) -> Path:
    """Write masks, JSON and overlay for ``result`` (frames are decoded once, streamed).

    An existing ``out_dir`` is replaced; whether that is allowed is decided before the work
    (:func:`sparrow.output.check_output`)."""
    size = (result.height, result.width)
    source = Video.open(video, cache_size=0)

    def frames_with_overlay(tmp: Path):
        for t, frame in tqdm(source.iter(), total=result.num_frames, disable=not progress, desc="writing", unit="frame"):
            index = np.zeros(size, dtype=np.uint8)
            for k, target in enumerate(result.targets, start=1):
                if target.rles[t] is not None:
                    index[decode_rle(target.rles[t], expected_size=size)] = k
            index_png(index).save(tmp / "masks" / f"{t:05d}.png")
            yield overlay(frame, index, [tr.boxes[t] for tr in result.targets])

    try:
        with atomic_dir(out_dir) as tmp:
            (tmp / "masks").mkdir()
            write_video(tmp / "overlay.mp4", frames_with_overlay(tmp), fps=result.fps or 10.0)
            with open(tmp / "result.json", "w") as handle:
                json.dump(result.to_json(), handle)
            write_marker(tmp, "segment")
    finally:
        if source is not video:
            source.close()
    return Path(out_dir)
