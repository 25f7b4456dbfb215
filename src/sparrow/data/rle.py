"""COCO run-length encoding of binary masks, through pycocotools.

An RLE here is the JSON form used by MeViS/ReVOS ``mask_dict.json``: ``{"size": [H, W], "counts": str}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from sparrow.errors import SparrowError

RLE = dict[str, Any]


def encode_mask(mask: np.ndarray) -> RLE:
    """Encode a boolean mask ``[H, W]`` as a JSON-ready COCO RLE."""
    if mask.ndim != 2:
        raise ValueError(f"encode_mask expects [H, W], got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: RLE, expected_size: tuple[int, int] | None = None, source: str | Path | None = None) -> np.ndarray:
    """Decode a COCO RLE to a boolean mask ``[H, W]``.

    Raises :class:`SparrowError` naming ``source`` when the RLE is malformed or its size differs from
    ``expected_size`` (``(H, W)``).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise SparrowError(f"malformed RLE (need 'size' and 'counts'): {str(rle)[:80]}", source)
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v >= 0 for v in size)):
        raise SparrowError(f"malformed RLE size {size!r}", source)
    if expected_size is not None and tuple(size) != tuple(expected_size):
        raise SparrowError(f"RLE of size {list(size)} where the frames are {list(expected_size)}", source)
    counts = rle["counts"]
    if isinstance(counts, str):
        runs = _string_counts(counts)
    elif isinstance(counts, list) and all(isinstance(c, int) for c in counts):
        runs = counts
    else:
        raise SparrowError(f"malformed RLE counts of type {type(counts).__name__}", source)
    if runs is None or any(c < 0 for c in runs) or sum(runs) != size[0] * size[1]:
        raise SparrowError(f"RLE counts do not cover its size {list(size)}", source)
    coded = {"size": list(size), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if isinstance(counts, list):  # uncompressed RLE
        coded = mask_utils.frPyObjects(coded, size[0], size[1])
    return mask_utils.decode(coded).astype(bool)


def _string_counts(counts: str) -> list[int] | None:
    """Run lengths of a compressed COCO RLE string (None if truncated), to validate it before pycocotools,
    which decodes a malformed string into uninitialised memory instead of failing."""
    runs: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                return None
            c = ord(counts[pos]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            pos += 1
            shift += 5
            if not more and c & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """The tight box ``[x0, y0, x1, y1]`` (pixel edges, x1/y1 exclusive) of a boolean mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
