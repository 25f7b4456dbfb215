"""Colours for masks: the DAVIS/PASCAL VOC palette, palette PNGs of label images, and overlays on frames.

Shared by the result writer (``pipeline/writer.py``), the exports (``data/exports.py``) and the app.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image


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


def overlay(
    frame: np.ndarray, index_mask: np.ndarray, boxes: list[list[float] | None], alpha: float = 0.5
) -> np.ndarray:
    """Blend target colours over ``frame`` ``[H, W, 3]`` and draw each target's box."""
    out = frame.astype(np.float32)
    for k in range(1, int(index_mask.max()) + 1):
        sel = index_mask == k
        out[sel] = (1 - alpha) * out[sel] + alpha * PALETTE[k]
    out = out.astype(np.uint8)
    for k, box in enumerate(boxes, start=1):
        if box is not None:
            x0, y0, x1, y1 = (round(v) for v in box)
            cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), tuple(int(c) for c in PALETTE[k]), 1)
    return out
