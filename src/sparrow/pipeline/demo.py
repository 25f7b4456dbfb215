"""``sparrow demo``: generate a SynthRef clip, segment it with a pipeline, and score it against its ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparrow.atomic import atomic_dir
from sparrow.data.synthref.generate import SynthConfig, make_video
from sparrow.data.video_io import Video, write_video
from sparrow.output import write_marker
from sparrow.pipeline.segment import SegmentationPipeline
from sparrow.pipeline.writer import write_segmentation

DEMO_CLIP = SynthConfig(size=128, num_frames=24)


@dataclass
class DemoReport:
    """What the demo did: the query, its tags, the answer, the mean mask IoU against the ground truth, the files."""

    query: str
    tags: list[str]
    answer: str
    iou: float
    video: Path
    result_dir: Path


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean over frames of the IoU of bool masks ``[T, H, W]`` (a frame empty in both counts 1)."""
    union = np.logical_or(pred, truth).sum((1, 2))
    inter = np.logical_and(pred, truth).sum((1, 2))
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def run_demo(
    pipeline: SegmentationPipeline, out: str | Path, seed: int = 0, mode: str | None = None, progress: bool = True
) -> DemoReport:
    """Write ``out/input.mp4`` (SynthRef test clip ``seed``), ``out/query.txt`` and ``out/result/``.

    The folder is built under a temporary name and replaces ``out`` when complete (whether ``out`` may be replaced
    is decided before: :func:`sparrow.output.check_output`); it holds the marker of ``sparrow demo``.
    """
    record, frames = make_video("test", seed, 0, DEMO_CLIP)
    expression = record.expressions[0]
    out = Path(out)
    with atomic_dir(out) as tmp:
        path = write_video(tmp / "input.mp4", frames, fps=8)
        (tmp / "query.txt").write_text(expression.text + "\n")
        with Video.open(path) as video:
            result = pipeline.segment(video, expression.text, mode=mode, progress=progress)
            write_segmentation(result, video, tmp / "result", progress=progress)
        write_marker(tmp, "demo")
    iou = mean_iou(result.masks, record.target_masks(expression))
    return DemoReport(expression.text, list(expression.tags), result.answer, iou, out / "input.mp4", out / "result")
