"""A structuring element (cv2.dilate's convention: anchor at the centre) described for dilation by bit shifts.

``sparrow.eval.bitstack`` dilates packed bit arrays by OR-ing shifted copies; this module turns a 0/1 kernel (such
as ``skimage.morphology.disk(r)``) into the offsets to shift by: per row, a contiguous symmetric run of columns, or
single offsets for any other row, and for a disk-like element (a union of centred rectangles) the nested
rectangles, which need only a few shifts each.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class DilationPlan:
    """A structuring element (anchor at its centre) as rows ``(dy, half-width)`` whose offsets are the contiguous
    symmetric run ``[-hw, hw]``, plus single offsets ``(dy, dx)`` of any other row. ``levels`` is set when the
    element is a union of centred rectangles (rows symmetric about dy = 0, half-width non-increasing in ``|dy|``,
    as a disk): ``(half-width, half-height)`` pairs, widths ascending and heights descending."""

    symmetric_rows: tuple[tuple[int, int], ...]
    other_offsets: tuple[tuple[int, int], ...]
    widths: tuple[int, ...]  # distinct half-widths of symmetric_rows, ascending
    reach: int  # max |dx|
    levels: tuple[tuple[int, int], ...]


@lru_cache(maxsize=16)
def _plan_cached(shape: tuple[int, int], data: bytes) -> DilationPlan:
    kernel = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    kh, kw = shape
    ay, ax = kh // 2, kw // 2  # cv2's default anchor (-1, -1)
    sym: list[tuple[int, int]] = []
    other: list[tuple[int, int]] = []
    reach = 0
    for ky in range(kh):
        cols = np.flatnonzero(kernel[ky]) - ax
        if len(cols) == 0:
            continue
        reach = max(reach, int(np.abs(cols).max()))
        half = int(cols[-1])
        if cols[0] == -half and len(cols) == 2 * half + 1:
            sym.append((ky - ay, half))
        else:
            other.extend((ky - ay, int(dx)) for dx in cols)
    widths = tuple(sorted({hw for _, hw in sym}))
    return DilationPlan(tuple(sym), tuple(other), widths, reach, _levels(sym, other))


def _levels(sym: list[tuple[int, int]], other: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``(half-width, half-height)`` rectangles whose union is the element, or () if it is no such union."""
    if other or not sym:
        return ()
    half = dict(sym)
    height = max(abs(dy) for dy in half)
    if any(dy not in half for dy in range(-height, height + 1)):
        return ()
    for dy in range(1, height + 1):  # symmetric rows, half-widths non-increasing outwards
        if half[dy] != half[-dy] or half[dy] > half[dy - 1]:
            return ()
    levels: list[tuple[int, int]] = []
    for dy in range(height, -1, -1):  # a new rectangle wherever the half-width grows towards the centre
        if not levels or half[dy] > levels[-1][0]:
            levels.append((half[dy], dy))
    return tuple(levels)


def dilation_plan(kernel: np.ndarray) -> DilationPlan:
    """Plan of a 2-D 0/1 structuring element (any shape; the anchor is the centre, as ``cv2.dilate`` defaults to)."""
    k = np.ascontiguousarray(np.asarray(kernel) != 0, dtype=np.uint8)
    if k.ndim != 2:
        raise ValueError(f"expected a 2-D structuring element, got {k.shape}")
    return _plan_cached(k.shape, k.tobytes())


__all__ = ["DilationPlan", "dilation_plan"]
