"""Many small binary windows stacked into one bit-packed array: the per-frame counts behind J and F in bulk.

Layout: windows ``[h_t, w_t]`` are stacked top to bottom into one array of rows of ``words`` little-endian
``uint64`` (pixel ``(y, x)`` of window t is bit ``x`` of row ``start_t + y``, counting bits from word 0), each window
followed by ``gap`` zero rows, every row ending in at least ``guard`` zero columns. A shift of the flat bit string
by ``±dx`` (``dx <= guard``) moves pixels along their row into the zero columns and a shift by ``±dy`` rows
(``dy <= gap``) into the zero rows, never into another window, so one numpy operation treats all windows at once,
64 pixels per word. The boundary rule (seg2bmap) and the dilation by a disk are exact bit logic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sparrow.eval.bitplan import DilationPlan

_U64 = np.dtype("<u8")
_TOP_BIT = np.uint64(1 << 63)


@dataclass(frozen=True)
class Stack:
    """Row layout of stacked windows: window t spans rows ``starts[t] .. starts[t] + heights[t] - 1``."""

    heights: tuple[int, ...]
    widths: tuple[int, ...]
    starts: tuple[int, ...]
    rows: int
    words: int  # uint64 words per row

    @classmethod
    def build(cls, shapes: Sequence[tuple[int, int]], guard: int, gap: int) -> Stack:
        """Layout for windows of ``shapes`` with >= ``guard`` (>= 1) zero columns per row and ``gap`` (>= 1)
        zero rows after every window."""
        guard, gap = max(guard, 1), max(gap, 1)
        words = -(-(max(w for _, w in shapes) + guard) // 64)
        starts, row = [], 0
        for h, _ in shapes:
            starts.append(row)
            row += h + gap
        return cls(tuple(h for h, _ in shapes), tuple(w for _, w in shapes), tuple(starts), row, words)

    def pack(self, pieces: Sequence[Sequence[tuple[int, np.ndarray]]]) -> np.ndarray:
        """Packed rows of every window → ``uint64 [rows, words]``. ``pieces[t]``: ``(row, rows)`` pairs, ``rows`` a
        ``uint8 [n, nbytes]`` array of rows packed as by :func:`pack_rows` that starts at row ``row`` of window t
        (``nbytes <= width / 8``); rows of the window that no piece covers are zero."""
        buf = np.zeros((self.rows, self.words * 8), dtype=np.uint8)
        for slot, start in zip(pieces, self.starts):
            for row, rows in slot:
                buf[start + row : start + row + len(rows), : rows.shape[1]] = rows
        return buf.view(_U64)

    def counts(self, bits: np.ndarray, first: int = 0, last: int | None = None) -> np.ndarray:
        """Set bits per window, for windows ``first .. last-1`` (all by default), of a packed array that holds
        their rows from row ``starts[first]`` on → int64 ``[last - first]``."""
        starts = (np.asarray(self.starts[first:last], dtype=np.intp) - self.starts[first]) * self.words
        return np.add.reduceat(np.bitwise_count(bits.ravel()), starts, dtype=np.int64)

    def boundary(self, seg: np.ndarray, edges: Sequence[tuple[bool, bool, int]]) -> np.ndarray:
        """seg2bmap of every window → packed ``[rows, words]``, zero outside the windows, where window t is a part of
        a frame that holds all its pixels and the pixel above/left of each, and ``edges[t] = (top, bottom, right)``
        tells where it meets the frame's edge: ``top`` / ``bottom``: its first / last row is the frame's first /
        last row; ``right``: the column of the frame's last column in the window, or -1 (False / -1 is also fine
        wherever that row or column is empty: the correction below is a no-op there).

        The general rule ``(s ^ e) | (s ^ s_) | (s ^ se)`` is computed everywhere with zeros around the windows,
        then corrected where seg2bmap differs or the zeros are not what the frame has: on the frame's last row it
        gives ``s | e`` instead of ``s ^ e``; on its last column ``s | south`` instead of ``s ^ south`` and ``s``
        instead of 0 in the bottom-right pixel; the gap row above a window that starts at the frame's first row
        sees that row to its south; the last bit of every row sees column 0 of the next rows to its east."""
        wpr = self.words
        flat = seg.ravel()
        east = _shifted(flat, -1)
        out = flat ^ east
        out[:-wpr] |= flat[:-wpr] ^ flat[wpr:]  # south
        out[-wpr:] |= flat[-wpr:]
        out[:-wpr] |= flat[:-wpr] ^ east[wpr:]  # south-east
        out[-wpr:] |= flat[-wpr:]
        b = out.reshape(self.rows, wpr)
        x2, e2 = seg, east.reshape(self.rows, wpr)
        b[:, -1] &= ~_TOP_BIT
        for (top, bottom, right), start, h in zip(edges, self.starts, self.heights):
            last = start + h - 1
            if top and start > 0:
                b[start - 1] = 0
            if bottom:
                b[last] ^= x2[last] & e2[last]  # zero wherever s is, so no column mask is needed
            if right >= 0:
                word, bit = divmod(right, 64)
                one = np.uint64(1 << bit)
                if h > 1:
                    b[start:last, word] ^= x2[start:last, word] & x2[start + 1 : last + 1, word] & one
                b[last, word] &= ~one
        return b

    def dilate(self, bits: np.ndarray, plan: DilationPlan) -> np.ndarray:
        """Dilation of every window by the structuring element of ``plan`` (as ``cv2.dilate`` with a zero
        border); needs ``plan.reach <= guard`` and the element's height <= ``gap``. Bits may land in the zero
        rows and columns around the windows (mask them off, e.g. by AND with a boundary map)."""
        flat = bits.ravel()
        unit = self.words * 64
        if plan.levels:  # union of centred rectangles, nested: V(...V(V(D_w1) | D_w2)...) | D_wm
            acc, cur = flat, 0
            out, prev_height = flat, None
            for half, height in plan.levels:
                acc = _grow(acc, cur, half, 1)
                cur = half
                out = acc if prev_height is None else _grow(out, 0, prev_height - height, unit) | acc
                prev_height = height
            return _grow(out, 0, prev_height or 0, unit).reshape(bits.shape)
        out = np.zeros_like(flat)
        for dy, half in plan.symmetric_rows:
            _or_shifted(out, _grow(flat, 0, half, 1), -dy * unit)
        for dy, dx in plan.other_offsets:
            _or_shifted(out, flat, -(dy * unit + dx))
        return out.reshape(bits.shape)


def pack_rows(window: np.ndarray) -> np.ndarray:
    """Boolean ``[h, w]`` → ``uint8 [h, ceil(w / 8)]``, pixel ``(y, x)`` at bit ``x % 8`` of byte ``x // 8``."""
    return np.packbits(window, axis=1, bitorder="little")


