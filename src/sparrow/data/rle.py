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


def validate_rle(rle: RLE, expected_size: tuple[int, int] | None = None, source: str | Path | None = None) -> RLE:
    """Check a COCO RLE without decoding it; return it in pycocotools' form (bytes counts, or frPyObjects' output
    for an uncompressed RLE). Raises :class:`SparrowError` naming ``source`` when the RLE is malformed or its size
    differs from ``expected_size`` (``(H, W)``)."""
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
    if runs is None or min(runs, default=0) < 0 or int(np.sum(runs)) != size[0] * size[1]:
        raise SparrowError(f"RLE counts do not cover its size {list(size)}", source)
    coded = {"size": list(size), "counts": counts}  # pycocotools takes the string as it is (validated above)
    if isinstance(counts, list):  # uncompressed RLE
        coded = mask_utils.frPyObjects(coded, size[0], size[1])
    return coded


def decode_rle(rle: RLE, expected_size: tuple[int, int] | None = None, source: str | Path | None = None) -> np.ndarray:
    """Decode a COCO RLE to a boolean mask ``[H, W]`` (validated first, see :func:`validate_rle`)."""
    return mask_utils.decode(validate_rle(rle, expected_size, source)).astype(bool)


def rle_area(rle: RLE, expected_size: tuple[int, int] | None = None, source: str | Path | None = None) -> int:
    """Foreground pixel count of a COCO RLE, validated (see :func:`validate_rle`) but not decoded."""
    return int(mask_utils.area(validate_rle(rle, expected_size, source)))


def rle_box(rle: RLE, source: str | Path | None = None) -> list[float] | None:
    """The tight box ``[x0, y0, x1, y1]`` (x1/y1 exclusive, as :func:`mask_to_box`) of a COCO RLE without decoding
    it; None for an empty mask."""
    coded = validate_rle(rle, source=source)
    if int(mask_utils.area(coded)) == 0:
        return None
    x, y, w, h = (float(v) for v in mask_utils.toBbox(coded))
    return [x, y, x + w, y + h]


def _string_counts(counts: str) -> np.ndarray | None:
    """Run lengths of a compressed COCO RLE string (None if malformed), to validate it before pycocotools, which
    decodes a malformed string into uninitialised memory instead of failing.

    The format (pycocotools ``rleFrString``): each value is 5-bit groups, low first, in characters offset by 48;
    bit 0x20 marks "more groups follow"; bit 0x10 of the last group is the sign; from the fourth value on, the
    value is a difference to the value two places earlier. Vectorised over the whole string.
    """
    if not counts.isascii():
        return None  # the alphabet is 48..111
    c = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if len(c) == 0 or c.min() < 0 or c.max() > 63:
        return None
    ends = np.flatnonzero((c & 0x20) == 0)  # the last character of each value
    if len(ends) == 0 or ends[-1] != len(c) - 1:
        return None  # truncated: the string ends inside a value
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:
        return None  # more than 60 bits: not a run length
    group = np.repeat(np.arange(len(ends)), lengths)
    position = np.arange(len(c)) - starts[group]
    values = np.zeros(len(ends), dtype=np.int64)
    np.add.at(values, group, (c & 0x1F) << (5 * position))
    negative = (c[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * lengths)), values)
    runs = values.copy()
    if len(runs) > 3:  # runs[i] = values[i] + runs[i - 2] for i >= 3
        runs[3::2] = np.cumsum(values[3::2]) + runs[1]
    if len(runs) > 4:
        runs[4::2] = np.cumsum(values[4::2]) + runs[2]
    return runs


def mask_to_box(mask: np.ndarray) -> list[float] | None:
    """The tight box ``[x0, y0, x1, y1]`` (pixel edges, x1/y1 exclusive) of a boolean mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
