"""Region similarity J, contour accuracy F and their per-object statistics, as the DAVIS 2017 toolkit defines them.

Definitions, all per frame on boolean masks, with optional void pixels ``V``:

- J = |S ∩ G \\ V| / |S ∪ G \\ V|; an empty union gives J = 1.
- F: both masks are multiplied by ¬V; one-pixel boundary maps (:func:`seg2bmap`, the BSDS ``seg2bmap`` rule:
  XOR with the east, south and south-east neighbours, last row / column special-cased); each boundary is dilated
  with ``cv2.dilate`` by ``skimage.morphology.disk(r)``, r = ceil(0.008 · ‖(H, W)‖₂); precision = predicted boundary
  pixels inside the dilated GT boundary / predicted boundary pixels, recall the other way round; no predicted and
  no GT boundary → F = 1, only one of them empty → F = 0; F = 2PR / (P + R) (0 if P + R = 0).
- statistics: mean = nanmean, recall = mean(values > 0.5), decay = mean(first quarter) − mean(last quarter) over
  four overlapping bins; the toolkit stores the bin edges as ``uint8`` (wrong above 256 frames), reproduced only
  with ``legacy_decay=True``.

Speed (same numbers, only integer counting): each frame is computed inside the bounding window of its two masks
(their boundaries cannot leave it, and a dilation of a zero-padded window equals the full-frame dilation there), so
the cost follows the object size, not the frame size. Each mask frame is read once (:func:`_scan`: box and
bit-packed rows); the windows of a whole sequence are stacked into one bit-packed array
(``sparrow.eval.bitstack``), where the boundary rule is bit logic on 64 pixels per word and the dilation by the disk
is an OR of shifted copies (the disk as nested rectangles, ``sparrow.eval.bitplan``), a few dozen numpy operations
per chunk of frames; precision, recall and J come from popcounts per window.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from skimage.morphology import disk

from sparrow.eval.bitplan import dilation_plan
from sparrow.eval.bitstack import pack_rows, stack_counts

BOUND_TH = 0.008


def bound_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th · ‖(H, W)‖₂) (8 at 480x854)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


@lru_cache(maxsize=16)
def _disk_kernel(radius: int) -> np.ndarray:
    return disk(radius).astype(np.uint8)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of boolean masks ``[..., H, W]`` (same shape, bool), vectorised over leading axes.

    b = (seg ^ east) | (seg ^ south) | (seg ^ south-east) where a missing neighbour counts as background; on the last
    row only the east neighbour is used, on the last column only the south one, and the bottom-right pixel is 0.
    """
    seg = np.asarray(seg, dtype=bool)
    h, w = seg.shape[-2:]
    b = np.empty_like(seg)
    if h == 0 or w == 0:
        return b
    x = seg[..., :-1, :-1]
    b[..., :-1, :-1] = (x ^ seg[..., :-1, 1:]) | (x ^ seg[..., 1:, :-1]) | (x ^ seg[..., 1:, 1:])
    b[..., h - 1, :-1] = seg[..., h - 1, :-1] ^ seg[..., h - 1, 1:]  # last row: east neighbour only
    b[..., :-1, w - 1] = seg[..., :-1, w - 1] ^ seg[..., 1:, w - 1]  # last column: south neighbour only
    b[..., h - 1, w - 1] = False
    return b


