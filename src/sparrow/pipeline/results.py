"""What a pipeline call returns: the answer and, per referred target, a mask and a box per frame.

Masks are kept as COCO RLE (``sparrow.data.rle``), so a result's memory does not grow with the frame size, and
the writers (``pipeline/writer.py``), the split runner (``pipeline/infer.py``) and users read the same object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sparrow.data.rle import RLE, decode_rle


@dataclass
class TargetResult:
    """One referred target: a mask per frame (RLE, None where empty), its box per frame, and how it was found."""

    rles: list[RLE | None]
    boxes: list[list[float] | None]
    key_frame: int
    key_box: list[float] | None  # selected (refined) proposal box on the key frame, pixels xyxy
    selection_score: float | None  # sigmoid selection score of that box (None without [BOX])

    def mask(self, t: int, size: tuple[int, int]) -> np.ndarray:
        """Bool ``[H, W]`` mask of frame ``t``."""
        rle = self.rles[t]
        return np.zeros(size, dtype=bool) if rle is None else decode_rle(rle, expected_size=size)


@dataclass
class SegmentationResult:
    """Answer and masks for one (video, query)."""

    query: str
    question: str
    answer: str
    targets: list[TargetResult]
    vlm_frame_indices: list[int]
    num_frames: int
    height: int
    width: int
    fps: float
    mode: str
    forced_prompt: bool = False  # the answer had no [SEG]: "[BOX] [SEG]" was appended and teacher-forced
    orphan_boxes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """Union over targets, bool ``[T, H, W]``."""
        out = np.zeros((self.num_frames, self.height, self.width), dtype=bool)
        for target in self.targets:
            for t in range(self.num_frames):
                if target.rles[t] is not None:
                    out[t] |= target.mask(t, (self.height, self.width))
        return out

    def to_json(self) -> dict[str, Any]:
        """The ``result.json`` content: answer, frames the VLM saw, per target key frame, box, score, RLE per frame."""
        return {
            "query": self.query,
            "question": self.question,
            "answer": self.answer,
            "mode": self.mode,
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
            "vlm_frame_indices": self.vlm_frame_indices,
            "forced_prompt": self.forced_prompt,
            "orphan_boxes": self.orphan_boxes,
            "targets": [
                {
                    "index": k + 1,
                    "key_frame": tr.key_frame,
                    "key_box": tr.key_box,
                    "selection_score": tr.selection_score,
                    "frames": [{"frame": t, "rle": r, "box": b} for t, (r, b) in enumerate(zip(tr.rles, tr.boxes))],
                }
                for k, tr in enumerate(self.targets)
            ],
            **self.extra,
        }
