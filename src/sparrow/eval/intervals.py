"""Confidence intervals for figures averaged over videos: a percentile bootstrap that resamples whole videos.

Frames, and the expressions of one clip, are not independent: a model that misses an object misses it on most of
its frames. So a figure such as "share of target-visible frames on which the chosen tracklet hits" or a J&F mean is
resampled by video: each resample draws as many videos as there are, with replacement, and recomputes the ratio
``sum(numerators) / sum(denominators)`` over the drawn videos (a plain mean when every denominator is 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ratio"]


def bootstrap_ratio(
    numerators: Sequence[float],
    denominators: Sequence[float] | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)``: ``sum(numerators) / sum(denominators)`` over videos (one entry each; None: a mean)
    and the central ``level`` percentile interval of ``resamples`` video-level bootstrap draws (seeded)."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, dtype=np.float64)
    if num.ndim != 1 or num.shape != den.shape or not len(num):
        raise ValueError(f"need one numerator and one denominator per video, got {num.shape} and {den.shape}")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"need 0 < level < 1 and resamples >= 1, got {level} and {resamples}")
    if den.sum() <= 0:
        raise ValueError("the denominators sum to zero")
    draws = np.random.default_rng(seed).integers(0, len(num), size=(resamples, len(num)))
    totals = den[draws].sum(1)
    ratios = num[draws].sum(1) / np.where(totals > 0, totals, np.nan)
    low, high = np.nanquantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(num.sum() / den.sum()), float(low), float(high)