def _check_pair(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    pred = np.asarray(pred).astype(bool, copy=False)
    gt = np.asarray(gt).astype(bool, copy=False)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and annotation {gt.shape} shapes differ")
    if pred.ndim not in (2, 3):
        raise ValueError(f"expected masks [H, W] or [T, H, W], got {pred.shape}")
    if void is not None:
        void = np.asarray(void).astype(bool, copy=False)
        if void.shape != gt.shape:
            raise ValueError(f"void {void.shape} and annotation {gt.shape} shapes differ")
    return pred, gt, void


_PROBE_ROWS = 32  # rows per backward probe of _scan


def _scan(mask: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Occupied box ``(y0, y1, x0, x1)`` (first/last row and column) of a boolean ``[H, W]`` mask and its rows
    ``y0 .. y1`` packed by :func:`pack_rows` (``uint8 [y1 - y0 + 1, ceil(W / 8)]``), or None if the mask is empty.

    ``argmax`` of a boolean array stops at its first True, so the first row costs a scan of the rows above the
    object and the last row a scan of blocks of rows from the bottom up to the object; the band in between is
    read once, by the packing, and the columns come from the OR of its packed rows. Nothing is copied.
    """
    h, w = mask.shape
    if h == 0 or w == 0:
        return None
    flat = np.ascontiguousarray(mask).reshape(-1)
    first = int(flat.argmax())
    if not flat[first]:
        return None
    y0 = y1 = first // w
    hi = h
    while hi > y0 + 1:
        lo = max(hi - _PROBE_ROWS, y0 + 1)
        block = flat[lo * w : hi * w]
        if block[block.argmax()]:
            rows = mask[lo:hi].any(axis=1)
            y1 = hi - 1 - int(rows[::-1].argmax())
            break
        hi = lo
    band = pack_rows(mask[y0 : y1 + 1])
    cols = np.bitwise_or.reduce(band, axis=0)  # bit k of byte b: column 8b + k occupied somewhere
    occupied = np.flatnonzero(cols)
    b0, b1 = int(occupied[0]), int(occupied[-1])
    lo_byte, hi_byte = int(cols[b0]), int(cols[b1])
    x0 = 8 * b0 + (lo_byte & -lo_byte).bit_length() - 1
    x1 = 8 * b1 + hi_byte.bit_length() - 1
    return (y0, y1, x0, x1), band


def _window(spans: list[tuple[int, int, int, int]], h: int, w: int) -> tuple[int, int, int, int]:
    """Union window of occupied boxes, grown one pixel up/left (boundaries sit half a pixel towards the origin)
    and one down/right (the neighbours the boundary rule reads), clipped to the frame: ``(ya, yb, xa, xb)``.

    The boundary map of the window equals the full-frame one there (a window row/column that is not the frame's
    last lies outside both masks, where the general and the edge rule agree) and is zero outside; dilating the
    window with a background border equals the full-frame dilation inside it.
    """
    ya = max(min(s[0] for s in spans) - 1, 0)
    yb = min(max(s[1] for s in spans) + 2, h)
    xa = max(min(s[2] for s in spans) - 1, 0)
    xb = min(max(s[3] for s in spans) + 2, w)
    return ya, yb, xa, xb


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J per frame: masks ``[T, H, W]`` (or ``[H, W]``) → float64 ``[T]`` (or a 0-d array).

    Empty union (after removing void pixels) → 1.
    """
    pred, gt, void = _check_pair(pred, gt, void)
    single = pred.ndim == 2
    if single:
        pred, gt = pred[None], gt[None]
        void = None if void is None else void[None]
    if void is None:
        inter = np.count_nonzero((pred & gt).reshape(len(pred), -1), axis=1)
        union = np.count_nonzero((pred | gt).reshape(len(pred), -1), axis=1)
    else:
        keep = ~void
        inter = np.count_nonzero((pred & gt & keep).reshape(len(pred), -1), axis=1)
        union = np.count_nonzero(((pred | gt) & keep).reshape(len(pred), -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    j[union == 0] = 1.0
    return j[0] if single else j


class BoundaryCache:
    """Per-frame occupied boxes and packed rows of one mask sequence ``[T, H, W]`` (see :func:`_scan`), computed
    on first use and reused across pairs (the unsupervised protocol scores every proposal against every GT
    object)."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = np.ascontiguousarray(masks, dtype=bool)
        if self.masks.ndim != 3:
            raise ValueError(f"expected masks [T, H, W], got {self.masks.shape}")
        self._scans: dict[int, tuple[tuple[int, int, int, int], np.ndarray] | None] = {}

    def scan(self, t: int) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """Box and packed rows of frame ``t``, or None if it is empty."""
        if t not in self._scans:
            self._scans[t] = _scan(self.masks[t])
        return self._scans[t]

    def span(self, t: int) -> tuple[int, int, int, int] | None:
        """Occupied box ``(y0, y1, x0, x1)`` of frame ``t``, or None if it is empty."""
        found = self.scan(t)
        return None if found is None else found[0]


def boundary_f(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> np.ndarray:
    """Contour accuracy F per frame: masks ``[T, H, W]`` (or ``[H, W]``) → float64 ``[T]`` (or a 0-d array)."""
    return region_and_boundary(pred, gt, void, bound_th)[1]


def region_and_boundary(
    pred: np.ndarray | BoundaryCache,
    gt: np.ndarray | BoundaryCache,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F per frame in one pass: masks ``[T, H, W]`` (or ``[H, W]``) → two float64 ``[T]`` (or 0-d) arrays.

    ``pred`` / ``gt`` may be :class:`BoundaryCache` objects to reuse their boxes across pairs. Each frame is
    computed inside the window around both masks (exactly equal to the full-frame definitions, see module doc).
    """
    single = (pred.masks if isinstance(pred, BoundaryCache) else np.asarray(pred)).ndim == 2
    if single:
        pred, gt = np.asarray(pred)[None], np.asarray(gt)[None]
        void = None if void is None else np.asarray(void)[None]
    pc = pred if isinstance(pred, BoundaryCache) else BoundaryCache(np.asarray(pred))
    gc = gt if isinstance(gt, BoundaryCache) else BoundaryCache(np.asarray(gt))
    if pc.masks.shape != gc.masks.shape:
        raise ValueError(f"prediction {pc.masks.shape} and annotation {gc.masks.shape} shapes differ")
    if void is not None:
        void = np.asarray(void).astype(bool, copy=False)
        if void.shape != gc.masks.shape:
            raise ValueError(f"void {void.shape} and annotation {gc.masks.shape} shapes differ")
    n, h, w = pc.masks.shape
    plan = dilation_plan(_disk_kernel(bound_radius(h, w, bound_th)))
    j_out = np.ones(n, dtype=np.float64)  # both masks empty: empty union and no boundary on either side → 1
    f_out = np.ones(n, dtype=np.float64)
    frames: list[int] = []
    boxes: list[tuple[int, int, int, int]] = []  # window rows [ya, yb), bytes [ba, bb) of the packed rows
    pieces: list[list[list[tuple[int, np.ndarray]]]] = [[], [], []]  # prediction, annotation, void
    for t in range(n):
        found = [pc.scan(t), gc.scan(t)]
        if found[0] is None and found[1] is None:
            continue
        ya, yb, xa, xb = _window([f[0] for f in found if f is not None], h, w)
        ba, bb = xa // 8, -(-xb // 8)
        frames.append(t)
        boxes.append((ya, yb, ba, bb))
        for side, f in enumerate(found):
            pieces[side].append([] if f is None else [(f[0][0] - ya, f[1][:, ba:bb])])
        if void is not None:
            pieces[2].append([(0, pack_rows(void[t, ya:yb, 8 * ba : min(8 * bb, w)]))])
    for chunk in _chunks(boxes, plan.reach):
        sel = slice(chunk[0], chunk[-1] + 1)
        shapes = [(yb - ya, 8 * (bb - ba)) for ya, yb, ba, bb in boxes[sel]]
        # where the window meets the frame's first row, last row, last column (the boundary rule's edge cases)
        edges = [(ya == 0, yb == h, w - 1 - 8 * ba if 8 * bb >= w else -1) for ya, yb, ba, bb in boxes[sel]]
        c = stack_counts(
            shapes, pieces[0][sel], pieces[1][sel], pieces[2][sel] if void is not None else None, edges, plan
        )
        counts = zip(*(c[key].tolist() for key in ("inter", "union", "n_pred", "n_gt", "pred_match", "gt_match")))
        for t, (inter, union, n_pred, n_gt, pred_match, gt_match) in zip(frames[sel], counts):
            j_out[t] = 1.0 if union == 0 else inter / union
            f_out[t] = _f_measure(n_pred, n_gt, pred_match, gt_match)
    if single:
        return j_out[0], f_out[0]
    return j_out, f_out


_CHUNK_BITS = 1 << 22  # stacked pixels per chunk (prediction and annotation windows), ~0.5 MiB per packed array


def _chunks(windows: list[tuple[int, int, int, int]], guard: int) -> list[list[int]]:
    """Consecutive groups of windows whose stacked area (rows x the widest row) stays near ``_CHUNK_BITS``."""
    out: list[list[int]] = []
    cur: list[int] = []
    rows = width = 0
    for i, (ya, yb, ba, bb) in enumerate(windows):
        r, wd = rows + yb - ya + guard + 1, max(width, 8 * (bb - ba) + guard)
        if cur and 2 * r * wd > _CHUNK_BITS:
            out.append(cur)
            cur, r, wd = [], yb - ya + guard + 1, 8 * (bb - ba) + guard
        cur.append(i)
        rows, width = r, wd
    if cur:
        out.append(cur)
    return out


def _f_measure(n_pred: int, n_gt: int, pred_match: int, gt_match: int) -> float:
    """F from boundary pixel counts: P = pred_match / n_pred, R = gt_match / n_gt, with the empty-boundary cases."""
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = pred_match / float(n_pred)
        recall = gt_match / float(n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def decay_bins(n: int, legacy_decay: bool = False) -> list[tuple[int, int]]:
    """The four overlapping ``[start, stop)`` frame ranges of the decay statistic for ``n`` values.

    Edges = round(linspace(1, n, 5) + 1e-10) − 1; bin i = values[edge_i : edge_{i+1} + 1]. ``legacy_decay`` wraps
    the edges modulo 256 as the toolkit's ``uint8`` cast does, with the ``+ 1`` in wide integers as numpy 1.x (the
    toolkit's era) computes it. Under numpy >= 2 the toolkit also wraps that ``+ 1`` (an edge of 255 becomes a stop
    of 0, e.g. an empty last bin at n = 256); that accident is not reproduced.
    """
    edges = np.round(np.linspace(1, n, 5) + 1e-10) - 1
    edges = edges.astype(np.int64)
    if legacy_decay:
        edges = edges % 256
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def statistics(values: np.ndarray, legacy_decay: bool = False) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values ``[T]`` as ``db_statistics`` computes them (NaN-aware means)."""
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        bins = [values[a:b] for a, b in decay_bins(len(values), legacy_decay)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def decay_differs(n: int) -> bool:
    """Whether the legacy (uint8) decay bins differ from the correct ones for ``n`` frames."""
    return decay_bins(n, True) != decay_bins(n, False)


def jf_mean(j: float, f: float) -> float:
    """J&F = (J + F) / 2."""
    return (j + f) / 2.0


__all__ = [
    "BOUND_TH",
    "BoundaryCache",
    "bound_radius",
    "boundary_f",
    "decay_bins",
    "decay_differs",
    "jaccard",
    "jf_mean",
    "region_and_boundary",
    "seg2bmap",
    "statistics",
]
