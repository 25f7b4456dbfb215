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

import numpy as np
from tqdm.auto import tqdm

from sparrow.atomic import atomic_dir
from sparrow.data.palette import PALETTE, index_png, overlay, voc_palette
from sparrow.data.rle import decode_rle
from sparrow.data.video_io import Video, VideoSource, write_video
from sparrow.output import write_marker
from sparrow.pipeline.results import SegmentationResult

__all__ = ["PALETTE", "index_png", "overlay", "voc_palette", "write_segmentation"]


def write_segmentation(
    result: SegmentationResult, video: VideoSource | Video, out_dir: str | Path, progress: bool = False
) -> Path:
    """Write masks, JSON and overlay for ``result`` (frames are decoded once, streamed).

    An existing ``out_dir`` is replaced; whether that is allowed is decided before the work
    (:func:`sparrow.output.check_output`)."""
    size = (result.height, result.width)
    source = Video.open(video, cache_size=0)

    def frames_with_overlay(tmp: Path):
        for t, frame in tqdm(
            source.iter(), total=result.num_frames, disable=not progress, desc="writing", unit="frame"
        ):
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