def _or_shifted(dst: np.ndarray, src: np.ndarray, shift: int) -> None:
    """``dst |= src`` moved by ``shift`` bits along the flat bit string (positive: towards higher bit indices,
    as ``int << shift``); bits moved past either end are dropped. 1-D ``uint64`` arrays of equal length."""
    n = len(src)
    q, m = divmod(abs(shift), 64)
    if q >= n:
        return
    if shift >= 0:
        if m == 0:
            dst[q:] |= src[: n - q]
        else:
            dst[q:] |= src[: n - q] << np.uint64(m)
            dst[q + 1 :] |= src[: n - q - 1] >> np.uint64(64 - m)
    elif m == 0:
        dst[: n - q] |= src[q:]
    else:
        dst[: n - q] |= src[q:] >> np.uint64(m)
        dst[: n - q - 1] |= src[q + 1 :] << np.uint64(64 - m)


def _shifted(src: np.ndarray, shift: int) -> np.ndarray:
    out = np.zeros_like(src)
    _or_shifted(out, src, shift)
    return out


def _grow(bits: np.ndarray, cur: int, target: int, unit: int) -> np.ndarray:
    """Dilation by the offsets ``[-target, target] * unit`` bits of a flat array already dilated by
    ``[-cur, cur] * unit``: each step ORs two shifted copies, and their union stays one contiguous run."""
    scratch = np.empty_like(bits) if unit % 64 else None
    while cur < target:
        step = min(target - cur, 2 * cur + 1)
        if scratch is not None and step * unit < 64:
            bits = _hstep(bits, step * unit, step > cur, scratch)
        else:
            grown = bits.copy()
            _or_shifted(grown, bits, step * unit)
            _or_shifted(grown, bits, -step * unit)
            bits = grown
        cur += step
    return bits


def _hstep(x: np.ndarray, s: int, keep: bool, tmp: np.ndarray) -> np.ndarray:
    """``x | (x << s) | (x >> s)`` (or without ``x`` if not ``keep``) on the flat bit string, ``0 < s < 64``:
    shifts within each word, then the bits that cross into the neighbouring words."""
    s64, back = np.uint64(s), np.uint64(64 - s)
    out = np.left_shift(x, s64)
    out |= np.right_shift(x, s64, out=tmp)
    if keep:
        out |= x
    out[1:] |= np.right_shift(x[:-1], back, out=tmp[:-1])
    out[:-1] |= np.left_shift(x[1:], back, out=tmp[:-1])
    return out


def stack_counts(
    shapes: Sequence[tuple[int, int]],
    pred: Sequence[Sequence[tuple[int, np.ndarray]]],
    gt: Sequence[Sequence[tuple[int, np.ndarray]]],
    void: Sequence[Sequence[tuple[int, np.ndarray]]] | None,
    edges: Sequence[tuple[bool, bool, int]],
    plan: DilationPlan,
) -> dict[str, np.ndarray]:
    """Per-window counts of J and F for window pairs of ``shapes[t] = (h, w)``, their masks given as packed row
    pieces (see :meth:`Stack.pack`; ``void[t]`` is removed from both masks; ``edges[t]`` as in
    :meth:`Stack.boundary`): int64 ``[n]`` arrays ``inter``, ``union`` (mask pixels), ``n_pred``, ``n_gt`` (boundary
    pixels), ``pred_match`` (predicted boundary pixels within the dilated GT boundary), ``gt_match`` (the other
    way round)."""
    n = len(shapes)
    height = max(abs(dy) for dy, _ in plan.symmetric_rows + plan.other_offsets)
    layout = Stack.build(list(shapes) * 2, guard=plan.reach, gap=height)
    both = layout.pack(list(pred) + list(gt))
    if void is not None:
        both &= ~layout.pack(list(void) * 2)
    half = layout.starts[n] if n else 0
    pm, gm = both[:half], both[half:]
    inter = layout.counts(pm & gm, 0, n)
    union = layout.counts(pm | gm, 0, n)
    bounds = layout.boundary(both, list(edges) * 2)
    sizes = layout.counts(bounds)
    dil = layout.dilate(bounds, plan)
    match = np.empty_like(bounds)
    match[:half] = bounds[:half] & dil[half:]
    match[half:] = bounds[half:] & dil[:half]
    matched = layout.counts(match)
    return {
        "inter": inter,
        "union": union,
        "n_pred": sizes[:n],
        "n_gt": sizes[n:],
        "pred_match": matched[:n],
        "gt_match": matched[n:],
    }


__all__ = ["Stack", "pack_rows", "stack_counts"]
