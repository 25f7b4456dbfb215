"""Region similarity J, contour accuracy F and their per-object statistics, as the DAVIS 2017 toolkit defines them.

Definitions (docs/peers.md §2.1), all per frame on boolean masks, with optional void pixels ``V``:

- J = |S ∩ G \\ V| / |S ∪ G \\ V|; an empty union gives J = 1.
- F: both masks are multiplied by ¬V; one-pixel boundary maps (:func:`seg2bmap`, the BSDS ``seg2bmap`` rule:
  XOR with the east, south and south-east neighbours, last row / column special-cased); each boundary is dilated
  with ``cv2.dilate`` by ``skimage.morphology.disk(r)``, r = ceil(0.008 · ‖(H, W)‖₂); precision = predicted boundary
  pixels inside the dilated GT boundary / predicted boundary pixels, recall the other way round; no predicted and
  no GT boundary → F = 1, only one of them empty → F = 0; F = 2PR / (P + R) (0 if P + R = 0).
- statistics: mean = nanmean, recall = mean(values > 0.5), decay = mean(first quarter) − mean(last quarter) over
  four overlapping bins; the toolkit stores the bin edges as ``uint8`` (wrong above 256 frames), reproduced only
  with ``legacy_decay=True``.

Speed: the per-frame work is done inside the bounding window of the two masks (their boundaries cannot leave it,
and a dilation of a zero-padded window equals the full-frame dilation there), so the numbers are identical to a
full-frame computation while the cost follows the object size, not the frame size.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import cv2
import numpy as np
from skimage.morphology import disk

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


def _span(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """First/last occupied row and column ``(y0, y1, x0, x1)`` of a boolean ``[H, W]`` mask, or None if empty.

    The first and last True bytes are found with C string search, and the columns scan only the object's row band.
    """
    _h, w = mask.shape
    raw = np.ascontiguousarray(mask).view(np.uint8).tobytes()
    first = raw.find(1)  # memchr: stops at the object
    if first < 0:
        return None
    last = raw.rfind(1)
    y0, y1 = first // w, last // w
    cols = mask[y0 : y1 + 1].any(axis=0)
    x0 = int(cols.argmax())
    x1 = w - 1 - int(cols[::-1].argmax())
    return y0, y1, x0, x1


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
    """Per-frame occupied boxes of one mask sequence ``[T, H, W]``, computed once and reused across pairs (the
    unsupervised protocol scores every proposal against every GT object)."""

    def __init__(self, masks: np.ndarray) -> None:
        self.masks = np.ascontiguousarray(masks, dtype=bool)
        if self.masks.ndim != 3:
            raise ValueError(f"expected masks [T, H, W], got {self.masks.shape}")
        self.spans = [_span(m) for m in self.masks]

    def span(self, t: int) -> tuple[int, int, int, int] | None:
        return self.spans[t]


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
    kernel = _disk_kernel(bound_radius(h, w, bound_th))
    j_out = np.empty(n, dtype=np.float64)
    f_out = np.empty(n, dtype=np.float64)
    for t in range(n):
        ps, gs = pc.span(t), gc.span(t)
        if ps is None and gs is None:
            j_out[t] = 1.0  # empty union
            f_out[t] = 1.0  # no boundary on either side
            continue
        ya, yb, xa, xb = _window([s for s in (ps, gs) if s is not None], h, w)
        pm = pc.masks[t, ya:yb, xa:xb]
        gm = gc.masks[t, ya:yb, xa:xb]
        if void is not None:
            keep = ~void[t, ya:yb, xa:xb]
            pm, gm = pm & keep, gm & keep
        inter = int(np.count_nonzero(pm & gm))
        union = int(np.count_nonzero(pm | gm))
        j_out[t] = 1.0 if union == 0 else inter / union
        f_out[t] = _f_window(pm, gm, kernel)
    if single:
        return j_out[0], f_out[0]
    return j_out, f_out


def _f_window(pm: np.ndarray, gm: np.ndarray, kernel: np.ndarray) -> float:
    """F of one frame from the two masks cropped to a window that contains both (see :func:`_window`)."""
    pb, gb = seg2bmap(np.stack((pm, gm)))
    n_fg = int(np.count_nonzero(pb))
    n_gt = int(np.count_nonzero(gb))
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        fg_match = np.count_nonzero(pb & cv2.dilate(gb.view(np.uint8), kernel).view(bool))
        gt_match = np.count_nonzero(gb & cv2.dilate(pb.view(np.uint8), kernel).view(bool))
        precision = fg_match / float(n_fg)
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
