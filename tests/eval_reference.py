"""A direct, per-frame statement of the DAVIS 2017 metric definitions, written as plain loops.

It is the yardstick for the fast implementation in ``sparrow.eval.metrics`` (parity test and
``benchmarks/bench_eval_speed.py``): every frame is handled on the full image, one step of the definition at a time.
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.morphology import disk


def ref_boundary_map(seg: np.ndarray) -> np.ndarray:
    """BSDS seg2bmap of one boolean mask [H, W]: XOR with east, south, south-east neighbours; edges special-cased."""
    seg = seg.astype(bool)
    h, w = seg.shape
    east = np.zeros((h, w), dtype=bool)
    south = np.zeros((h, w), dtype=bool)
    south_east = np.zeros((h, w), dtype=bool)
    east[:, : w - 1] = seg[:, 1:]
    south[: h - 1, :] = seg[1:, :]
    south_east[: h - 1, : w - 1] = seg[1:, 1:]
    b = np.logical_or(np.logical_or(seg ^ east, seg ^ south), seg ^ south_east)
    b[h - 1, :] = seg[h - 1, :] ^ east[h - 1, :]
    b[:, w - 1] = seg[:, w - 1] ^ south[:, w - 1]
    b[h - 1, w - 1] = False
    return b


def ref_j(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of one frame: |S ∩ G \\ V| / |S ∪ G \\ V|, 1 when the union is empty."""
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    inter = int(np.sum(pred & gt & keep))
    union = int(np.sum((pred | gt) & keep))
    return 1.0 if union == 0 else inter / union


def ref_f(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    """F of one frame, on the full image."""
    h, w = gt.shape
    keep = np.ones((h, w), dtype=bool) if void is None else ~void.astype(bool)
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.sqrt(h * h + w * w))
    pred_b = ref_boundary_map(pred.astype(bool) & keep)
    gt_b = ref_boundary_map(gt.astype(bool) & keep)
    kernel = disk(radius).astype(np.uint8)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel) > 0
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel) > 0
    n_pred = int(pred_b.sum())
    n_gt = int(gt_b.sum())
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int(np.sum(pred_b & gt_dil)) / float(n_pred)
        recall = int(np.sum(gt_b & pred_dil)) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def ref_sequence(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of masks [T, H, W], one frame at a time."""
    js, fs = [], []
    for t in range(len(gt)):
        v = None if void is None else void[t]
        js.append(ref_j(pred[t], gt[t], v))
        fs.append(ref_f(pred[t], gt[t], v))
    return np.array(js, dtype=np.float64), np.array(fs, dtype=np.float64)


def ref_statistics(values: np.ndarray, legacy_decay: bool = False) -> tuple[float, float, float]:
    """Mean, recall (fraction > 0.5) and decay (first quarter minus last quarter, overlapping bins)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    mean = float(finite.mean()) if len(finite) else float("nan")
    recall = float(np.mean(values > 0.5))
    n = len(values)
    edges = []
    for i in range(5):
        x = 1 + (n - 1) * i / 4.0  # linspace(1, n, 5)
        e = int(np.round(x + 1e-10)) - 1
        edges.append(e % 256 if legacy_decay else e)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    first = first[~np.isnan(first)]
    last = last[~np.isnan(last)]
    m0 = float(first.mean()) if len(first) else float("nan")
    m3 = float(last.mean()) if len(last) else float("nan")
    return mean, recall, m0 - m3
