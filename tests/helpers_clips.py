"""Synthetic clips for model tests: a static red square (the target) and a moving blue disc (a distractor)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def two_object_clip(t: int = 6, h: int = 96, w: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 ``[T, H, W, 3]``, the target's masks bool ``[T, H, W]`` and boxes ``[T, 4]`` pixel xyxy."""
    frames = np.full((t, h, w, 3), 40, dtype=np.uint8)
    masks = np.zeros((t, h, w), dtype=bool)
    yy, xx = np.mgrid[:h, :w]
    for i in range(t):
        cx = 20 + (w - 40) * i / max(t - 1, 1)
        disc = (yy - 70) ** 2 + (xx - cx) ** 2 <= 12**2
        frames[i][disc] = (40, 60, 230)
        frames[i, 16:44, 40:68] = (230, 40, 40)
        masks[i, 16:44, 40:68] = True
    boxes = np.tile(np.array([40, 16, 68, 44], dtype=np.float32), (t, 1))
    return frames, masks, boxes


def training_sample(
    frames: np.ndarray, masks: np.ndarray, boxes: np.ndarray, sam_indices: list[int]
) -> SimpleNamespace:
    """A sample with the fields ``sparrow.model.batching.make_batch`` reads."""
    return SimpleNamespace(
        vlm_frames=frames,
        question="Can you segment the red square in this video?",
        answer="Sure, it is [BOX] [SEG].",
        sam_frames=frames[sam_indices],
        masks=masks[sam_indices][None],
        boxes=boxes[sam_indices][None],
    )


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)
