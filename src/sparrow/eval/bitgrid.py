"""Binary images as Python integers: packing, the seg2bmap boundary rule and structuring-element dilation.

A window of ``h`` rows and ``w`` columns is stored row-major in one non-negative ``int``: pixel ``(y, x)`` is bit
``y * stride + x``, where ``stride`` (a multiple of 8, at least ``w + guard``) leaves ``guard`` zero columns after
every row. Shifting by ``±dx`` (``dx <= guard``) then moves pixels along their row into the zero guard instead of
wrapping into the next row, and shifting by ``±dy * stride`` moves whole rows (rows shifted below 0 fall off, rows
shifted past the end land outside the window). AND, OR, XOR, shifts and ``int.bit_count`` run over machine words
in C, 64 pixels at a time, which makes the boundary map and the disk dilation of the F measure a few dozen
word-parallel operations per frame (``sparrow.eval.metrics``). Every operation is exact integer logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Layout of one window: ``height`` x ``width`` pixels, ``stride`` bits per row (guard columns included)."""

    height: int
    width: int
    stride: int

    @classmethod
    def for_window(cls, height: int, width: int, guard: int) -> Grid:
        """Smallest byte-aligned layout with at least ``guard`` (>= 1) zero columns after every row."""
        return cls(height, width, -(-(width + max(guard, 1)) // 8) * 8)

    def pack(self, *planes: np.ndarray) -> list[int]:
        """Boolean planes, each ``[height, width]`` → one integer per plane in this layout (one ``np.packbits``)."""
        h, w = self.height, self.width
        buf = np.zeros((len(planes), h, self.stride), dtype=bool)
        for i, plane in enumerate(planes):
            if plane.shape != (h, w):
                raise ValueError(f"plane {plane.shape} does not fit the grid {(h, w)}")
            buf[i, :, :w] = plane
        raw = np.packbits(buf, bitorder="little").tobytes()
        size = h * self.stride // 8
        return [int.from_bytes(raw[i * size : (i + 1) * size], "little") for i in range(len(planes))]

    def unpack(self, bits: int) -> np.ndarray:
        """Integer in this layout → boolean ``[height, width]`` (bits beyond the window are ignored)."""
        size = self.height * self.stride // 8
        raw = np.frombuffer((bits & ((1 << (8 * size)) - 1)).to_bytes(size, "little"), dtype=np.uint8)
        return np.unpackbits(raw, bitorder="little").reshape(self.height, self.stride)[:, : self.width].astype(bool)

    def column(self, x: int, rows: int) -> int:
        """Mask of column ``x`` (``0 <= x < stride``) in rows ``0 .. rows-1``."""
        cell = bytearray(self.stride // 8)
        cell[x // 8] = 1 << (x % 8)
        return int.from_bytes(bytes(cell) * rows, "little")

    def boundary(self, seg: int, left: bool = True, bottom: bool = True, right: bool = True) -> int:
        """seg2bmap of a packed mask, the rule of ``sparrow.eval.metrics.seg2bmap`` applied to the window itself:
        ``(s ^ east) | (s ^ south) | (s ^ south-east)`` on rows < h-1 and columns < w-1, ``s ^ east`` on the last
        row, ``s ^ south`` on the last column, 0 in the bottom-right pixel.

        The general rule is computed everywhere with zeros beyond the window, then corrected where that differs:
        on the last row (only if it holds pixels: ``bottom``), on the last column (``right``), and in the last
        guard column, which reads column 0 of the next rows as its east/south-east neighbours (``left``: column 0
        holds pixels). Passing False for an edge whose row/column is empty skips a no-op correction.
        """
        h, w, s = self.height, self.width, self.stride
        if seg == 0 or h == 0 or w == 0:
            return 0
        east = seg >> 1
        south = seg >> s
        b = (seg ^ east) | (seg ^ south) | (seg ^ (south >> 1))
        if bottom and w > 1:  # there: (s ^ e) | s | s = s | e; the rule wants s ^ e
            b ^= seg & east & (((1 << (w - 1)) - 1) << ((h - 1) * s))
        if right:  # there: s | south; the rule wants s ^ south, and 0 in the bottom-right pixel (general: s)
            if h > 1:
                b ^= seg & south & (self.column(w - 1, h - 1))
            corner = (h - 1) * s + w - 1
            if (b >> corner) & 1:
                b ^= 1 << corner
        if left:
            guard = self.column(s - 1, h)
            b ^= b & guard
        return b

    def dilate(self, bits: int, plan: DilationPlan) -> int:
        """OR of ``bits`` shifted by every offset of the structuring element, as ``cv2.dilate`` with a zero
        border: result(y, x) = 1 iff some pixel ``(y + dy, x + dx)``, ``(dy, dx)`` in the element, is 1. Needs
        ``plan.reach <= stride - width`` (the guard); bits beyond the window may be set (mask them off)."""
        if plan.reach > self.stride - self.width:
            raise ValueError(f"guard {self.stride - self.width} is narrower than the element's reach {plan.reach}")
        s = self.stride
        if plan.levels:  # union of centred rectangles, nested: V(...V(V(D_w1) | D_w2)...) | D_wm
            acc, cur = bits, 0
            out, prev_height = bits, None
            for half, height in plan.levels:
                acc = _grow(acc, cur, half, 1)
                cur = half
                out = acc if prev_height is None else _grow(out, 0, prev_height - height, s) | acc
                prev_height = height
            return _grow(out, 0, prev_height or 0, s)
        rows: dict[int, int] = {0: bits}  # half-width -> horizontal dilation of bits by [-hw, hw]
        acc, cur = bits, 0
        for half in plan.widths:
            acc = _grow(acc, cur, half, 1)
            cur = half
            rows[half] = acc
        out = 0
        for dy, half in plan.symmetric_rows:
            h_bits = rows[half]
            out |= (h_bits >> (dy * s)) if dy >= 0 else (h_bits << (-dy * s))
        for dy, dx in plan.other_offsets:
            off = dy * s + dx
            out |= (bits >> off) if off >= 0 else (bits << -off)
        return out


def _grow(bits: int, cur: int, target: int, unit: int) -> int:
    """Dilation of ``bits`` by the offsets ``[-target, target] * unit``, given that it is already dilated by
    ``[-cur, cur] * unit``: each step ORs two shifted copies, and their union stays one contiguous run."""
    while cur < target:
        step = min(target - cur, 2 * cur + 1)
        if step <= cur:  # [-cur-step, cur-step] ∪ [step-cur, cur+step] already covers [-cur, cur]
            bits = (bits << (step * unit)) | (bits >> (step * unit))
        else:
            bits = bits | (bits << (step * unit)) | (bits >> (step * unit))
        cur += step
    return bits


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


__all__ = ["DilationPlan", "Grid", "dilation_plan"]
