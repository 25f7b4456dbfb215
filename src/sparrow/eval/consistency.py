"""SPARROW's temporal-consistency metrics, reported next to J&F (per expression, then sliced by tag).

- **first-frame IoU**: J on the first frame where the target is visible (frame 0 if it never is): how well the
  target is found before any propagation.
- **identity-switch rate**: fraction of all frames where the prediction overlaps another annotated object of the
  video more than the target (|P ∩ O| > |P ∩ T| for some other object O), i.e. it follows the wrong identity.
- **drift**: mean J over the last quarter of the frames minus the mean over the first quarter (q = max(1, T // 4)
  frames each); negative = the mask degrades over time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

CONSISTENCY_KEYS = ("first_iou", "id_switch", "drift")


def first_frame_iou(j: np.ndarray, target: np.ndarray) -> float:
    """J (per frame ``[T]``) at the first frame where ``target`` (``[T, H, W]`` bool) is non-empty, else at frame 0."""
    present = np.flatnonzero(target.reshape(len(target), -1).any(axis=1))
    return float(j[int(present[0]) if len(present) else 0])


def identity_switch_rate(pred: np.ndarray, target: np.ndarray, others: Sequence[np.ndarray]) -> float:
    """Fraction of frames where ``pred`` overlaps some other object more than ``target``.

    pred, target: bool ``[T, H, W]``; others: the other annotated objects of the video, each bool ``[T, H, W]``.
    """
    n = len(pred)
    if n == 0:
        raise ValueError("identity_switch_rate needs at least one frame")
    if not others:
        return 0.0
    flat = pred.reshape(n, -1)
    on_target = np.count_nonzero(flat & target.reshape(n, -1), axis=1)
    on_other = np.max([np.count_nonzero(flat & o.reshape(n, -1), axis=1) for o in others], axis=0)
    return float(np.mean(on_other > on_target))


def drift(j: np.ndarray) -> float:
    """Mean J of the last quarter of frames minus that of the first quarter (``j``: ``[T]``)."""
    j = np.asarray(j, dtype=np.float64)
    q = max(1, len(j) // 4)
    return float(j[len(j) - q :].mean() - j[:q].mean())


def slice_by(rows: Iterable[dict], field: str, metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Group per-expression rows by each value of ``field`` (a list such as ``tags`` or a scalar such as ``kind``)
    and average ``metrics`` within each group (NaN-aware); each group also gets its count ``n``."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        values = row.get(field)
        if values is None:
            continue
        for v in values if isinstance(values, (list, tuple)) else [values]:
            groups.setdefault(str(v), []).append(row)
    out: dict[str, dict[str, float]] = {}
    for key in sorted(groups):
        members = groups[key]
        stats: dict[str, float] = {"n": len(members)}
        for m in metrics:
            vals = np.array([r[m] for r in members if r.get(m) is not None], dtype=np.float64)
            stats[m] = float(np.nanmean(vals)) if len(vals) and not np.all(np.isnan(vals)) else float("nan")
        out[key] = stats
    return out
